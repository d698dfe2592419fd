"""Elementwise ops: a SymPy expression of scalars applied element by element.

Arithmetic, activations and the pointwise parts of losses are all this one op.
Its derivative rules are the only place SymPy differentiates: the partials of
the small scalar expression, rewritten in terms of the op's stored output
where they contain it (tanh' = 1 - tanh^2, sigmoid' = s(1-s)), so the backward
pass reuses the forward value instead of recomputing it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import sympy as sp

from ..ir import (BATCH, CONSTANT, CURVED, Assign, Builder, IRError, Linearity, Op, Typed, Value,
                  arg_symbols, display_name)

if TYPE_CHECKING:
    from ..autodiff import Pullback, Pushforward

__all__ = ["ScalarFn", "Elementwise", "elementwise", "constant", "add", "elementwise_partials",
           "DerivativeError"]


class DerivativeError(IRError):
    """SymPy could not differentiate an expression; names the op."""


@dataclass(frozen=True)
class ScalarFn:
    """A scalar SymPy expression in the symbols ``a0..a{k-1}`` (one per argument)."""

    name: str
    expr: sp.Expr
    arity: int

    def __str__(self) -> str:
        return self.name


def broadcast_shape(name: str, args: Sequence[Typed]) -> tuple[int, ...]:
    """The common shape of ``args``; only scalars broadcast."""
    shapes = {a.shape for a in args if a.shape != ()}
    if len(shapes) > 1:
        detail = ", ".join(f"{a.name}{a.shape}" for a in args)
        raise IRError(f"{name}: shapes do not broadcast ({detail}); only scalars broadcast")
    return shapes.pop() if shapes else ()


def _clean(expr: sp.Expr) -> sp.Expr:
    """Drop DiracDelta terms: they vanish almost everywhere (relu'' = 0)."""
    if expr.has(sp.DiracDelta):
        expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    return expr


@lru_cache(maxsize=4096)
def elementwise_partials(name: str, expr: sp.Expr, arity: int) -> tuple[sp.Expr, ...]:
    """d expr / d a_i for each argument, in a0..a{k-1} and a{k}, which stands for the op's output.

    Cached: the gradient, tangent and Gauss-Newton passes ask for the same partials.
    """
    syms = arg_symbols(arity + 1)
    out = syms[arity]
    res = []
    for s in syms[:arity]:
        try:
            d = _clean(sp.diff(expr, s))
        except Exception as e:  # SymPy raises many types for undifferentiable input
            raise DerivativeError(f"elementwise {name!r}: SymPy cannot differentiate {expr} "
                                  f"with respect to {s}: {e}") from e
        if d.has(sp.Derivative, sp.Subs):
            raise DerivativeError(f"elementwise {name!r}: derivative of {expr} with respect to {s} "
                                  f"is not closed-form ({d}); define the function with its own fdiff")
        if not (expr.is_Symbol or expr.is_Number):
            d = d.subs(expr, out)
        res.append(d)
    return tuple(res)


def _index(shape: tuple[int, ...], batched: bool) -> str:
    parts = ([BATCH] if batched else []) + list("ijklmnpqrs"[:len(shape)])
    return f"[{','.join(parts)}]" if parts else ""


@dataclass(frozen=True)
class Elementwise(Op):
    """``fn`` applied element by element; ``shape`` is the result's (scalar arguments broadcast,
    and an argument the expression ignores may have been dropped)."""

    fn: ScalarFn
    shape: tuple[int, ...] = ()

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        for x in args:
            if x.kind != "real":
                raise IRError(f"{self.fn.name}: {x.name} holds integer indices, not numbers")
        if broadcast_shape(self.fn.name, args) not in ((), self.shape):
            raise IRError(f"{self.fn.name}: arguments of shapes {[x.shape for x in args]} do not give "
                          f"{self.shape}")
        return self.shape, any(x.batched for x in args), "real"

    def simplify(self, b: Builder, args: tuple[Value, ...]) -> Value | tuple[Op, tuple[Value, ...]]:
        """Constants folded into the expression, ignored arguments dropped, identity removed."""
        expr = self.fn.expr
        subs, keep = {}, []
        for s, a in zip(arg_symbols(len(args)), args):
            c = b.constant_of(a)
            if c is not None:
                subs[s] = c
            elif s in expr.free_symbols:
                keep.append((s, a))
        if subs:
            expr = expr.xreplace(subs)
        new_syms = arg_symbols(len(keep))   # renumbered a0..a{m-1}
        expr = expr.xreplace({s: n for (s, _), n in zip(keep, new_syms)})
        kept = tuple(a for _, a in keep)
        if len(kept) == 1 and expr == new_syms[0] and kept[0].shape == self.shape:
            return kept[0]
        return Elementwise(ScalarFn(self.fn.name, expr, len(kept)), self.shape), kept

    def naming(self, label: str) -> tuple[str, str]:
        return self.fn.name, label

    def constant_value(self) -> sp.Expr | None:
        return self.fn.expr if self.fn.arity == 0 else None

    def vjp(self, pb: Pullback, a: Assign, g: Value) -> None:
        args = a.args
        g_s = arg_symbols(len(args) + 2)[-1]  # a0..a{k-1} args, a{k} the output, then g
        for i, d in enumerate(elementwise_partials(self.fn.name, self.fn.expr, len(args))):
            x = args[i]
            if not pb.is_active(x) or d == 0:
                continue
            contrib = g if d == 1 else elementwise(pb.b, f"d_{x.name}", g_s * d, args + (a.out, g),
                                                   note=f"d {a.out.name} / d {x.name}")
            pb.add(x, contrib)

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        """sum_i d f / d a_i * tangent_i, one elementwise op."""
        args = a.args
        live = [i for i, t in enumerate(tangents) if t is not None]
        partials = elementwise_partials(self.fn.name, self.fn.expr, len(args))
        tan_syms = arg_symbols(len(args) + 1 + len(live))[len(args) + 1:]
        expr = sp.Add(*(partials[i] * s for i, s in zip(live, tan_syms)))
        if expr == 0:
            return None
        return elementwise(pf.b, f"t_{a.out.name}", expr, args + (a.out,) + tuple(tangents[i] for i in live),
                           note=f"tangent of {a.out.name} = {self.fn.name}")

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        syms = arg_symbols(len(args))
        live = [i for i, x in enumerate(args) if x.degree > 0]
        if not live:
            return CONSTANT
        worst = max((args[i] for i in live), key=lambda x: x.degree)
        if worst.degree == 3:
            return CURVED
        firsts = {i: _clean(sp.diff(self.fn.expr, syms[i])) for i in live}
        if any(_clean(sp.diff(firsts[i], syms[j])) != 0 for i in live for j in live):
            return CURVED
        varying = {syms[i] for i in live}
        if all(not (d.free_symbols & varying) for d in firsts.values()):
            return worst   # affine in the varying arguments
        where = f" in {a.note}" if a.note and a.note != self.fn.name else ""
        return Linearity(2, worst.kink or f"{self.fn.name}{where}")

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        # a per-sample scalar meets per-sample arrays: its batch axis first, the rest broadcast
        vals = [np.reshape(v, (n,) + (1,) * len(self.shape)) if x.batched and not x.shape and self.shape
                else np.asarray(v) for v, x in zip(args, a.args)]
        out = _numpy_fn(self.fn.expr, self.fn.arity)(*vals)
        return np.broadcast_to(out, ((n,) if a.out.batched else ()) + self.shape).astype(float)

    def format(self, a: Assign, latex: bool) -> str:
        syms = arg_symbols(len(a.args))
        out = a.out
        if latex:
            names = {s: r"\mathrm{" + display_name(x.name, True) + "}" for s, x in zip(syms, a.args)}
            lhs = r"\mathrm{" + display_name(out.name, True) + "}"
            return f"{lhs} = {sp.latex(self.fn.expr, symbol_names=names)}"
        sub = {s: sp.Symbol(x.name + _index(x.shape, x.batched)) for s, x in zip(syms, a.args)}
        return f"{out.name}{_index(out.shape, out.batched)} = {sp.sstr(self.fn.expr.xreplace(sub))}"

    def mean_through(self, b: Builder, means: Callable[[int], Value], values: Callable[[int], Value],
                     note: str) -> Value | None:
        """An affine expression with constant coefficients commutes with the mean over the batch:
        a penalty added to the loss is then not summed N times and divided by N again."""
        syms = arg_symbols(self.fn.arity)
        if any(sp.diff(self.fn.expr, s).free_symbols for s in syms):
            return None
        return elementwise(b, "objective", self.fn.expr, tuple(means(k) for k in range(len(syms))), note=note)


@lru_cache(maxsize=1024)
def _numpy_fn(expr: sp.Expr, arity: int) -> Callable[..., Any]:
    """``expr`` as a NumPy function; symgrad's stable functions by their SymPy class names."""
    stable = {"Sigmoid": lambda x: 0.5 * (1 + np.tanh(x / 2)),
              "Softplus": lambda x: np.logaddexp(0, x),
              "Xlogy": lambda x, y: np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y))),
              "Heaviside": lambda x, *h: np.where(x > 0, 1.0, 0.0), "DiracDelta": lambda x: 0 * x}
    return sp.lambdify(arg_symbols(arity), expr, modules=[stable, "numpy"])


def elementwise(b: Builder, name: str, expr: sp.Expr, args: tuple[Value, ...], note: str = "") -> Value:
    """``expr`` in a0..a{k-1} applied to ``args`` (constants among them are folded into it)."""
    return b.apply(Elementwise(ScalarFn(name, sp.sympify(expr), len(args)), broadcast_shape(name, args)),
                   args, name, note)


def constant(b: Builder, value: sp.Expr | float, name: str = "const") -> Value:
    """A compile-time constant scalar."""
    return elementwise(b, name, sp.sympify(value), ())


def add(b: Builder, parts: Sequence[Value], name: str, note: str = "") -> Value:
    """The sum of ``parts`` (one of them alone is returned as is)."""
    if len(parts) == 1:
        return parts[0]
    return elementwise(b, name, sp.Add(*arg_symbols(len(parts))), tuple(parts), note)
