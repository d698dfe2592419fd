"""Constant tensors: a fixed array from NumPy (``sg.constant``, NumPy arrays in arithmetic).

The values live in the op (so equal constants are one value, and the generated
module holds them as a module-level array the kernels read); nothing flows
into or out of a constant's derivative.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..ir import CONSTANT, Assign, IRError, Linearity, Op, Typed, Value, display_name

if TYPE_CHECKING:
    from ..autodiff import Pullback, Pushforward

__all__ = ["Constant"]


@dataclass(frozen=True)
class Constant(Op):
    """A fixed per-call array of ``shape`` (C order ``values``), the same for every sample."""

    values: tuple[float, ...]
    shape: tuple[int, ...]

    differentiable = False

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        if args or len(self.values) != int(np.prod(self.shape)):
            raise IRError(f"constant: {len(self.values)} values for shape {self.shape}, and no arguments")
        return self.shape, False, "real"

    def vjp(self, pb: Pullback, a: Assign, g: Value) -> None:
        return None

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        return None

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        return CONSTANT

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        return np.array(self.values, dtype=np.float64).reshape(self.shape)

    def format(self, a: Assign, latex: bool) -> str:
        shown = ", ".join(f"{v:g}" for v in self.values[:4]) + (", ..." if len(self.values) > 4 else "")
        return f"{display_name(a.out.name, latex)} = constant{list(self.shape)}: [{shown}]"
