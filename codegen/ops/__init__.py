"""Lowering rules, one module per op family, registered per op type (the dispatch pattern of
PyTensor's ``link/numba/dispatch``): the core lowering (:mod:`codegen.lower`) is generic and asks
:func:`rule_for` how each assignment becomes kernel IR.

A rule gives ``emit`` (the statements computing the value at per-sample
index variables, inside the row loop when the value is batched) and,
optionally, ``store`` (how the value is held, when the op decides it:
leaves, constants, aliases), ``gemm_plan`` (a contraction worth a BLAS call),
``rows_plan`` (one worth a BLAS call per sample) and ``is_sum`` (an addition
of its arguments, which lets batch sums share one accumulator).
``computes`` False: the op emits no statement (leaves, detach);
``reads_through``: ``emit`` reads its operands only through ``Lowering.ref``,
so an index map feeding it need not be stored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from symgrad.ir import IRError, Op

if TYPE_CHECKING:
    from symgrad.ir import Assign

    from ..kernel_ir import Stmt
    from ..lower import Lowering

__all__ = ["LoweringRule", "register", "rule_for"]


@dataclass(frozen=True)
class LoweringRule:
    """How one op type becomes kernel IR (see the module docstring)."""

    emit: Callable[[Lowering, Assign, str | None], list[Stmt]]
    store: Callable[[Lowering, Assign], Any] | None = None
    gemm_plan: Callable[[Lowering, Assign, bool], tuple[str, bool, str, bool] | None] | None = None
    rows_plan: Callable[[Assign], tuple | None] | None = None
    is_sum: Callable[[Assign], bool] | None = None
    computes: bool = True
    reads_through: bool = False


_RULES: dict[type, LoweringRule] = {}


def register(op_type: type, rule: LoweringRule) -> None:
    """Make ``rule`` the lowering of every op of ``op_type``."""
    if not (isinstance(op_type, type) and issubclass(op_type, Op)):
        raise TypeError(f"register: {op_type!r} is not an IR op class")
    _RULES[op_type] = rule


def rule_for(op: Op) -> LoweringRule:
    """The lowering rule of ``op``'s type; an op without one is an error that names it."""
    rule = _RULES.get(type(op))
    if rule is None:
        raise IRError(f"no lowering rule for IR op {type(op).__name__} ({op!r}); register one in "
                      "a codegen.ops module")
    return rule


def _register_families() -> None:
    """Import every module of this package: each registers its family's rules (a new family is a
    new module here, and nothing else changes)."""
    import importlib
    import pkgutil
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_register_families()
