"""Lowering of elementwise ops: one Compute per element, in loops over the value's shape."""
from __future__ import annotations

from typing import TYPE_CHECKING

import sympy as sp

from symgrad.ir import Assign, arg_symbols
from symgrad.ops.elementwise import Elementwise

from ..kernel_ir import Compute, Stmt
from . import LoweringRule, register

if TYPE_CHECKING:
    from ..lower import Lowering, Store


def emit(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    fn = a.op.fn
    idx = L.index_vars(len(a.out.shape))
    expr, binds = L.bind(fn.expr, a.args, [idx if x.shape else () for x in a.args], row)
    tgt, op = L.target(a, idx, row)
    comment = f"{a.out.name} = {fn.name}: {fn.expr}"
    return L.loops(a.out.shape, idx, [Compute(tgt, expr, binds, op, comment)])


def store(L: Lowering, a: Assign) -> Store | None:
    """A constant (no arguments) is folded into the expressions that read it."""
    from ..lower import Store
    return Store("const", expr=a.op.fn.expr) if not a.args else None


def is_sum(a: Assign) -> bool:
    return len(a.args) > 1 and a.op.fn.expr == sp.Add(*arg_symbols(len(a.args)))


register(Elementwise, LoweringRule(emit, store=store, is_sum=is_sum, reads_through=True))
