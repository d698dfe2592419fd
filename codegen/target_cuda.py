"""The CUDA backends: a fused pass (one GPU thread per chunk of rows) or a staged one.

A narrow network is fused: a chunk is one GPU thread's rows, every
contraction is a loop, per-row intermediates are the thread's local arrays
(the row index dropped), and per-sample outputs are written row by row inside
the row loop; the threads of a block add their sums into shared memory
atomically. A network with a wide layer (or more sums than a block's shared
memory holds) is staged (:class:`CudaStaged`): each fused row loop is a kernel
of its own, the wide contractions are tiled GEMM launches, and generated host
code runs them in order. Either way the finish kernel reads the sums already
reduced on the device (``total``) and writes its scalar result into
``result[0]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sympy as sp

from symgrad.cuda_runner import THREADS_PER_BLOCK
from symgrad.ir import IRError, Value

from .kernel_ir import (Affine, Alloc, Barrier, Builtin, Call, CallExpr, Compute, If, Kernel, Launch, Let, Literal,
                        Loop, Min, Ref, Return, Stmt, View, Window, index, needed, uses, walk_refs)
from .lower import Lowering, Sink, flat_view
from .ops.einsum import provenance
from .passes.finishing import chunk_prelude
from .passes.fusion import drop_row_index, reindex
from .targets import Backend, Target

if TYPE_CHECKING:
    from symgrad.ir import Assign

__all__ = ["CudaFused", "CudaStaged", "choose"]


def _itemsize(float_type: str) -> int:
    return 8 if float_type == "float64" else 4


def choose(target: Target, L: Lowering) -> Backend:
    """Staged when a phase-B contraction is GEMM-sized per sample or the sums outgrow a block's
    shared memory; fused otherwise."""
    itemsize = _itemsize(L.ft)
    if L.n_acc * itemsize > target.shared_acc_bytes or any(
            L.phase[a.out.name] == "B" and L.gemm_plan(a, True) is not None for a in L.assigns):
        return CudaStaged(target)
    return CudaFused(target)


class CudaFused(Backend):
    """One GPU thread per chunk of rows, everything fused (see the module docstring)."""

    vector = False
    rows_are_local = True
    row_sinks_in_loop = True
    sums_param = "total"
    result_param = "result"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.local_elements = 0   # elements of thread-local arrays allocated so far

    def alloc(self, L: Lowering, v: Value, rows: str | None, name: str) -> Alloc | None:
        """A thread's own array: one row of a per-sample value, or a parameter-only one."""
        if not v.shape:
            return None   # a per-row scalar is a plain local variable
        self.local_elements += math.prod(v.shape)
        if self.local_elements > self.target.local_max:
            raise IRError(f"backend 'cuda': {v.name!r} (shape {v.shape}) brings a thread's local arrays "
                          f"to {self.local_elements} elements (at most {self.target.local_max}, CUDA's local "
                          "memory per thread). Only the values that cross a staged pass's kernels "
                          "live in device memory, and a pass is staged only for a network with a "
                          "GEMM-sized layer or more sums than shared memory holds")
        return Alloc(name, index(*v.shape), "int64" if v.kind == "index" else "float", "local")

    def gemm(self, L: Lowering, a: Assign) -> list[Stmt] | None:
        return None   # every contraction is a loop in the thread's code

    def close_rows(self, L: Lowering, fused: list[Stmt], kept: list[Value], local: set[str],
                   opaque: set[str]) -> list:
        fused = drop_row_index(fused, {L.store[v.name].name for v in kept}, "r")
        allocs = [L.alloc(v, "rows") for v in kept]
        return [a for a in allocs if a is not None] + [Loop("r", Affine(), Affine.of("rows"), tuple(fused))]

    def result(self, expr: sp.Expr, binds: tuple[tuple[sp.Symbol, Ref], ...], key: str) -> Stmt:
        return Compute(Ref("result", index(0)), expr, binds, "=", key)

    def chunk_kernels(self, L: Lowering, copied: list) -> tuple[Kernel, tuple[Kernel, ...], bool]:
        itemsize = _itemsize(L.ft)
        block_sums = 0 < L.n_acc * itemsize <= self.target.shared_acc_bytes
        pre = chunk_prelude(L, per_chunk_sums=False)
        rows_out = list(dict.fromkeys(s.array for s, _ in L.sink_rows))
        name, head = L.kernel_name, L.head
        if block_sums:   # no early return: every thread must reach the barriers
            opening, closing = _shared_block_sums(L.n_acc, L.ft, "partials")
            body = head + needed(L.phase_a, pre, L.chunk_body) + [
                *opening, Let("c", Affine.of(Builtin("row")), "this thread's chunk of rows (none past the batch's end)"),
                *pre, *L.chunk_body, *closing]
            params = L.inputs + rows_out + ["partials", "chunk"]
            doc = (f"Rows c*chunk..(c+1)*chunk of {name} in GPU thread c, all its per-sample work "
                   "fused; the threads of a block add their sums atomically in shared memory, and "
                   "the block writes them to partials[block].")
        else:
            body = head + needed(L.phase_a, pre, L.chunk_body) + [
                Let("c", Affine.of(Builtin("row")), "this thread's chunk of rows"),
                If(sp.Symbol("c") * sp.Symbol("chunk") >= sp.Symbol("n_samples"), (), (Return(),)),
                *pre, *L.chunk_body]
            params = L.inputs + rows_out + ["chunk"]
            doc = (f"Rows c*chunk..(c+1)*chunk of {name} in GPU thread c, all its per-sample work "
                   "fused (no sums over the batch: each thread writes its own rows).")
        shared = frozenset({"acc", *L.acc_views()}) if block_sums else frozenset()
        return Kernel(f"{name}_chunks", tuple(params), tuple(body), doc, shared), (), block_sums


class CudaStaged(CudaFused):
    """Row kernels and tiled GEMM launches, run in order by generated host code (see
    :func:`_staged_pass`); intermediates that cross kernels live in device memory."""

    rows_are_local = False

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.globals: dict[str, Value] = {}   # per-sample arrays held in device memory
        self.gemm_sums: set[str] = set()      # accumulator views a GEMM adds into

    def gemm(self, L: Lowering, a: Assign) -> list[Stmt] | None:
        """In phase B, a GEMM-sized contraction as a tiled GEMM launch over the chunk (the host
        driver runs phase B only; phases A and C are device code)."""
        if L.phase_of_emit != "B":
            return None
        plan = L.gemm_plan(a, True)
        if plan is None:
            return None
        first, t1, second, t2 = plan
        st = L.store[a.out.name]
        comment = provenance(a)
        out = f"{st.name}_acc" if st.kind == "acc" else st.name   # every term of a batch sum adds into total
        if st.kind == "acc":
            self.gemm_sums.add(out)
        else:
            self.globals.setdefault(st.name, a.out)
        return [Call("gemm", (first, second, out, Literal(t1), Literal(t2), Literal(st.kind == "acc")),
                     frozenset({out}), comment)]

    def close_rows(self, L: Lowering, fused: list[Stmt], kept: list[Value], local: set[str],
                   opaque: set[str]) -> list:
        """A row kernel: its own rows in thread-local arrays, the rest in device memory."""
        own = [v for v in kept if L.store[v.name].name in local - opaque]
        for v in kept:
            if v not in own:
                self.globals.setdefault(L.store[v.name].name, v)
        fused = drop_row_index(fused, {L.store[v.name].name for v in own}, "r")
        self.local_elements = 0
        allocs = [a for a in (L.alloc(v, "rows") for v in own) if a is not None]
        return [_RowStage(tuple(allocs), Loop("r", Affine.of(Builtin("row")), Affine.of("rows"), tuple(fused),
                                              step=Affine.of(Builtin("rows_step"))))]

    def copied_sinks(self, L: Lowering) -> list:
        """Gradient blocks that are batch sums as they stand: copied on the device by the host
        driver (cuMemcpy), not element by element in the single-thread finish."""
        return [s for s in L.sinks if s.kind == "flat" and L.program.output(s.key).shape
                and L.store[L.program.output(s.key).name].kind == "acc"]

    def chunk_kernels(self, L: Lowering, copied: list) -> tuple[Kernel, tuple[Kernel, ...], bool]:
        driver, kernels = _staged_pass(L, self, [(s, L.store[L.program.output(s.key).name].acc_slot)
                                                 for s in copied])
        return driver, tuple(kernels), False


@dataclass(frozen=True)
class _RowStage:
    """Staged: one fused loop over a chunk's rows, which becomes a row kernel (one GPU thread per
    sample), and the allocations of its thread-local arrays."""

    allocs: tuple[Alloc, ...]
    loop: Loop


def _staged_pass(L: Lowering, B: CudaStaged, copies: list[tuple[Sink, int]]) -> tuple[Kernel, list[Kernel]]:
    """A staged CUDA pass: one device kernel per row loop, and the host driver that runs them,
    with the tiled GEMMs between them, over chunks of the batch.

    Intermediates that cross a kernel boundary live in device memory, one row per sample. A row
    kernel's sums go to block sums (in shared memory when they fit, else in the block's row of
    partials), which ``add_partials`` adds into ``total`` in block order; a GEMM over the batch
    adds its product into ``total`` itself. ``total`` is zeroed once. The blocks, chunks, GEMM
    terms and the k order inside a GEMM are fixed by the batch size; only the order of the
    atomic adds inside a block varies from run to run.
    """
    name, stages, head, phase_a, data_args, n_acc, ft = (L.kernel_name, L.chunk_body, L.head, L.phase_a,
                                                         L.data_args, L.n_acc, L.ft)
    flat, sink_rows = list(L.flat_leaves.values()), L.sink_rows
    out_arrays = list(dict.fromkeys(s.array for s in L.sinks if s.kind != "return"))
    flat_out = [a for a in out_arrays if a not in [s.array for s, _ in sink_rows]]
    itemsize = _itemsize(ft)
    views = L.acc_views()
    slices = L.chunk_slices()
    types = dict.fromkeys(flat, "f1") | {"r0": "i", "r1": "i"}
    for arg, a in data_args:
        types[arg] = "i1" if a is None or a.out.kind == "index" else f"f{1 + len(a.out.shape)}"
    for g, v in B.globals.items():
        types[g] = ("i" if v.kind == "index" else "f") + str(1 + len(v.shape))
    rows_out = list(dict.fromkeys(s.array for s, _ in sink_rows))
    for s, v in sink_rows:
        types[s.array] = "f2" if s.size else f"f{1 + len(v.shape)}"
    from_driver = flat + [arg for arg, _ in data_args] + list(B.globals) + rows_out
    kernels: list[Kernel] = []
    allocs: list[Stmt] = []
    launches: list[Stmt] = []
    part_bytes = 0
    for st in stages:
        if not isinstance(st, _RowStage):
            launches.append(st)
            continue
        kname = f"{name}_rows{len(kernels) + 1}"
        part, slots = L.name(f"partials_{len(kernels) + 1}"), L.name(f"slots_{len(kernels) + 1}")
        sums: list[tuple[int, int, str]] = []   # (first slot, slots, view name or "") this kernel adds to
        for kind, r, _ in walk_refs([st.loop]):
            if kind == "write" and r.name == "acc":
                sums.append((r.index[0].const, 1, ""))
            elif kind == "write" and r.name in views:
                sums.append((views[r.name][0], math.prod(views[r.name][1]), r.name))
        sums = sorted(set(sums))
        local, view_lines, n_sums = {}, [], 0
        for g, size, v in sums:
            if v:
                view_lines.append(flat_view(v, "acc", n_sums, views[v][1]))
            else:
                local[Affine.of(g)] = Affine.of(n_sums)
            n_sums += size
        loop = reindex([st.loop], {"acc"}, lambda index: (local.get(index[0], index[0]),))[0]
        core: list[Stmt] = [*st.allocs, *view_lines, loop]
        pre = head + phase_a + [Let("rows", Affine.of("r1") + Affine.of("r0") * -1)] + slices
        fits = n_sums * itemsize <= L.limits.shared_acc_bytes
        if n_sums and fits:
            opening, closing = _shared_block_sums(n_sums, ft, part)
            core = [*opening, *core, *closing]
        elif n_sums:
            core = [View("acc", part, Affine.of(Builtin("block")), None, None, "this block's sums (too many for shared memory): "
                         "its row of partials, zeroed by the driver"), *core]
        body = needed(pre, core) + core
        used = uses(body)
        params = [p for p in from_driver + ([part] if n_sums else []) if p in used] + ["r0", "r1"]
        types[part] = "f2"
        what = (f"its block sums to {part}[block] ({'shared memory' if fits else 'device memory'}, "
                "added atomically)") if n_sums else "no sums"
        kernels.append(Kernel(kname, tuple(params), tuple(body),
                              f"Row kernel {len(kernels) + 1} of {name}: rows r0..r1 of the batch, one GPU "
                              f"thread per sample (grid-stride), the per-sample work fused; {what}.",
                              frozenset({"acc", *(v for _, _, v in sums if v)}) if n_sums else frozenset(),
                              arg_types=tuple(types[p] for p in params)))
        if n_sums:
            allocs += [Alloc(part, (CallExpr("blocks_for", ("chunk",)), Affine.of(n_sums)), space="device"),
                       Let(slots, CallExpr("slot_index", (Literal(tuple((g, k) for g, k, _ in sums)),)),
                            "where its block sums go in total")]
            part_bytes += -(-n_sums * itemsize // THREADS_PER_BLOCK)   # per row: a row per block
        blocks = Window(part, Affine(), Affine.of("blocks"))
        launches += ([Call("zero", (blocks,), frozenset({part}))] if n_sums and not fits else []) + [
            Launch(kname, ("blocks", "THREADS_PER_BLOCK"), tuple(params))] + (
            [Call("add_partials", (blocks, "total", slots), frozenset({"total"}))] if n_sums else [])
    row_bytes = part_bytes
    bufs: list[Stmt] = []
    buf = {g: L.name(f"{g}_buf") for g in B.globals}
    for g, v in B.globals.items():
        row_bytes += (8 if v.kind == "index" else itemsize) * math.prod(v.shape)
        bufs.append(Alloc(buf[g], index("chunk", *v.shape), "int64" if v.kind == "index" else "float", "device"))
    used = uses(launches)
    rows = Affine.of("rows")
    loop = Loop("r0", Affine(), Affine.of("n_samples"), tuple(
        [Let("r1", Min(Affine.of("r0") + "chunk", Affine.of("n_samples"))),
         Let("rows", Affine.of("r1") + Affine.of("r0") * -1), Let("blocks", CallExpr("blocks_for", ("rows",)))]
        + [v for v in slices if v.name in used]
        + [View(g, buf[g], Affine(), rows) for g in B.globals] + launches),
        "chunks of the batch, in order", step=Affine.of("chunk"))
    sums_of_gemms = [flat_view(v, "total", *views[v]) for v in sorted(B.gemm_sums)]
    setup: list[Stmt] = [Let("chunk", CallExpr("stage_rows", ("n_samples", row_bytes)),
                             "rows per chunk: what the device-memory budget holds (depends on N only)"),
                         *bufs, *allocs] + ([Call("zero", ("total",), frozenset({"total"}))] if n_acc else []) + sums_of_gemms
    copy = [Call("copy_to_device", (Window(s.array, Affine.of(s.offset), Affine.of(s.offset + s.size)),
                                    Window("total", Affine.of(slot), Affine.of(slot + s.size))),
                 frozenset({s.array}), s.key, method=True) for s, slot in copies]
    body = needed(head, setup + [loop]) + setup + [loop] + copy
    params = flat + [arg for arg, _ in data_args] + rows_out + flat_out + (["total"] if n_acc else [])
    driver = Kernel(f"{name}_chunks", tuple(params), tuple(body),
                    f"Host side of {name} on the GPU: over chunks of the batch, the row kernels (one thread "
                    "per sample) and the tiled GEMMs between them, in order; sums over the batch end in "
                    "total, and those that are outputs as they stand are copied on the device.", host=True)
    return driver, kernels


def _shared_block_sums(n: int, ft: str, partials: str) -> tuple[list[Stmt], list[Stmt]]:
    """A GPU block's ``n`` sums in shared memory: the opening (allocate, zero together, barrier)
    and the closing (barrier, then the block's row of ``partials``). No thread may return
    between them: every thread must reach the barriers."""
    q, a0 = Affine.of("q"), sp.Symbol("a0", real=True)

    def each(body: Compute) -> Loop:   # the block's threads share the slots out
        return Loop("q", Affine.of(Builtin("thread")), Affine.of(n), (body,), step=Affine.of(Builtin("block_dim")))
    return ([Alloc("acc", index(n), space="shared", comment="the block's sums over its threads' rows, in shared memory"),
             each(Compute(Ref("acc", (q,)), sp.S.Zero)), Barrier()],
            [Barrier("the block's sums: its row of partials"),
             each(Compute(Ref(partials, (Affine.of(Builtin("block")), q)), a0, ((a0, Ref("acc", (q,))),)))])
