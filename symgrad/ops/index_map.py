"""Affine index maps: slicing, transposes, padding, concatenation, convolution and pooling windows.

One op reads its operand at indices affine in its own:
``out[o] = x[A o + c]`` where every index lies in ``x``'s bounds, else
``fill`` (zero padding; ``-inf`` for a max pool's padding). A slice
``x[1::2]`` is ``x[2 o + 1]``; a transpose permutes the rows of ``A``; a
pad shifts by ``-before``; a convolution's windows are
``x[c, s*i + d*p - pad]`` over the output axes ``(c, p, i)``, so the
convolution itself is an einsum of the windows with the weights, and the
einsum's rules differentiate it.

The op is linear in its operand. Its transpose, :class:`IndexScatter`,
adds each element of its operand into ``out[A o + c]`` (the elements that
fell out of bounds, nowhere): that is the adjoint, and the adjoint of the
scatter is the map again, as gather and scatter are each other's. Both
stay inside one sample, so a scatter needs no atomics on any target (each
sample's row is one thread's). The tangent of either is the same op on the
tangent (with fill 0: a padding constant has no tangent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..ir import Assign, Builder, IRError, Linearity, Op, Typed, Value, display_name

if TYPE_CHECKING:
    from ..autodiff import Pullback, Pushforward

__all__ = ["AxisMap", "Map", "IndexMap", "IndexScatter", "index_map", "index_scatter", "LOOP_NAMES"]

#: the names the derivation prints for a map's output axes
LOOP_NAMES = "ijklmnpqrstuvw"


@dataclass(frozen=True)
class AxisMap:
    """One axis of the source read at ``sum(coefs[j] * o[j]) + const`` over the output axes ``o``."""

    coefs: tuple[int, ...]
    const: int = 0

    def at(self, o: Sequence[Any]) -> Any:
        return sum((c * x for c, x in zip(self.coefs, o) if c), self.const)

    def text(self, names: Sequence[str]) -> str:
        parts = [(f"{c}*" if c not in (1, -1) else "-" if c == -1 else "") + n
                 for c, n in zip(self.coefs, names) if c]
        s = " + ".join(parts).replace("+ -", "- ")
        if self.const or not parts:
            s = f"{s} {'+' if self.const >= 0 else '-'} {abs(self.const)}" if parts else str(self.const)
        return s


@dataclass(frozen=True)
class Map:
    """``shape``: the output's per-sample shape; ``source``: the operand's; ``axes``: one
    :class:`AxisMap` per source axis, over the output axes."""

    shape: tuple[int, ...]
    source: tuple[int, ...]
    axes: tuple[AxisMap, ...]

    def __post_init__(self) -> None:
        if len(self.axes) != len(self.source) or any(len(a.coefs) != len(self.shape) for a in self.axes):
            raise IRError(f"index map: {len(self.axes)} axis maps over {len(self.shape)} output axes do not fit "
                          f"a source of shape {self.source} and an output of shape {self.shape}")
        if any(d <= 0 for d in self.shape + self.source):
            raise IRError(f"index map: empty shape {self.shape} or source {self.source}")

    def reach(self, k: int) -> tuple[int, int]:
        """The least and the largest index the map reads on source axis ``k``."""
        a = self.axes[k]
        lo = a.const + sum(min(0, c * (d - 1)) for c, d in zip(a.coefs, self.shape))
        hi = a.const + sum(max(0, c * (d - 1)) for c, d in zip(a.coefs, self.shape))
        return lo, hi

    def in_bounds_everywhere(self) -> bool:
        """Does every output element read inside the source (no bounds test needed)?"""
        return all(0 <= self.reach(k)[0] and self.reach(k)[1] < n for k, n in enumerate(self.source))

    def positions(self) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """The source index of every output element (each an array shaped like the output), and
        where it is in bounds."""
        grid = np.indices(self.shape)
        idx = tuple(np.asarray(a.at(list(grid)) + np.zeros(self.shape, dtype=int)) for a in self.axes)
        ok = np.ones(self.shape, dtype=bool)
        for i, n in zip(idx, self.source):
            ok &= (i >= 0) & (i < n)
        return idx, ok

    def text(self, x: str, out: str, batched: bool = False, names: Sequence[str] | None = None) -> str:
        """``out[o] = x[...]`` over the output axes ``names`` (the derivation's i, j, k, ... by default)."""
        names = list(names if names is not None else LOOP_NAMES[:len(self.shape)])
        lead = ["b"] if batched else []
        lhs = f"{out}[{', '.join(lead + names)}]" if names or lead else out
        src = lead + [a.text(names) for a in self.axes]
        rhs = f"{x}[{', '.join(src)}]" if src else x
        return f"{lhs} = {rhs}"


def _check(op: str, arg: Typed, shape: tuple[int, ...]) -> None:
    if arg.kind != "real" or arg.shape != shape:
        raise IRError(f"{op}: operand {arg.name} of shape {arg.shape} ({arg.kind}) does not match the map's "
                      f"{shape}")


@dataclass(frozen=True)
class IndexMap(Op):
    """``out[o] = x[A o + c]`` in bounds, ``fill`` elsewhere (see the module docstring)."""

    map: Map
    fill: float = 0.0

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        (x,) = args
        _check("index map", x, self.map.source)
        return self.map.shape, x.batched, "real"

    def simplify(self, b: Builder, args: tuple[Value, ...]) -> Value | tuple[Op, tuple[Value, ...]]:
        m = self.map
        identity = m.shape == m.source and all(
            a.const == 0 and a.coefs == tuple(int(j == k) for j in range(len(m.shape))) for k, a in enumerate(m.axes))
        return args[0] if identity else (self, args)

    def vjp(self, pb: Pullback, a: Assign, g: Value) -> None:
        (x,) = a.args
        if pb.is_active(x):
            pb.add(x, index_scatter(pb.b, f"d_{x.name}", g, self.map, note=f"d {a.out.name} / d {x.name}"))

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        if tangents[0] is None:
            return None
        return index_map(pf.b, f"t_{a.out.name}", tangents[0], self.map, note=f"tangent of {a.out.name}")

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        return args[0]

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        (x,) = args
        idx, ok = self.map.positions()
        safe = tuple(np.where(ok, i, 0) for i in idx)
        lead = (slice(None),) if a.out.batched else ()
        vals = np.asarray(x)[lead + safe] if safe else np.asarray(x)
        return np.where(ok, vals, self.fill)

    def format(self, a: Assign, latex: bool) -> str:
        text = self.map.text(display_name(a.args[0].name, latex), display_name(a.out.name, latex), a.out.batched)
        pad = "" if self.map.in_bounds_everywhere() else f"  ({self.fill:g} out of bounds)"
        return text + pad


@dataclass(frozen=True)
class IndexScatter(Op):
    """The transpose of :class:`IndexMap`: ``out = 0; out[A o + c] += g[o]`` for the ``o`` in bounds."""

    map: Map

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        (g,) = args
        _check("index scatter", g, self.map.shape)
        return self.map.source, g.batched, "real"

    def vjp(self, pb: Pullback, a: Assign, g: Value) -> None:
        (x,) = a.args
        if pb.is_active(x):
            pb.add(x, index_map(pb.b, f"d_{x.name}", g, self.map, note=f"d {a.out.name} / d {x.name}"))

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        if tangents[0] is None:
            return None
        return index_scatter(pf.b, f"t_{a.out.name}", tangents[0], self.map, note=f"tangent of {a.out.name}")

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        return args[0]

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        (g,) = args
        idx, ok = self.map.positions()
        at = tuple(i[ok] for i in idx)
        if a.out.batched:
            out = np.zeros((n,) + self.map.source)
            np.add.at(out, (slice(None),) + at, np.broadcast_to(g, (n,) + self.map.shape)[:, ok])
        else:
            out = np.zeros(self.map.source)
            np.add.at(out, at, np.asarray(g)[ok])
        return out

    def format(self, a: Assign, latex: bool) -> str:
        names = list(LOOP_NAMES[:len(self.map.shape)])
        lead = ["b"] if a.out.batched else []
        out, g = display_name(a.out.name, latex), display_name(a.args[0].name, latex)
        at = ", ".join(lead + [ax.text(names) for ax in self.map.axes])
        src = f"{g}[{', '.join(lead + names)}]" if names or lead else g
        return f"{out} = 0; {out}[{at}] += {src}  (for every {', '.join(names) or 'element'} in bounds)"


def index_map(b: Builder, name: str, x: Value, m: Map, fill: float = 0.0, note: str = "") -> Value:
    return b.apply(IndexMap(m, float(fill)), (x,), name, note)


def index_scatter(b: Builder, name: str, g: Value, m: Map, note: str = "") -> Value:
    return b.apply(IndexScatter(m), (g,), name, note)
