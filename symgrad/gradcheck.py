"""The course notes' gradient check: central differences, error |A - G| / (|A| + |G|)."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["gradcheck"]


def gradcheck(model: Any, theta: np.ndarray, *data: Any, eps: float = 1e-6,
              indices: Any = None, **named: Any) -> float:
    """Max error between the compiled gradient G and central finite differences A.

    The course notes perturb each parameter w to w(1 +- eps) and take
    A = (C+ - C-) / (2 eps w), with the error |A - G| / (|A| + |G|) per entry.
    A purely relative step rounds the loss difference to zero for small
    weights (w ~ 1e-4 moves C by ~1e-10 of itself), and one of 0 is no step,
    so the step here is absolute plus relative, h = eps (1 + |w|): the notes'
    step for large weights, eps for small ones. An entry whose |A| + |G| is
    below the rounding error of the difference quotient itself (a dead relu's
    exact zero against finite-difference noise) counts as agreeing; the error
    measure is otherwise the notes'. ``indices`` limits the check to some
    entries of theta (default: all).
    """
    theta = np.array(theta, dtype=np.float64)
    g = np.asarray(model.grad(theta, *data, **named), dtype=np.float64)
    idx = range(theta.size) if indices is None else np.asarray(indices).ravel()
    unit = float(np.finfo(getattr(model, "dtype", np.float64)).eps)
    worst = 0.0
    for i in idx:
        w = theta[i]
        h = eps * (1.0 + abs(w))
        tp, tm = theta.copy(), theta.copy()
        tp[i] = w + h
        tm[i] = w - h
        cp, cm = model.loss(tp, *data, **named), model.loss(tm, *data, **named)
        a = (cp - cm) / (2 * h)
        noise = 4 * unit * (abs(cp) + abs(cm)) / (2 * h)   # rounding of C+ - C-, over 2h
        denom = abs(a) + abs(g[i])
        if denom > noise:
            worst = max(worst, abs(a - g[i]) / denom)
    return worst
