"""Pass 5: the target's kernels. The backend builds phase B's chunk kernel (CPU threads, one GPU
thread per chunk, or a staged pass's host driver and row kernels); the finish kernel, shared by
all targets, reduces the partial sums, runs phase C and writes the outputs."""
from __future__ import annotations

from typing import TYPE_CHECKING

from symgrad.ir import IRError

import sympy as sp

from ..kernel_ir import Affine, Compute, Fill, Kernel, Let, Loop, Min, Mul, Ref, Stmt, View, needed
from .emission import sink_stmt, unbatched_phase

if TYPE_CHECKING:
    from ..lower import Lowering, Sink

__all__ = ["run", "chunk_prelude"]


def chunk_prelude(L: Lowering, per_chunk_sums: bool) -> list[Stmt]:
    """The opening of chunk c: its rows r0..r1, its slices of the data, and (``per_chunk_sums``)
    its private row of partials, zeroed, with the views phase B adds into."""
    from ..lower import flat_view
    pre: list[Stmt] = [Let("r0", Mul("c", "chunk")), Let("r1", Min(Affine.of("r0") + "chunk", Affine.of("n_samples"))),
                       Let("rows", Affine.of("r1") + Affine.of("r0") * -1), *L.chunk_slices()]
    if per_chunk_sums:
        pre += [View("acc", "partials", Affine.of("c"), None, None,
                     "this chunk's private share of every sum over the batch"), Fill("acc")]
    return pre + [flat_view(v, "acc", slot, shape) for v, (slot, shape) in (L.acc_views() if L.n_acc else {}).items()]


def run(L: Lowering) -> None:
    from ..lower import Lowered, Store, flat_view
    if L.chunk_body and not L.data_args:
        raise IRError("per-sample values but no data arguments")
    sinks, program, B = L.sinks, L.program, L.backend
    out_arrays = list(dict.fromkeys(s.array for s in sinks if s.kind != "return"))
    copied = B.copied_sinks(L)
    chunks, stages, block_sums = B.chunk_kernels(L, copied) if L.chunk_body else (None, (), False)
    reduction: list[Stmt] = []
    views: list[Stmt] = []
    if L.chunk_body and L.n_acc:
        reduction = B.reduction()
        viewed = set()
        for a in L.assigns:
            st = L.store.get(a.out.name)
            if st is not None and st.kind == "acc" and a.out.shape:
                if st.name not in viewed:
                    viewed.add(st.name)
                    views.append(flat_view(st.name, "total", st.acc_slot, a.out.shape))
            elif st is not None and st.kind == "acc":
                views.append(View(st.name, "total", Affine.of(st.acc_slot)))
                L.store[a.out.name] = Store("scalar", st.name)
    phase_c = unbatched_phase(L, "C")
    outs = [s for s in sinks if s.kind in ("flat", "return")]
    tail = phase_c + _flat_sinks(L, [s for s in outs if s.kind == "flat" and s not in copied]) \
        + [sink_stmt(L, s, program.output(s.key)) for s in outs if s.kind == "return"]
    # only the views and phase-A values the finish reads (a gradient sum goes to grad as a flat slice)
    phase_a, head = L.phase_a, L.head
    defs = head + views + (phase_a if L.chunk_body else [])
    keep = {id(st) for st in needed(defs, tail, [] if L.chunk_body else phase_a)}
    finish = [st for st in head if id(st) in keep] + reduction + [st for st in views if id(st) in keep] + (
        [st for st in phase_a if id(st) in keep] if L.chunk_body else phase_a) + tail
    params = L.inputs + [a for a in out_arrays if a not in [s.array for s, _ in L.sink_rows]]
    if L.chunk_body and L.n_acc:
        params.append(B.sums_param)
    if B.result_param and any(s.kind == "return" for s in sinks):
        params.append(B.result_param)
    fin = Kernel(L.kernel_name, tuple(dict.fromkeys(params)), tuple(finish), L.doc)
    L.result = Lowered(chunks, fin, L.n_acc, block_sums and chunks is not None, tuple(stages))


def _flat_sinks(L: Lowering, sinks: list[Sink]) -> list[Stmt]:
    """The flat outputs' statements; consecutive blocks that are consecutive slots of total (the
    storage pass places them so) are copied by one loop."""
    out: list[Stmt] = []
    run: list[tuple[Sink, int]] = []   # (sink, its first slot in total)

    def close() -> None:
        if len(run) == 1:
            out.append(sink_stmt(L, run[0][0], L.program.output(run[0][0].key)))
        elif run:
            (s0, slot0), (s1, _) = run[0], run[-1]
            n = s1.offset + s1.size - s0.offset
            a0 = sp.Symbol("a0", real=True)
            out.append(Loop("q", Affine(), Affine.of(n), (Compute(
                Ref(s0.array, (Affine.of(s0.offset) + "q",)), a0, ((a0, Ref("total", (Affine.of(slot0) + "q",))),)),),
                f"{s0.key} .. {s1.key}: their sums, in order"))
        run.clear()
    for s in sinks:
        v = L.program.output(s.key)
        st = L.store[v.name]
        if st.kind == "acc" and v.shape:
            if run and not (run[-1][0].array == s.array and run[-1][0].offset + run[-1][0].size == s.offset
                            and run[-1][1] + run[-1][0].size == st.acc_slot):
                close()
            run.append((s, st.acc_slot))
            continue
        close()
        out.append(sink_stmt(L, s, v))
    close()
    return out
