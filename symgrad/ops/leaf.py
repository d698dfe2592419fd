"""Leaves: the arguments of a program (parameters, data, tangent directions, 1/N)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ..ir import AFFINE, CONSTANT, Assign, Builder, Linearity, Op, Typed, Value, display_name

if TYPE_CHECKING:
    from ..autodiff import Pullback, Pushforward

__all__ = ["Leaf", "leaf"]


@dataclass(frozen=True)
class Leaf(Op):
    """An argument of the program.

    ``role`` is one of param, input, target, labels, tangent (a direction
    vector for forward mode, laid out like the parameters), cotangent (a
    per-sample seed for the output's adjoint: the Jacobian's rows), batch_scale
    (1/N, the mean over samples). ``label`` identifies it (a parameter's label
    also places its tangent in ``v``).
    """

    role: str
    label: str
    init: object = None
    classes: int = 0
    shape: tuple[int, ...] = ()
    batched: bool = False
    kind: str = "real"

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        return self.shape, self.batched, self.kind

    def naming(self, label: str) -> tuple[str, str]:
        return label, self.role

    def is_leaf(self) -> bool:
        return True

    def vjp(self, pb: Pullback, a: Assign, g: Value) -> None:
        return None   # the adjoint of a leaf is the result, collected by vjp

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        if self.role not in pf.wrt:
            return None
        return leaf(pf.b, "tangent", self.label, a.out.shape, False, name=f"v_{a.out.name}")

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        return AFFINE if self.role == "param" else CONSTANT

    def format(self, a: Assign, latex: bool) -> str:
        out = a.out
        what = f"{self.role} {self.label!r}" if self.role != "batch_scale" else "1/N (mean over the batch)"
        shape = f" shape {out.shape}" if out.shape else ""
        per = ", per sample" if out.batched else ""
        if latex:
            return rf"\text{{{display_name(out.name, True)}: {what}{shape}{per}}}"
        return f"{out.name}: {what}{shape}{per}"


def leaf(b: Builder, role: str, label: str, shape: tuple[int, ...], batched: bool, *, kind: str = "real",
         init: object = None, classes: int = 0, name: str = "") -> Value:
    """A leaf value; ``name`` is the variable's base name, the label by default."""
    return b.apply(Leaf(role, label, init, classes, tuple(shape), batched, kind), (), name or label)
