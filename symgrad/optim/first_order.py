"""First-order methods, in the course notes' form, with PyTorch's option names and defaults.

Each update is written as the course states it (velocity as a displacement:
v <- alpha v - lr g, theta <- theta + v). For a constant learning rate the
iterates equal torch.optim's (SGD with momentum / nesterov=True, Adagrad,
RMSprop, Adam); under a schedule the course form applies each step's lr to
that step's gradient only.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from . import schedules
from .base import Optimizer, fraction, positive

__all__ = ["GD", "SGD", "Momentum", "Nesterov", "Adagrad", "RMSProp", "Adam"]


class _FirstOrder(Optimizer):
    """Gradient at theta (of a mini-batch, in stochastic runs), then ``_update``."""

    stochastic: ClassVar[bool] = True

    def _setup(self) -> None:
        o = self.options
        self.lr = positive("lr", o["lr"])
        self.schedule = schedules.resolve(o["schedule"])
        self._check()

    def _check(self) -> None:
        """Method-specific options and state."""

    def step(self) -> float:
        f, g = self._value_and_grad(self._next_batch())
        lr = float(self.schedule(self.lr, self.t))
        self._update(g, lr)
        self.t += 1
        self.info["lr"] = lr
        return f

    @abstractmethod
    def _update(self, g: np.ndarray, lr: float) -> None:
        """theta (and the state) after one step with gradient g and rate lr."""


class GD(_FirstOrder):
    """Gradient descent on the full batch: theta <- theta - lr g."""

    name = "gd"
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "schedule": None}
    stochastic: ClassVar[bool] = False

    def _update(self, g: np.ndarray, lr: float) -> None:
        self.theta -= lr * g


class SGD(GD):
    """Mini-batch stochastic gradient descent (seeded reshuffle every epoch); full batch when
    ``batch_size`` is None."""

    name = "sgd"
    stochastic: ClassVar[bool] = True


class Momentum(_FirstOrder):
    """Heavy ball: v <- momentum v - lr g; theta <- theta + v."""

    name = "momentum"
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "momentum": 0.9, "schedule": None}

    def _check(self) -> None:
        self.mu = fraction("momentum", self.options["momentum"])
        self.state["v"] = np.zeros_like(self.theta)

    def _update(self, g: np.ndarray, lr: float) -> None:
        v = self.state["v"]
        v *= self.mu
        v -= lr * g
        self.theta += v


class Nesterov(Momentum):
    """Nesterov momentum after the course's change of variables (theta is the look-ahead point):
    v_new = momentum v - lr g(theta); theta <- theta + v_new + momentum (v_new - v)."""

    name = "nesterov"

    def _update(self, g: np.ndarray, lr: float) -> None:
        v_old = self.state["v"]
        v_new = self.mu * v_old - lr * g
        self.theta += v_new + self.mu * (v_new - v_old)
        self.state["v"] = v_new


class Adagrad(_FirstOrder):
    """a <- a + g*g; theta <- theta - lr g / (sqrt(a) + eps)  (PyTorch's defaults lr=1e-2, eps=1e-10)."""

    name = "adagrad"
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-2, "eps": 1e-10, "schedule": None}

    def _check(self) -> None:
        self.eps = positive("eps", self.options["eps"])
        self.state["a"] = np.zeros_like(self.theta)

    def _update(self, g: np.ndarray, lr: float) -> None:
        a = self.state["a"]
        a += g * g
        self.theta -= lr * g / (np.sqrt(a) + self.eps)


class RMSProp(_FirstOrder):
    """a <- alpha a + (1 - alpha) g*g; with momentum mu: v <- mu v - lr g / (sqrt(a) + eps),
    theta <- theta + v (mu = 0: theta <- theta - lr g / (sqrt(a) + eps))."""

    name = "rmsprop"
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0,
                                          "schedule": None}

    def _check(self) -> None:
        o = self.options
        self.alpha = fraction("alpha", o["alpha"])
        self.eps = positive("eps", o["eps"])
        self.mu = fraction("momentum", o["momentum"])
        self.state["a"] = np.zeros_like(self.theta)
        self.state["v"] = np.zeros_like(self.theta)

    def _update(self, g: np.ndarray, lr: float) -> None:
        a, v = self.state["a"], self.state["v"]
        a *= self.alpha
        a += (1 - self.alpha) * g * g
        v *= self.mu
        v -= lr * g / (np.sqrt(a) + self.eps)
        self.theta += v


class Adam(_FirstOrder):
    """Adam with bias correction: m <- b1 m + (1 - b1) g; a <- b2 a + (1 - b2) g*g;
    theta <- theta - lr m/(1 - b1^t) / (sqrt(a/(1 - b2^t)) + eps)."""

    name = "adam"
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "schedule": None}

    def _check(self) -> None:
        o = self.options
        betas = o["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"option betas={betas!r}: expected a pair (beta1, beta2)")
        self.b1, self.b2 = fraction("betas[0]", betas[0]), fraction("betas[1]", betas[1])
        self.eps = positive("eps", o["eps"])
        self.state["m"] = np.zeros_like(self.theta)
        self.state["a"] = np.zeros_like(self.theta)

    def _update(self, g: np.ndarray, lr: float) -> None:
        m, a = self.state["m"], self.state["a"]
        k = self.t + 1
        m *= self.b1
        m += (1 - self.b1) * g
        a *= self.b2
        a += (1 - self.b2) * g * g
        self.theta -= lr * (m / (1 - self.b1 ** k)) / (np.sqrt(a / (1 - self.b2 ** k)) + self.eps)
