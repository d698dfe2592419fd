"""Index ops over the last axis: argmax, gather (``v[..., idx]``) and its adjoint scatter.

They carry max (gather at the argmax, over any axis moved last; a max pool's
windows), class labels (gather at the label) and log-sum-exp's shift. The
leading axes are elementwise: ``idx`` has ``v``'s shape without its last axis
(or is a scalar, as a label picking from a vector). The index is never
differentiated: gather and scatter are linear in their real argument and
transpose into each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..ir import CONSTANT, Assign, Builder, IRError, Linearity, Op, Typed, Value, display_name

if TYPE_CHECKING:
    from ..autodiff import Pullback, Pushforward

__all__ = ["ArgMax", "Gather", "Scatter", "argmax", "gather", "scatter"]


def _switching(index: Linearity, value: Linearity) -> Linearity:
    """A selection at an index that moves with the parameters is piecewise in them."""
    if index.degree == 0:
        return value
    return Linearity(max(value.degree, 2), value.kink or index.kink)


@dataclass(frozen=True)
class ArgMax(Op):
    """Index of the largest element along the last axis (the first one on ties)."""

    differentiable = False

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        (x,) = args
        if not x.shape or x.kind != "real":
            raise IRError(f"argmax: {x.name} of shape {x.shape} is not a real tensor with an axis")
        return x.shape[:-1], x.batched, "index"

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        return None

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        return Linearity(2, f"max over {a.args[0].name}") if args[0].degree else CONSTANT

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        return np.argmax(args[0], axis=-1)

    def format(self, a: Assign, latex: bool) -> str:
        return f"{display_name(a.out.name, latex)} = argmax({display_name(a.args[0].name, latex)})"


@dataclass(frozen=True)
class Gather(Op):
    """``v[..., idx]``: the element of each last-axis vector of v its index picks."""

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        v, idx = args
        if not v.shape or v.kind != "real" or idx.kind != "index" or idx.shape not in ((), v.shape[:-1]):
            raise IRError(f"gather: {v.name}{v.shape} at {idx.name}{idx.shape} needs a real tensor and an "
                          "index shaped like it without its last axis (or a scalar index)")
        return v.shape[:-1], v.batched or idx.batched, "real"

    def vjp(self, pb: Pullback, a: Assign, g: Value) -> None:
        v, idx = a.args
        if pb.is_active(v):
            pb.add(v, scatter(pb.b, f"d_{v.name}", g, idx, v.shape[-1], note=f"d {a.out.name} / d {v.name}"))

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        if tangents[0] is None:
            return None
        return gather(pf.b, f"t_{a.out.name}", tangents[0], a.args[1], note=f"tangent of {a.out.name}")

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        return _switching(args[1], args[0])

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        v, idx = np.asarray(args[0]), np.asarray(args[1])
        lead = (n,) if a.out.batched else ()
        v = np.broadcast_to(v, lead + a.args[0].shape)
        idx = np.broadcast_to(idx, lead + a.out.shape)
        return np.take_along_axis(v, idx[..., None], -1)[..., 0]

    def format(self, a: Assign, latex: bool) -> str:
        return f"{display_name(a.out.name, latex)} = {display_name(a.args[0].name, latex)}[{display_name(a.args[1].name, latex)}]"


@dataclass(frozen=True)
class Scatter(Op):
    """A new last axis of length ``size``, zero but for ``a`` at position ``idx`` (elementwise
    over the leading axes)."""

    size: int

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        x, idx = args
        if x.kind != "real" or idx.kind != "index" or idx.shape not in ((), x.shape):
            raise IRError(f"scatter: {x.name}{x.shape} at {idx.name}{idx.shape} needs a real tensor and an "
                          "index of its shape (or a scalar index)")
        return x.shape + (self.size,), x.batched or idx.batched, "real"

    def vjp(self, pb: Pullback, a: Assign, g: Value) -> None:
        x, idx = a.args
        if pb.is_active(x):
            pb.add(x, gather(pb.b, f"d_{x.name}", g, idx, note=f"d {a.out.name} / d {x.name}"))

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        if tangents[0] is None:
            return None
        return scatter(pf.b, f"t_{a.out.name}", tangents[0], a.args[1], self.size,
                       note=f"tangent of {a.out.name}")

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        return _switching(args[1], args[0])

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        x, idx = args
        lead = (n,) if a.out.batched else ()
        return np.where(np.arange(self.size) == np.reshape(idx, np.shape(idx) + (1,)),
                        np.reshape(x, np.shape(x) + (1,)), 0.0) * np.ones(lead + a.out.shape)

    def format(self, a: Assign, latex: bool) -> str:
        n = display_name(a.out.name, latex)
        return f"{n} = onehot({display_name(a.args[1].name, latex)}, {self.size}) * {display_name(a.args[0].name, latex)}"


def argmax(b: Builder, name: str, v: Value) -> Value:
    return b.apply(ArgMax(), (v,), name)


def gather(b: Builder, name: str, v: Value, idx: Value, note: str = "") -> Value:
    return b.apply(Gather(), (v, idx), name, note)


def scatter(b: Builder, name: str, a: Value, idx: Value, size: int, note: str = "") -> Value:
    return b.apply(Scatter(size), (a, idx), name, note)

