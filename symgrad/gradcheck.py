"""The course notes' gradient check: central differences with a relative perturbation."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["gradcheck"]


def gradcheck(model: Any, theta: np.ndarray, *data: Any, eps: float = 1e-6,
              indices: Any = None, **named: Any) -> float:
    """Max relative error between the compiled gradient and central finite differences.

    Each parameter w is perturbed to w(1 +- eps) and A = (C+ - C-) / (2 eps w)
    (the course notes' algorithm); a parameter equal to 0 is perturbed by +-eps
    instead. The error of one entry is |A - G| / (|A| + |G|), 0 where both are 0.
    ``indices`` limits the check to some entries of theta (default: all).
    """
    theta = np.array(theta, dtype=np.float64)
    g = np.asarray(model.grad(theta, *data, **named), dtype=np.float64)
    idx = range(theta.size) if indices is None else np.asarray(indices).ravel()
    worst = 0.0
    for i in idx:
        w = theta[i]
        h = eps * abs(w) if w != 0 else eps
        tp, tm = theta.copy(), theta.copy()
        tp[i] = w + h
        tm[i] = w - h
        a = (model.loss(tp, *data, **named) - model.loss(tm, *data, **named)) / (2 * h)
        denom = abs(a) + abs(g[i])
        if denom > 0:
            worst = max(worst, abs(a - g[i]) / denom)
    return worst
