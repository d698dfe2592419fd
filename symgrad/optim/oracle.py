"""The optimizers' only way to the kernels: every call counted, the last point remembered.

A fair comparison charges each method for exactly the oracle calls it made.
Counts are in full-data passes: a call on a mini-batch of B of the N samples
counts B / N, so a stochastic epoch costs about one gradient, like one
full-batch step. The benchmark harness turns the counts into
gradient-equivalents with each kernel's measured cost.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Objective

__all__ = ["Oracle", "COUNTED"]

#: the counted kernel kinds (``hessian`` / ``gauss_newton`` count P products each)
COUNTED = ("loss", "grad", "hvp", "gnvp", "jacobian")


class Oracle:
    """Counted access to an :class:`~symgrad.model.Objective` and its row subsets."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.model = objective.model
        self.n_samples = objective.n_samples
        self.counts = dict.fromkeys(COUNTED, 0.0)
        self._memo: tuple[np.ndarray, float, np.ndarray] | None = None

    def _charge(self, kind: str, batch: Objective | None, calls: float = 1.0) -> Objective:
        obj = batch if batch is not None else self.objective
        self.counts[kind] += calls * obj.n_samples / self.n_samples
        return obj

    def value_and_grad(self, theta: np.ndarray, batch: Objective | None = None) -> tuple[float, np.ndarray]:
        """(objective, gradient); full-data results at the last point are reused, not recounted."""
        if batch is None and self._memo is not None and np.array_equal(self._memo[0], theta):
            return self._memo[1], self._memo[2].copy()
        f, g = self._charge("grad", batch).value_and_grad(theta)
        if batch is None:
            self._memo = (theta.copy(), f, g.copy())
        return f, g

    def loss(self, theta: np.ndarray, batch: Objective | None = None) -> float:
        if batch is None and self._memo is not None and np.array_equal(self._memo[0], theta):
            return self._memo[1]
        return self._charge("loss", batch).loss(theta)

    def hvp(self, theta: np.ndarray, v: np.ndarray, batch: Objective | None = None) -> np.ndarray:
        return self._charge("hvp", batch).hvp(theta, v)

    def gnvp(self, theta: np.ndarray, v: np.ndarray, batch: Objective | None = None) -> np.ndarray:
        return self._charge("gnvp", batch).gnvp(theta, v)

    def hessian(self, theta: np.ndarray, max_params: int) -> np.ndarray:
        h = self.objective.hessian(theta, max_params)
        self._charge("hvp", None, self.model.n_params)
        return h

    def gauss_newton(self, theta: np.ndarray, max_params: int) -> np.ndarray:
        h = self.objective.gauss_newton(theta, max_params)
        self._charge("gnvp", None, self.model.n_params)
        return h

    def output_jacobian(self, theta: np.ndarray) -> np.ndarray:
        """d output / d theta per sample, flattened to (N * K, P): one kernel call per output component."""
        jac = self.objective.jacobian(theta)
        n, p = jac.shape[0], jac.shape[-1]
        self._charge("jacobian", None, jac.size // (n * p))
        return jac.reshape(-1, p)

    def predict(self, theta: np.ndarray) -> np.ndarray:
        """The model's output on the bound inputs (used for least-squares residuals; not counted
        separately: it is the forward half of the Jacobian pass that always comes with it)."""
        return self.objective.predict(theta)

    def finite(self, *values: Any) -> bool:
        return all(np.all(np.isfinite(v)) for v in values)
