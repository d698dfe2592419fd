"""Lowering of constant tensors: a module-level array (``CONST_<name>``, printed by the emitter
from its values) that the kernels read by name."""
from __future__ import annotations

from typing import TYPE_CHECKING

from symgrad.ir import Assign
from symgrad.names import const_global
from symgrad.ops.constant import Constant

from ..kernel_ir import Global, Let, Stmt
from . import LoweringRule, register

if TYPE_CHECKING:
    from ..lower import Lowering, Store


def _nothing(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    return []


def store(L: Lowering, a: Assign) -> Store:
    from ..lower import Store
    L.head.append(Let(a.out.name, Global(const_global(a.out.name), a.op.values, a.op.shape),
                      f"constant {list(a.op.shape)}"))
    return Store("array", a.out.name)


register(Constant, LoweringRule(_nothing, store=store, computes=False))
