"""Detach: the identity whose derivative is zero (log-sum-exp's max shift)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ..ir import CONSTANT, Assign, Builder, Linearity, Op, Typed, Value, display_name

if TYPE_CHECKING:
    from ..autodiff import Pushforward

__all__ = ["Detach", "detach"]


@dataclass(frozen=True)
class Detach(Op):
    """Identity without derivative: no adjoint or tangent flows through it."""

    differentiable = False

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        (x,) = args
        return x.shape, x.batched, x.kind

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        return None

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        return CONSTANT   # its derivatives are zero, so it adds no curvature

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        return args[0]

    def format(self, a: Assign, latex: bool) -> str:
        out, x = (display_name(n, latex) for n in (a.out.name, a.args[0].name))
        return f"{out} = stop_gradient({x})"


def detach(b: Builder, name: str, v: Value) -> Value:
    return b.apply(Detach(), (v,), name)
