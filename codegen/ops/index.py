"""Lowering of the index ops: argmax as a scan over the last axis, gather as an indexed read,
scatter as a masked write over the last axis's positions; loops over the leading axes around
each."""
from __future__ import annotations

from typing import TYPE_CHECKING

import sympy as sp

from symgrad.ir import Assign
from symgrad.ops.index import ArgMax, Gather, Scatter

from ..kernel_ir import Affine, Compute, If, Let, Loop, Ref, Stmt, index
from . import LoweringRule, register

if TYPE_CHECKING:
    from ..lower import Lowering


def _thread_local(L: Lowering, name: str) -> bool:
    """A per-sample intermediate a fused GPU thread holds for its current row only (no row index)."""
    return L.rows_are_local and not L.by_name[name].op.is_leaf()


def emit_argmax(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    """``best`` and ``best_at`` scan the last axis; the first largest element wins (a strict
    ``>``), for each element of the leading axes."""
    x = a.args[0]
    src = L.store[x.name].name
    *lead_idx, i = L.index_vars(len(x.shape))
    lead = ((row,) if x.batched and not _thread_local(L, x.name) else ()) + tuple(lead_idx)
    best, at = L.name("best"), L.name("best_at")
    el, b = sp.symbols("a0 a1", real=True)
    if L.rows_are_local and a.out.batched:
        dst = Ref(L.store[a.out.name].name, index(*lead_idx))
    else:
        dst = L.ref(a.out, tuple(lead_idx), row)
    assert isinstance(dst, Ref)
    scan = Loop(i, Affine.of(1), Affine.of(x.shape[-1]), (
        If(sp.StrictGreaterThan(el, b), ((el, Ref(src, index(*lead, i))), (b, Ref(best))), (
            Compute(Ref(best), el, ((el, Ref(src, index(*lead, i))),)), Let(at, Affine.of(i)))),))
    body = [Compute(Ref(best), el, ((el, Ref(src, index(*lead, 0))),), "=", f"{a.out.name} = argmax({x.name})"),
            Let(at, Affine()), scan, Compute(dst, sp.Symbol(at))]
    return L.loops(x.shape[:-1], tuple(lead_idx), body)


def emit_gather(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    """``v[..., idx]``: the index is read into a scalar first, so the element's index is affine in it."""
    v, idx = a.args
    lead_idx = L.index_vars(len(a.out.shape))
    s = sp.Symbol("a0", real=True)
    if idx.batched and _thread_local(L, idx.name) and not idx.shape:
        at, pre = L.store[idx.name].name, []
    else:
        q = L.ref(idx, lead_idx if idx.shape else (), row)
        assert isinstance(q, Ref)
        at = L.name(f"{idx.name}_at")
        pre = [Compute(Ref(at), s, ((s, q),))]
    tgt, o = L.target(a, lead_idx, row)
    body = pre + [Compute(tgt, s, ((s, L.ref(v, (*lead_idx, at), row)),), o, f"{a.out.name} = {v.name}[..., {idx.name}]")]
    return L.loops(a.out.shape, lead_idx, body)


def emit_scatter(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    x, idx = a.args
    *lead_idx, i = L.index_vars(len(a.out.shape))
    s, si, sq = sp.symbols("a0 a1 a2", real=True)
    expr = sp.Piecewise((s, sp.Eq(si, sq)), (0, True))
    binds = [(si, Ref(i)), (sq, L.ref(idx, tuple(lead_idx) if idx.shape else (), row))]
    xr = L.ref(x, tuple(lead_idx), row)
    if isinstance(xr, Ref):
        binds.insert(0, (s, xr))
    else:
        expr = expr.xreplace({s: xr})
    tgt, o = L.target(a, (*lead_idx, i), row)
    return L.loops(a.out.shape, (*lead_idx, i), [Compute(tgt, expr, tuple(binds), o,
                                                         f"{a.out.name} = one_hot({idx.name}) * {x.name}")])


register(ArgMax, LoweringRule(emit_argmax))
register(Gather, LoweringRule(emit_gather))
register(Scatter, LoweringRule(emit_scatter))
