"""Numerically stable scalar functions as SymPy ``Function`` subclasses.

SymPy's raw forms are unstable in floating point (``1/(1+exp(-x))`` gives nan
for its derivative at x=-800, ``log(1+exp(x))`` overflows), so the functions
here carry their own ``fdiff`` (SymPy still derives every higher derivative)
and are printed as calls to stable helpers in :mod:`symgrad.runtime`.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["Sigmoid", "Softplus", "Xlogy", "STABLE_FUNCTIONS", "stable_inline", "positive_part", "clamped_log"]


class Sigmoid(sp.Function):
    """Logistic function 1/(1+exp(-x)), evaluated without overflow."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        s = Sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, x: sp.Expr, **kwargs: object) -> sp.Expr:
        return 1 / (1 + sp.exp(-x))

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return (1 / (1 + sp.exp(-self.args[0])))._eval_evalf(prec)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


class Softplus(sp.Function):
    """log(1 + exp(x)), evaluated as max(x, 0) + log1p(exp(-|x|))."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return Sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, x: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.log(1 + sp.exp(x))

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return sp.log(1 + sp.exp(self.args[0]))._eval_evalf(prec)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


class Xlogy(sp.Function):
    """x*log(y) with the convention 0*log(0) = 0 (as scipy.special.xlogy)."""

    nargs = 2

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x, y = self.args
        return sp.log(y) if argindex == 1 else x / y

    def _eval_rewrite_as_log(self, x: sp.Expr, y: sp.Expr, **kwargs: object) -> sp.Expr:
        return x * sp.log(y)

    def _eval_evalf(self, prec: int) -> sp.Expr:
        x, y = self.args
        return (x * sp.log(y))._eval_evalf(prec)


#: SymPy function class -> name of its Numba helper in symgrad.runtime
STABLE_FUNCTIONS: dict[type, str] = {Sigmoid: "sigmoid", Softplus: "softplus", Xlogy: "xlogy"}


def stable_inline(expr: sp.Expr) -> sp.Expr:
    """``expr`` with the stable functions written out as the same branches the runtime helpers
    take, for targets that print expressions inline (CUDA kernels call no helper functions)."""
    def sigmoid(x: sp.Expr) -> sp.Expr:
        return sp.Piecewise((1 / (1 + sp.exp(-x)), x >= 0), (sp.exp(x) / (1 + sp.exp(x)), True))

    def softplus(x: sp.Expr) -> sp.Expr:
        from sympy.codegen.cfunctions import log1p
        return sp.Max(x, 0) + log1p(sp.exp(-sp.Abs(x)))

    def xlogy(x: sp.Expr, y: sp.Expr) -> sp.Expr:
        return sp.Piecewise((0 * y, sp.Eq(x, 0)), (x * sp.log(y), True))

    return expr.replace(Sigmoid, sigmoid).replace(Softplus, softplus).replace(Xlogy, xlogy)


def positive_part(x: sp.Expr) -> sp.Expr:
    """max(x, 0) as a Piecewise, whose derivative at the kink is 0 (PyTorch's relu convention)."""
    return sp.Piecewise((x, x > 0), (0, True))


def clamped_log(p: sp.Expr) -> sp.Expr:
    """log(p) clamped below at -100, PyTorch's BCELoss convention."""
    return sp.Piecewise((sp.log(p), p > sp.exp(-100)), (-100, True))
