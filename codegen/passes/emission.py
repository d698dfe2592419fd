"""Pass 3: phases A and B as kernel IR, each op through its family's lowering rule.

The target's backend is chosen first (a CUDA pass is fused or staged from the program's
layers and sums). Phase A becomes statements; phase B becomes, in order, library products
(the backend's ``gemm``) and :class:`RowGroup` s: the per-row statements of consecutive ops,
which the fusion pass merges into one loop over the chunk's rows. Phase C and the outputs are
the finishing pass's, with :func:`unbatched_phase` and :func:`sink_stmt` from here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import sympy as sp

from symgrad.ir import Value

from ..kernel_ir import Affine, Compute, Loop, Ref, Stmt, index
from ..ops import rule_for

if TYPE_CHECKING:
    from ..lower import Lowering, Sink

__all__ = ["RowGroup", "run", "unbatched_phase", "sink_stmt"]


@dataclass(frozen=True)
class RowGroup:
    """The per-row statements of consecutive batched ops, before fusion: ``defined`` the values
    they hold in arrays, ``local`` the names of those no statement outside the group reads."""

    stmts: tuple[Stmt, ...]
    defined: tuple[Value, ...]
    local: frozenset[str]


def run(L: Lowering) -> None:
    L.backend = L.limits.backend(L)
    L.phase_a = unbatched_phase(L, "A")
    L.sink_rows = [(s, L.program.output(s.key)) for s in L.sinks if s.kind == "rows"]
    L.chunk_body = _batched_phase(L)


def unbatched_phase(L: Lowering, phase: str) -> list[Stmt]:
    """The statements of the unbatched values of ``phase`` ("A" or "C"), in program order."""
    L.phase_of_emit = phase
    out: list[Stmt] = []
    for a in L.assigns:
        if L.phase[a.out.name] != phase or not rule_for(a.op).computes:
            continue
        st = L.store[a.out.name]
        if st.kind in ("const", "map") or (a.out.name in L.alias and phase == "C"):
            continue  # an alias's add happened in the shared accumulator
        g = L.backend.gemm(L, a)
        if g is not None:
            out.extend(g)
            continue
        if st.kind == "array":
            line = L.alloc(a.out, None)
            out += [line] if line is not None else []
        out.extend(L.emit(a, None))
    return out


def _batched_phase(L: Lowering) -> list:
    L.phase_of_emit = "B"
    body: list = []
    group: list[tuple[object, list[Stmt]]] = []
    members: set[int] = set()
    protected = {L.store[v.name].name for _, v in L.sink_rows}

    def close(tail: list[Stmt]) -> None:
        if not group and not tail:
            return
        defined = tuple(a.out for a, _ in group if L.store[a.out.name].kind == "array")   # type: ignore[attr-defined]
        local = frozenset(L.store[v.name].name for v in defined
                          if all(id(c) in members for c in L.consumers.get(v.name, []))
                          and L.store[v.name].name not in protected)
        body.append(RowGroup(tuple(s for _, ss in group for s in ss) + tuple(tail), defined, local))
        group.clear()
        members.clear()

    for a in L.assigns:
        if L.phase[a.out.name] != "B" or not rule_for(a.op).computes:
            continue
        if L.store[a.out.name].kind in ("const", "map"):
            continue
        g = L.backend.gemm(L, a)
        if g is not None:
            close([])
            body.extend(g)
            continue
        group.append((a, L.emit(a, "r")))
        members.add(id(a))
    if L.backend.row_sinks_in_loop:   # per-sample outputs row by row, inside the row loop
        close([s for sink, v in L.sink_rows for s in _row_sink_loops(L, sink, v)])
        return body
    close([])
    for sink, v in L.sink_rows:   # element loops: an array-to-slice assignment costs ~2 s to compile
        body.append(Loop("r", Affine(), Affine.of("rows"), tuple(_row_sink_loops(L, sink, v))))
    return body


def _row_sink_loops(L: Lowering, sink: Sink, v: Value) -> list[Stmt]:
    """Row r of a per-sample output, element by element: all of it, or, with ``size``,
    columns offset..offset+size of a (N, width) array (a Jacobian row block), broadcasting
    values that do not vary per sample."""
    from ..lower import c_order
    idx = L.index_vars(len(v.shape))
    row = Affine.of("r0") + "r"
    s = sp.Symbol("a0", real=True)
    val = L.ref(v, idx, "r")
    binds = ((s, val),) if isinstance(val, Ref) else ()
    expr = s if binds else val
    if sink.size > 1 and not v.shape:   # a scalar (a constant 0, say) fills the whole column block
        target = Ref(sink.array, (row, Affine.of(sink.offset) + "q"))
        return [Loop("q", Affine(), Affine.of(sink.size),
                     (Compute(target, expr, binds, "=", f"{sink.key}: row r"),))]
    # a column block of a (N, width) array, elements in C order
    target = Ref(sink.array, (row, c_order(sink.offset, idx, v.shape)) if sink.size else (row, *index(*idx)))
    return L.loops(v.shape, idx, [Compute(target, expr, binds, "=", f"{sink.key}: row r")])


def sink_stmt(L: Lowering, sink: Sink, v: Value) -> Stmt:
    """The statement(s) writing an unbatched output: the objective handed back, or a flat block
    (a gradient) in C order."""
    from ..lower import c_order
    st = L.store[v.name]
    s = sp.Symbol("a0", real=True)
    if sink.kind == "return":
        expr, binds = ((st.expr, ()) if st.kind == "const" else
                       (s, ((s, Ref("total", index(st.acc_slot)) if st.kind == "acc" else Ref(st.name)),)))
        return L.backend.result(expr, binds, sink.key)
    q = Affine.of(sink.offset) + "q"
    if st.kind == "acc" and v.shape:   # a batch sum: its slots of total, already in C order
        return Loop("q", Affine(), Affine.of(sink.size), (Compute(
            Ref(sink.array, (q,)), s, ((s, Ref("total", (Affine.of(st.acc_slot) + "q",))),)),), sink.key)
    # element by element, in C order (an array-to-slice assignment costs ~2 s to compile on the CPU)
    idx = L.index_vars(len(v.shape))
    ref = L.ref(v, idx, None) if st.kind != "const" else st.expr
    binds = ((s, ref),) if isinstance(ref, Ref) else ()
    if not v.shape:   # a scalar, broadcast over the sink's slots
        body = Compute(Ref(sink.array, (q,)), s if binds else ref, binds, "=", "")
        return Loop("q", Affine(), Affine.of(max(sink.size, 1)), (body,), sink.key)
    body = Compute(Ref(sink.array, (c_order(sink.offset, idx, v.shape),)), s if binds else ref, binds, "=", "")
    return replace(L.loops(v.shape, idx, [body])[0], comment=sink.key)
