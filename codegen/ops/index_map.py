"""Lowering of the index maps: a loop nest over the output reading the operand at the map's affine
index, and its transpose, a loop nest over the operand adding into the output at that index.

Where the map can leave the source's bounds (padding, a window at the edge), the read or the add
sits under a test of exactly those axes, so nothing outside an array is ever touched; the padded
element is the map's fill.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import sympy as sp

from symgrad.ir import Assign
from symgrad.ops.index_map import LOOP_NAMES, IndexMap, IndexScatter, Map

from ..kernel_ir import Affine, Compute, If, Ref, Stmt
from . import LoweringRule, register, rule_for

if TYPE_CHECKING:
    from ..lower import Lowering, Store


def _source_index(m: Map, idx: tuple[str, ...]) -> tuple[Affine, ...]:
    return tuple(Affine(tuple((v, c) for v, c in zip(idx, ax.coefs) if c), ax.const) for ax in m.axes)


def _in_bounds(m: Map, idx: tuple[str, ...]) -> sp.Basic | None:
    """The test that the source index lies in bounds, over the axes where it can leave them
    (None: it never does)."""
    syms = [sp.Symbol(v, integer=True) for v in idx]
    tests = []
    for k, (ax, n) in enumerate(zip(m.axes, m.source)):
        e = sum((c * s for c, s in zip(ax.coefs, syms) if c), sp.Integer(ax.const))
        lo, hi = m.reach(k)
        if lo < 0:
            tests.append(sp.GreaterThan(e, 0, evaluate=False))
        if hi >= n:
            tests.append(sp.StrictLessThan(e, n, evaluate=False))
    return sp.And(*tests, evaluate=False) if len(tests) > 1 else tests[0] if tests else None


def _fill(value: float) -> sp.Expr:
    return sp.Float(value) if value not in (float("inf"), float("-inf")) else (sp.oo if value > 0 else -sp.oo)


def emit_index_map(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    m, (x,) = a.op.map, a.args
    idx = L.index_vars(len(m.shape))
    s = sp.Symbol("a0", real=True)
    r = L.ref(x, _source_index(m, idx), row)
    expr, binds = (s, ((s, r),)) if isinstance(r, Ref) else (r, ())
    tgt, op = L.target(a, idx, row)
    comment = m.text(x.name, a.out.name, names=idx)
    test = _in_bounds(m, idx)
    if test is None:
        body: list[Stmt] = [Compute(tgt, expr, binds, op, comment)]
    elif op == "=":
        body = [Compute(tgt, _fill(a.op.fill), (), "=", comment + f" ({a.op.fill:g} out of bounds)"),
                If(test, (), (Compute(tgt, expr, binds, "="),))]
    else:   # added into a batch sum: the padding adds its fill, which is 0 for every sum
        body = [If(test, (), (Compute(tgt, expr, binds, op, comment),))]
    return L.loops(m.shape, idx, body)


#: the free axes' total extent up to which a scatter is lowered as a gather (a convolution's
#: kernel taps), provided the candidates tried are not many more than the elements: each output
#: element then sums its few sources, written once, with no zeroing pass
GATHER_MOST = 64


def _gather_form(m: Map) -> tuple[dict[int, tuple[int, int]], list[int]] | None:
    """The inverted index equation: for each source axis the map's axis solved for (a pivot with
    coefficient +-1, the largest such), and the other output axes (free: summed over). None where
    an output axis feeds two source axes, a pivot would need a division (a stride), or the free
    axes are many."""
    seen: set[int] = set()
    pivots: dict[int, tuple[int, int]] = {}
    for k, ax in enumerate(m.axes):
        used = [j for j, c in enumerate(ax.coefs) if c]
        if seen & set(used):
            return None
        seen |= set(used)
        unit = [j for j in used if ax.coefs[j] in (1, -1)]
        if used and not unit:
            return None
        if unit:
            j = max(unit, key=lambda q: m.shape[q])
            pivots[k] = (j, ax.coefs[j])
    free = [j for j in range(len(m.shape)) if j not in {p for p, _ in pivots.values()}]
    tries = math.prod(m.shape[j] for j in free)
    if tries > GATHER_MOST or math.prod(m.source) * tries > 4 * math.prod(m.shape):
        return None   # many candidates per element that are mostly out of bounds: a flatten
    return pivots, free


def emit_index_scatter(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    """As a gather where the map inverts (:func:`_gather_form`): each output element sums the
    elements that land on it; else ``out = 0`` and every element added at its index."""
    m, (g,) = a.op.map, a.args
    form = _gather_form(m)
    if form is not None:
        return _gather(L, a, form, row)
    zero_idx = L.index_vars(len(m.source))
    tgt, op = L.target(a, zero_idx, row)
    out: list[Stmt] = []
    if op == "=":   # (an accumulator starts at zero already)
        out = L.loops(m.source, zero_idx, [Compute(tgt, sp.Integer(0), (), "=", f"{a.out.name} = 0")])
    idx = L.index_vars(len(m.shape))
    s = sp.Symbol("a0", real=True)
    r = L.ref(g, idx, row)
    expr, binds = (s, ((s, r),)) if isinstance(r, Ref) else (r, ())
    at, _ = L.target(a, _source_index(m, idx), row)
    names = list(idx)
    add = Compute(at, expr, binds, "+=", f"{a.out.name}[{', '.join(ax.text(names) for ax in m.axes)}] += "
                                         f"{g.name}[{', '.join(names)}]")
    test = _in_bounds(m, idx)
    return out + L.loops(m.shape, idx, [add if test is None else If(test, (), (add,))])


def _gather(L: Lowering, a: Assign, form: tuple[dict[int, tuple[int, int]], list[int]],
            row: str | None) -> list[Stmt]:
    m, (g,) = a.op.map, a.args
    pivots, free = form
    u = L.index_vars(len(m.source))
    f = dict(zip(free, L.reduction_vars(len(free))))
    at: dict[int, Affine] = {j: Affine.of(v) for j, v in f.items()}
    tests = []
    for k, ax in enumerate(m.axes):
        if k not in pivots:   # a constant index: only that element of the axis receives
            tests.append(sp.Eq(sp.Symbol(u[k], integer=True), ax.const))
            continue
        j, sign = pivots[k]
        rest = Affine.of(u[k]) + (-ax.const)
        for q, c in enumerate(ax.coefs):
            if c and q != j:
                rest = rest + Affine.of(f[q]) * (-c)
        at[j] = rest * sign
        e = sum((c * sp.Symbol(str(n), integer=True) for n, c in at[j].terms), sp.Integer(at[j].const))
        tests += [sp.GreaterThan(e, 0, evaluate=False), sp.StrictLessThan(e, m.shape[j], evaluate=False)]
    s = sp.Symbol("a0", real=True)
    r = L.ref(g, tuple(at[j] for j in range(len(m.shape))), row)
    expr, binds = (s, ((s, r),)) if isinstance(r, Ref) else (r, ())
    tgt, op = L.target(a, u, row)
    names = list(LOOP_NAMES[:len(m.shape)])
    comment = (f"{a.out.name} = transpose of {' , '.join(ax.text(names) for ax in m.axes)} as a gather: "
               f"the elements of {g.name} that land on each element, summed")
    add = Compute(tgt, expr, binds, "+=")
    body = [If(sp.And(*tests, evaluate=False) if len(tests) > 1 else tests[0], (), (add,))] if tests else [add]
    inner = L.loops(tuple(m.shape[j] for j in free), tuple(f[j] for j in free), body)
    head = [] if op == "+=" else [Compute(tgt, sp.Integer(0), (), "=", comment)]
    return L.loops(m.source, u, head + inner)


def store_index_map(L: Lowering, a: Assign) -> Store | None:
    """A map that never leaves its operand's bounds, read only by ops whose rules read operands
    through ``L.ref`` (``reads_through``: elementwise ops, einsums) and not as a matrix, is not
    stored: they read its operand at the mapped index (a convolution's windows, a transpose, a
    slice). On the CPU, per sample."""
    from ..lower import Store
    m, (x,) = a.op.map, a.args
    if L.limits.name != "cpu" or not (a.out.batched and x.batched and m.in_bounds_everywhere()):
        return None
    if L.store[x.name].kind not in ("array", "map") or a.out.name in {v.name for _, v in L.program.outputs}:
        return None
    users = L.consumers.get(a.out.name, [])
    if not users or any(not rule_for(u.op).reads_through for u in users):
        return None
    if any(L.rows_plan(u) is not None for u in users):   # a product per sample reads it as a matrix
        return None
    return Store("map", a.out.name, over=(x, m))


register(IndexMap, LoweringRule(emit_index_map, store=store_index_map))
register(IndexScatter, LoweringRule(emit_index_scatter))
