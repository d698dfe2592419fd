"""Methods that build curvature from gradients alone: BFGS, L-BFGS, nonlinear conjugate gradient.

All three take their steps by strong-Wolfe line search (the curvature
condition keeps y.s > 0, so the BFGS updates stay positive definite), and
try the step 1 (quasi-Newton) or the previous step's decrease (CG) first,
as Nocedal & Wright recommend. The very first trial step is 1/||g||, as
scipy does, so the first step's length does not depend on the gradient's
scale.
"""
from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

import numpy as np

from .base import LineSearchMethod

__all__ = ["BFGS", "LBFGS", "CG"]

_SEARCH = {"line_search": "strong_wolfe", "c1": 1e-4, "c2": 0.9}


def _first_step(g: np.ndarray) -> float:
    return min(1.0, 1.0 / max(float(np.linalg.norm(g)), 1e-300))


class BFGS(LineSearchMethod):
    """BFGS on the inverse Hessian (the course's update):
    Hinv <- (I - rho s y^T) Hinv (I - rho y s^T) + rho s s^T, rho = 1 / y^T s,
    with Hinv scaled by y^T s / y^T y before the first update (N&W eq. 6.20)."""

    name = "bfgs"
    defaults: ClassVar[dict[str, Any]] = {**_SEARCH}

    def _setup(self) -> None:
        self._check_search()
        self.state["hinv"] = np.eye(self.model.n_params, dtype=self.theta.dtype, like=self.theta)
        self.state["updates"] = 0

    def step(self) -> float:
        _, g = self._value_and_grad()
        hinv = self.state["hinv"]
        first = self.t == 0
        theta = self.theta
        f = self._search(-(hinv @ g), _first_step(g) if first else 1.0)
        _, g_new = self._value_and_grad()
        s, y = self.theta - theta, g_new - g
        ys = float(y @ s)
        if ys > 1e-10 * np.linalg.norm(s) * np.linalg.norm(y):   # else skip: keeps Hinv positive definite
            if self.state["updates"] == 0:
                hinv *= ys / float(y @ y)
            rho = 1.0 / ys
            hy = hinv @ y
            # (I - rho s y^T) H (I - rho y s^T) + rho s s^T, expanded to rank-two updates
            hinv += (rho * rho * float(y @ hy) + rho) * np.outer(s, s) - rho * (np.outer(hy, s) + np.outer(s, hy))
            self.state["updates"] += 1
        return f


class LBFGS(LineSearchMethod):
    """Limited-memory BFGS: the two-loop recursion over the last ``history_size`` pairs (s, y),
    initial matrix gamma I with gamma = s^T y / y^T y of the newest pair."""

    name = "lbfgs"
    defaults: ClassVar[dict[str, Any]] = {"history_size": 10, **_SEARCH}

    def _setup(self) -> None:
        self._check_search()
        m = self.options["history_size"]
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ValueError(f"option history_size={m!r}: expected a positive integer")
        self.state["pairs"] = deque(maxlen=int(m))

    def direction(self, g: np.ndarray) -> np.ndarray:
        """-Hinv g by the two-loop recursion."""
        pairs = self.state["pairs"]
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(pairs):
            a = rho * float(s @ q)
            q -= a * y
            alphas.append(a)
        if pairs:
            s, y, _ = pairs[-1]
            q *= float(s @ y) / float(y @ y)
        for (s, y, rho), a in zip(pairs, reversed(alphas)):
            b = rho * float(y @ q)
            q += (a - b) * s
        return -q

    def step(self) -> float:
        _, g = self._value_and_grad()
        theta = self.theta
        f = self._search(self.direction(g), _first_step(g) if not self.state["pairs"] else 1.0)
        _, g_new = self._value_and_grad()
        s, y = self.theta - theta, g_new - g
        ys = float(y @ s)
        if ys > 1e-10 * np.linalg.norm(s) * np.linalg.norm(y):
            self.state["pairs"].append((s, y, 1.0 / ys))
        return f


class CG(LineSearchMethod):
    """Nonlinear conjugate gradient, Polak-Ribiere+: beta = max(0, g1.(g1 - g0) / g0.g0),
    restarted along -g every ``restart`` iterations (default P) and whenever successive
    gradients are far from orthogonal (|g1.g0| >= 0.1 g1.g1, N&W eq. 5.52) or the direction
    is not a descent one."""

    name = "cg"
    defaults: ClassVar[dict[str, Any]] = {"restart": None, "line_search": "strong_wolfe", "c1": 1e-4, "c2": 0.1}

    def _setup(self) -> None:
        self._check_search()
        r = self.options["restart"]
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1):
            raise ValueError(f"option restart={r!r}: expected a positive integer or None (= P)")
        self.restart = int(r) if r is not None else self.model.n_params
        self.state.update(d=None, g=None, slope=None, since_restart=0)

    def step(self) -> float:
        _, g = self._value_and_grad()
        st = self.state
        d, g_old = st["d"], st["g"]
        if d is None or st["since_restart"] >= self.restart or abs(float(g @ g_old)) >= 0.1 * float(g @ g):
            d, st["since_restart"] = -g, 0
        else:
            beta = max(0.0, float(g @ (g - g_old)) / float(g_old @ g_old))
            d = -g + beta * d
            if not float(g @ d) < 0:
                d, st["since_restart"] = -g, 0
        slope = float(g @ d)
        if st["slope"] is None:
            step = _first_step(g)
        else:   # N&W eq. 3.60: expect the same first-order decrease as the last step
            step = self.info["lr"] * st["slope"] / slope
        f = self._search(d, step)
        st.update(d=d, g=g, slope=slope, since_restart=st["since_restart"] + 1)
        return f
