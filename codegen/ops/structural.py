"""Lowering of the ops that compute nothing: leaves (kernel arguments) and detach (an alias)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from symgrad.ir import Assign
from symgrad.ops.detach import Detach
from symgrad.ops.leaf import Leaf

from ..kernel_ir import Stmt
from . import LoweringRule, register

if TYPE_CHECKING:
    from ..lower import Lowering, Store


def _nothing(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    return []


def _leaf_store(L: Lowering, a: Assign) -> Store:
    """1/N is the scalar ``inv_n``; a leaf of a flat role is a view of theta (or v); data is the
    chunk's rows of its argument array (``<name>_c``)."""
    from ..lower import Store
    role = a.op.role
    if role == "batch_scale":
        return Store("scalar", "inv_n")
    if role in L.flat_roles:
        return Store("scalar" if not a.out.shape else "array", a.out.name)
    return Store("array", L.name(f"{a.out.name}_c"))


def _detach_store(L: Lowering, a: Assign) -> Store:
    return L.store[a.args[0].name]   # the same storage as its argument


register(Leaf, LoweringRule(_nothing, store=_leaf_store, computes=False))
register(Detach, LoweringRule(_nothing, store=_detach_store, computes=False))
