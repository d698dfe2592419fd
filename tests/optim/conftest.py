"""Problems with known optima for the optimizer tests (compiled once per session)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.optimize

import symgrad as sg


@dataclass
class Problem:
    model: Any
    data: tuple
    theta0: np.ndarray
    theta_star: np.ndarray
    f_star: float


@pytest.fixture(scope="session")
def logreg() -> Problem:
    """L2-regularized logistic regression on noisy synthetic data: strictly convex, the
    optimum from scipy's trust-exact on an independently written NumPy objective."""
    rng = np.random.default_rng(0)
    n, d, lam = 300, 6, 1e-2
    X = rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d)
    w_true = rng.normal(size=d)
    T = (rng.random(n) < 1 / (1 + np.exp(-(X @ w_true + 0.3)))).astype(float)[:, None]
    x, t = sg.input("x", d), sg.target("t", 1)
    W, b = sg.param("W", (1, d), init="zeros"), sg.param("b", 1, init="zeros")
    o = W @ x + b
    model = sg.compile(sg.bce_with_logits(o, t) + lam * sg.l2(W), output=o)

    def f(th: np.ndarray) -> float:   # the same objective in NumPy: mean BCE-with-logits + lam |w|^2
        z = X @ th[:d] + th[d]
        return float(np.mean(np.logaddexp(0, z) - T[:, 0] * z) + lam * th[:d] @ th[:d])

    def g(th: np.ndarray) -> np.ndarray:
        z = X @ th[:d] + th[d]
        r = (1 / (1 + np.exp(-z)) - T[:, 0]) / n
        return np.concatenate([X.T @ r + 2 * lam * th[:d], [r.sum()]])

    def h(th: np.ndarray) -> np.ndarray:
        z = X @ th[:d] + th[d]
        s = 1 / (1 + np.exp(-z))
        A = np.hstack([X, np.ones((n, 1))])
        H = (A * (s * (1 - s) / n)[:, None]).T @ A
        H[:d, :d] += 2 * lam * np.eye(d)
        return H

    ref = scipy.optimize.minimize(f, np.zeros(d + 1), jac=g, hess=h, method="trust-exact",
                                  options={"gtol": 1e-13})
    assert np.linalg.norm(g(ref.x)) < 1e-11
    return Problem(model, (X, T), np.zeros(model.n_params), ref.x, ref.fun)


@pytest.fixture(scope="session")
def sine() -> Problem:
    """Least squares: a 1-6-1 tanh network fitting a sine (nonconvex; theta_star unknown)."""
    rng = np.random.default_rng(1)
    X = rng.uniform(-3, 3, size=(64, 1))
    T = np.sin(X)
    x, t = sg.input("x", 1), sg.target("t", 1)
    o = sg.dense(sg.dense(x, 6, "tanh", name="l1"), 1, name="l2")
    model = sg.compile(sg.mse(o, t), output=o)
    return Problem(model, (X, T), model.init(0), np.empty(0), float("nan"))

