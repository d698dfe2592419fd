"""SymPy -> Numba-compilable Python expressions.

A ``PythonCodePrinter`` (``math.*`` calls) with the rules Numba needs:
conditionals for Heaviside/sign/Piecewise, calls to the stable helpers of
``symgrad.runtime`` for the functions of ``symgrad.functions``, and every
literal typed in the kernel's float type so float32 kernels stay float32.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from symgrad.functions import STABLE_FUNCTIONS, stable_inline

__all__ = ["NumbaPrinter", "CudaPrinter", "PrintError"]


class PrintError(ValueError):
    """An expression that has no Numba form; names the function."""


class NumbaPrinter(PythonCodePrinter):
    """Prints scalar expressions for ``@njit`` code; ``float_type`` is 'float64' or 'float32'."""

    def __init__(self, float_type: str = "float64") -> None:
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self.float_type = float_type

    def _lit(self, value: float) -> str:
        text = repr(float(value))
        if text in ("inf", "-inf", "nan"):
            text = f"math.{text.lstrip('-')}" if text != "-inf" else "-math.inf"
        return text if self.float_type == "float64" else f"np.float32({text})"

    def _print_Float(self, expr: sp.Float) -> str:
        return self._lit(float(expr))

    def _print_Integer(self, expr: sp.Integer) -> str:
        return str(int(expr)) if self._ints else self._lit(int(expr))

    _ints = False

    def doprint_test(self, expr: sp.Basic) -> str:
        """A test: integers stay integers (an index map's bounds over loop variables)."""
        self._ints = True
        try:
            return self.doprint_expr(expr)
        finally:
            self._ints = False

    def _print_Rational(self, expr: sp.Rational) -> str:
        return self._lit(float(expr))

    def _print_NumberSymbol(self, expr: sp.Expr) -> str:
        return self._lit(float(expr.evalf(20)))

    _print_Exp1 = _print_NumberSymbol
    _print_Pi = _print_NumberSymbol
    _print_EulerGamma = _print_NumberSymbol

    def _print_Half(self, expr: sp.Expr) -> str:
        return self._lit(0.5)

    def _print_Infinity(self, expr: sp.Expr) -> str:
        return self._lit(float("inf"))

    def _print_NegativeInfinity(self, expr: sp.Expr) -> str:
        return self._lit(float("-inf"))

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, e = expr.as_base_exp()
        b = self.parenthesize(base, 61)  # tighter than ** (precedence of Pow is 60)
        if e.is_Integer:
            n = int(e)
            if n == 2:
                return f"({b}*{b})"
            if n == -1:
                return f"({self._lit(1)}/{b})"
            return f"{b}**{n}"
        if e == sp.Rational(1, 2):
            return f"math.sqrt({self._print(base)})"
        if e == -sp.Rational(1, 2):
            return f"({self._lit(1)}/math.sqrt({self._print(base)}))"
        return f"{b}**{self.parenthesize(e, 61)}"

    def _print_Heaviside(self, expr: sp.Expr) -> str:
        # H(0) = 0: the subgradient PyTorch uses at kinks
        return f"({self._lit(1)} if {self._print(expr.args[0])} > 0 else {self._lit(0)})"

    def _print_DiracDelta(self, expr: sp.Expr) -> str:
        return self._lit(0)

    def _print_sign(self, expr: sp.Expr) -> str:
        a = self._print(expr.args[0])
        return f"({self._lit(1)} if {a} > 0 else ({self._lit(-1)} if {a} < 0 else {self._lit(0)}))"

    def _print_tanh(self, expr: sp.Expr) -> str:
        # symgrad.runtime.tanh_f64 / tanh_f32: libm-free, so the loop around it vectorizes
        return f"tanh_{'f32' if self.float_type == 'float32' else 'f64'}({self._print(expr.args[0])})"

    def _print_Abs(self, expr: sp.Expr) -> str:
        return f"abs({self._print(expr.args[0])})"

    def _print_Max(self, expr: sp.Expr) -> str:
        return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Min(self, expr: sp.Expr) -> str:
        return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        out = ""
        closing = 0
        for value, cond in expr.args:
            if cond == sp.true:
                out += self._print(value)
                break
            out += f"({self._print(value)} if {self._print(cond)} else "
            closing += 1
        else:
            out += self._lit(float("nan"))
        return out + ")" * closing

    def _print_Function(self, expr: sp.Expr) -> str:
        helper = STABLE_FUNCTIONS.get(type(expr))
        if helper is not None:
            return f"{helper}(" + ", ".join(self._print(a) for a in expr.args) + ")"
        return super()._print_Function(expr)

    def _print_not_supported(self, expr: sp.Expr) -> str:
        raise PrintError(f"no Numba form for {type(expr).__name__} in {expr}")

    def doprint_expr(self, expr: sp.Expr) -> str:
        """Print ``expr``; raise PrintError naming what Numba cannot evaluate.

        Constant subexpressions (sqrt(2), pi/2) are evaluated to literals first.
        """
        expr = sp.sympify(expr).replace(
            lambda e: e.is_number and not e.is_Rational and not e.is_Atom and e.is_real,
            lambda e: sp.Float(e.evalf(20)))
        text = self.doprint(expr)
        if self._not_supported:
            bad = ", ".join(sorted(str(e) for e in self._not_supported))
            self._not_supported.clear()
            raise PrintError(f"no Numba form for {bad}")
        return text


class CudaPrinter(NumbaPrinter):
    """Prints for ``@cuda.jit`` kernels: libdevice's ``math`` functions and the stable
    functions written inline (a CUDA kernel calls no CPU helper); float32 literals as
    ``float32(...)`` (numba's type, imported by the generated module)."""

    def _lit(self, value: float) -> str:
        text = super()._lit(value)
        return text.replace("np.float32(", "float32(")

    def _print_tanh(self, expr: sp.Expr) -> str:
        return f"math.tanh({self._print(expr.args[0])})"

    def doprint_expr(self, expr: sp.Expr) -> str:
        return super().doprint_expr(stable_inline(sp.sympify(expr)))
