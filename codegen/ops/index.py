"""Lowering of the index ops: argmax as a scan over the vector, gather as an indexed read,
scatter as a masked write over the vector's positions."""
from __future__ import annotations

from typing import TYPE_CHECKING

import sympy as sp

from symgrad.ir import Assign
from symgrad.ops.index import ArgMax, Gather, Scatter

from ..kernel_ir import Compute, Line, Ref, Stmt
from . import LoweringRule, register

if TYPE_CHECKING:
    from ..lower import Lowering


def _thread_local(L: Lowering, name: str) -> bool:
    """A per-sample intermediate a fused GPU thread holds for its current row only (no row index)."""
    return L.rows_are_local and not L.by_name[name].op.is_leaf()


def emit_argmax(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    x = a.args[0]
    src = L.store[x.name].name
    lead = f"{row}, " if x.batched and not _thread_local(L, x.name) else ""
    best, at = L.name("best"), L.name("best_at")
    dst = L.store[a.out.name].name if L.rows_are_local and a.out.batched else str(L.ref(a.out, (), row))
    text = (f"{best} = {src}[{lead}0]\n{at} = 0\n"
            f"for i in range(1, {x.shape[0]}):\n"
            f"    if {src}[{lead}i] > {best}:\n"
            f"        {best} = {src}[{lead}i]\n"
            f"        {at} = i\n"
            f"{dst} = {at}")
    return [Line(text, f"{a.out.name} = argmax({x.name})", frozenset({src}),
                 frozenset({L.store[a.out.name].name}))]


def emit_gather(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    v, idx = a.args
    local = idx.batched and _thread_local(L, idx.name)
    q = Ref(L.store[idx.name].name) if local else L.ref(idx, (), row)
    s = sp.Symbol("a0", real=True)
    tgt, o = L.target(a, (), row)
    return [Compute(tgt, s, ((s, L.ref(v, (str(q),), row)),), o, f"{a.out.name} = {v.name}[{idx.name}]")]


def emit_scatter(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    x, idx = a.args
    (i,) = L.index_vars(1)
    s, si, sq = sp.symbols("a0 a1 a2", real=True)
    expr = sp.Piecewise((s, sp.Eq(si, sq)), (0, True))
    binds = [(si, Ref(i)), (sq, L.ref(idx, (), row))]
    xr = L.ref(x, (), row)
    if isinstance(xr, Ref):
        binds.insert(0, (s, xr))
    else:
        expr = expr.xreplace({s: xr})
    tgt, o = L.target(a, (i,), row)
    return L.loops((a.op.size,), (i,), [Compute(tgt, expr, tuple(binds), o,
                                                 f"{a.out.name} = one_hot({idx.name}) * {x.name}")])


register(ArgMax, LoweringRule(emit_argmax))
register(Gather, LoweringRule(emit_gather))
register(Scatter, LoweringRule(emit_scatter))
