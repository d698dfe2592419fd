"""Line searches shared by the quasi-Newton, conjugate-gradient and Newton methods.

Both work on phi(a) = f(theta + a p). ``armijo`` asks only for values
(cheaper: a loss kernel per trial) and evaluates the gradient once, at the
accepted step. ``strong_wolfe`` is Nocedal & Wright's Algorithms 3.5 / 3.6
(bracketing, then zoom by safeguarded cubic interpolation); its curvature
condition keeps BFGS and L-BFGS updates positive definite. A non-finite trial
value counts as "too large": the search shrinks the step instead of failing,
which is what keeps a diverging run from returning NaN.

Near a minimum f stops resolving decreases (f - f* falls to rounding
level while the gradient is still 1e-9), so sufficient decrease may be shown
by the derivative instead: Hager and Zhang's approximate Wolfe condition,
f <= f0 + eps |f0| and f'(a) <= (2 c1 - 1) f'(0), eps = 1e-10.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["LineSearchResult", "armijo", "strong_wolfe", "LINE_SEARCHES"]

LINE_SEARCHES = ("armijo", "strong_wolfe")

#: phi(a) -> f(theta + a p); dphi(a) -> (f, g) at theta + a p
Value = Callable[[float], float]
ValueGrad = Callable[[float], "tuple[float, np.ndarray]"]


@dataclass(frozen=True)
class LineSearchResult:
    """The accepted step, f and g there, trials made; ``ok`` False: no acceptable step found
    (``step`` is then 0 and f, g those of the starting point)."""

    step: float
    f: float
    g: np.ndarray
    trials: int
    ok: bool


def armijo(phi: Value, value_grad: ValueGrad, f0: float, g0: np.ndarray, slope: float, step: float = 1.0,
           c1: float = 1e-4, shrink: float = 0.5, max_trials: int = 40) -> LineSearchResult:
    """Backtracking: the first of step, step*shrink, ... with f <= f0 + c1 * a * slope."""
    if not slope < 0:
        return LineSearchResult(0.0, f0, g0, 0, False)
    a = step
    for trial in range(1, max_trials + 1):
        f = phi(a)
        if math.isfinite(f) and f <= f0 + c1 * a * slope:
            f, g = value_grad(a)
            return LineSearchResult(a, f, g, trial, True)
        a *= shrink
    return LineSearchResult(0.0, f0, g0, max_trials, False)


def _cubic_min(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float | None:
    """Minimizer of the cubic interpolating f and f' at a and b (N&W eq. 3.59), None if undefined."""
    d1 = da + db - 3 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if not (disc >= 0 and math.isfinite(disc)):
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    den = db - da + 2 * d2
    if den == 0:
        return None
    x = b - (b - a) * (db + d2 - d1) / den
    return x if math.isfinite(x) else None


def strong_wolfe(value_grad: ValueGrad, direction: np.ndarray, f0: float, g0: np.ndarray, step: float = 1.0,
                 c1: float = 1e-4, c2: float = 0.9, max_trials: int = 30,
                 step_max: float = 1e20) -> LineSearchResult:
    """A step with f <= f0 + c1 a d0 and |f'(a)| <= c2 |d0|, d0 = g0 . p < 0."""
    d0 = float(g0 @ direction)
    if not d0 < 0:
        return LineSearchResult(0.0, f0, g0, 0, False)
    trials = 0
    best: tuple[float, float, np.ndarray] | None = None   # lowest value with sufficient decrease
    noise = 1e-10 * abs(f0)

    def decreased(a: float, f: float, d: float) -> bool:
        return f <= f0 + c1 * a * d0 or (f <= f0 + noise and d <= (2 * c1 - 1) * d0)

    def probe(a: float) -> tuple[float, float, np.ndarray]:
        nonlocal trials, best
        trials += 1
        f, g = value_grad(a)
        if not (math.isfinite(f) and np.all(np.isfinite(g))):
            return math.inf, math.nan, g
        d = float(g @ direction)
        if decreased(a, f, d) and (best is None or f < best[1]):
            best = (a, f, g)
        return f, d, g

    def zoom(lo: float, f_lo: float, d_lo: float, hi: float, f_hi: float, d_hi: float) -> LineSearchResult:
        while trials < max_trials:
            width = hi - lo
            a = _cubic_min(lo, f_lo, d_lo, hi, f_hi, d_hi) if math.isfinite(f_hi) else None
            lo_b, hi_b = sorted((lo + 0.1 * width, hi - 0.1 * width))
            if a is None or not lo_b <= a <= hi_b:
                a = lo + 0.5 * width
            f, d, g = probe(a)
            if not decreased(a, f, d) or (f >= f_lo and not f <= f0 + noise):
                hi, f_hi, d_hi = a, f, d
            else:
                if abs(d) <= -c2 * d0:
                    return LineSearchResult(a, f, g, trials, True)
                if d * (hi - lo) >= 0:
                    hi, f_hi, d_hi = lo, f_lo, d_lo
                lo, f_lo, d_lo = a, f, d
            if abs(hi - lo) <= 1e-16 * max(abs(lo), abs(hi), 1.0):
                break
        return _fallback()

    def _fallback() -> LineSearchResult:
        # no step met both conditions in the budget: take the best sufficient decrease, if any
        if best is not None:
            return LineSearchResult(best[0], best[1], best[2], trials, True)
        return LineSearchResult(0.0, f0, g0, trials, False)

    a_prev, f_prev, d_prev = 0.0, f0, d0
    a = min(step, step_max)
    while trials < max_trials:
        f, d, g = probe(a)
        if not decreased(a, f, d) or (trials > 1 and f >= f_prev and not f <= f0 + noise):
            return zoom(a_prev, f_prev, d_prev, a, f, d)
        if abs(d) <= -c2 * d0:
            return LineSearchResult(a, f, g, trials, True)
        if d >= 0:
            return zoom(a, f, d, a_prev, f_prev, d_prev)
        if a >= step_max:
            break
        a_prev, f_prev, d_prev = a, f, d
        a = min(2 * a, step_max)
    return _fallback()
