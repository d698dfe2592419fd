"""What every optimizer shares: option checking, the counted oracle, mini-batches, stopping signals.

An optimizer holds the flat ``theta`` and its own state and makes one
iteration per ``step()``. Methods that already know the objective and the
gradient at the new point (every line-search method does) leave them in the
oracle's memo, so the driver's bookkeeping costs nothing extra.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from ..model import DataError, Model, Objective
from .oracle import Oracle

__all__ = ["Optimizer", "LineSearchMethod", "Stop", "Diverged", "positive", "fraction", "choice", "to_host",
           "like"]


class Stop(Exception):
    """The method cannot go on (say why); theta is left at its last accepted point."""


class Diverged(Stop):
    """The objective or gradient became NaN or inf; the driver returns the last finite iterate."""


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy of a device array (CuPy's ``get``), for the dense linear algebra that runs on
    the host (Cholesky, least squares); a NumPy array as it is.

    Every other vector operation of the optimizers is a NumPy function or operator, which
    dispatches to the array's own library (NEP 18): a CuPy theta keeps an optimizer's vectors and
    arithmetic on the GPU, and only scalars (dot products, norms) come back.
    """
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):
        return x.get()
    if hasattr(x, "copy_to_host"):   # numba-cuda
        return x.copy_to_host()
    return np.asarray(x)


def like(x: np.ndarray, ref: Any) -> Any:
    """``x`` (computed on the host) as an array of ``ref``'s library: on the device for a CuPy ref."""
    return x if isinstance(ref, np.ndarray) else np.asarray(x, like=ref)


def positive(name: str, value: Any, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) \
        and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"option {name}={value!r}: expected a {'non-negative' if allow_zero else 'positive'} "
                         "finite number")
    return float(value)


def fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not (isinstance(value, (int, float, np.floating, np.integer)) and 0 <= value < 1):
        raise ValueError(f"option {name}={value!r}: expected a number in [0, 1)")
    return float(value)


def choice(name: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    if value not in allowed:
        raise ValueError(f"option {name}={value!r}: expected one of {allowed}")
    return value


class Optimizer(ABC):
    """One optimization method over the flat parameter vector.

    ``Optimizer(model, theta0, *data, batch_size=None, seed=0, **options)``
    with a compiled :class:`~symgrad.Model` and its data (or an already bound
    :class:`~symgrad.model.Objective` and no data). ``step()`` makes one
    iteration (one mini-batch update for stochastic runs) and returns the
    objective it evaluated; ``theta`` is the current point, ``state`` the
    method's own arrays and scalars, ``info`` the last step's line-search
    trials, damping and learning rate, ``oracle.counts`` the kernel calls.
    """

    name: ClassVar[str] = ""
    #: option -> default; unknown option names are refused
    defaults: ClassVar[dict[str, Any]] = {}
    #: whether the method may run on mini-batches (``batch_size``)
    stochastic: ClassVar[bool] = False
    #: whether its steps come from the Hessian or Gauss-Newton matrix (warned about on a piecewise
    #: linear objective, where both are zero almost everywhere)
    uses_curvature: ClassVar[bool] = False

    def __init__(self, model: Model | Objective, theta0: Any, *data: Any, batch_size: int | None = None,
                 seed: int | None = 0, **options: Any) -> None:
        if isinstance(model, Objective):
            if data:
                raise DataError("data given twice: pass a Model with data, or a bound Objective alone")
            objective = model
        elif isinstance(model, Model):
            objective = model.bind(*data)
        else:
            raise TypeError(f"expected a compiled symgrad Model (or Model.bind(...)), got {type(model).__name__}")
        self.oracle = Oracle(objective)
        self.model = objective.model
        self.theta = objective.start(theta0)   # on the device for a CuPy theta0 on a CUDA model
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for method {self.name!r}; its options are "
                             f"{sorted(self.defaults) or 'none'}")
        self.options = {**self.defaults, **options}
        n = objective.n_samples
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
                raise ValueError(f"batch_size={batch_size!r}: expected a positive integer or None")
            if not self.stochastic and batch_size < n:
                raise ValueError(f"method {self.name!r} is full-batch; batch_size={batch_size} < N={n} applies "
                                 "to sgd, momentum, nesterov, adagrad, rmsprop and adam")
        self.batch_size = None if batch_size is None or batch_size >= n else int(batch_size)
        self.rng = np.random.default_rng(seed)
        self._order = np.arange(0)
        self.t = 0                  # parameter updates made
        self.state: dict[str, Any] = {}
        self.info: dict[str, float] = {"ls_trials": 0, "damping": math.nan, "lr": math.nan}
        self._setup()
        if self.uses_curvature:
            self.model.warn_flat_curvature(self.name)

    # hooks -----------------------------------------------------------------------------
    def _setup(self) -> None:
        """Check the options and create the state."""

    @abstractmethod
    def step(self) -> float:
        """One iteration; returns the objective the method evaluated."""

    # shared ----------------------------------------------------------------------------
    @property
    def steps_per_iteration(self) -> int:
        """Updates per driver iteration: one, or a whole epoch of mini-batches."""
        if self.batch_size is None:
            return 1
        return -(-self.oracle.n_samples // self.batch_size)

    def _next_batch(self) -> Objective | None:
        """The next mini-batch of a seeded reshuffle per epoch (None: the full data)."""
        if self.batch_size is None:
            return None
        if self._order.size == 0:
            self._order = self.rng.permutation(self.oracle.n_samples)
        rows, self._order = self._order[:self.batch_size], self._order[self.batch_size:]
        return self.oracle.objective.subset(np.sort(rows))

    def _value_and_grad(self, batch: Objective | None = None) -> tuple[float, np.ndarray]:
        f, g = self.oracle.value_and_grad(self.theta, batch)
        if not (math.isfinite(f) and np.all(np.isfinite(g))):
            raise Diverged(f"{self.name}: the objective or its gradient is not finite (f = {f}) after "
                           f"{self.t} updates")
        return f, g

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


class LineSearchMethod(Optimizer):
    """A full-batch method that picks a direction and searches along it.

    Options shared by its subclasses: ``line_search`` ("armijo" or
    "strong_wolfe", or None for the full step where the method allows it),
    ``c1`` (sufficient decrease) and ``c2`` (curvature, strong Wolfe only).
    """

    def _search(self, direction: np.ndarray, step: float = 1.0) -> float:
        """Move theta along ``direction``; returns the objective there (raises Stop when no
        step decreases it)."""
        from .linesearch import armijo, strong_wolfe
        o, theta = self.options, self.theta
        f0, g0 = self._value_and_grad()
        slope = float(g0 @ direction)
        if not slope < 0:
            raise Stop(f"{self.name}: not a descent direction (g.p = {slope:.3g})")
        kind = o["line_search"]

        def value_grad(a: float) -> tuple[float, np.ndarray]:
            return self.oracle.value_and_grad(theta + a * direction)

        if kind is None:
            res_f, res_g = value_grad(step)
            a, trials, ok = step, 1, bool(np.isfinite(res_f))
        elif kind == "armijo":
            r = armijo(lambda a: self.oracle.loss(theta + a * direction), value_grad, f0, g0, slope, step,
                       c1=o["c1"])
            a, res_f, trials, ok = r.step, r.f, r.trials, r.ok
        else:
            r = strong_wolfe(value_grad, direction, f0, g0, step, c1=o["c1"], c2=o["c2"])
            a, res_f, trials, ok = r.step, r.f, r.trials, r.ok
        self.info["ls_trials"] = trials
        if not ok and kind is None:
            raise Diverged(f"{self.name}: the full step gives a non-finite objective (line_search=None)")
        if not ok:
            raise Stop(f"{self.name}: the line search found no step that decreases the objective "
                       f"({trials} trials; at the limit of floating-point precision, or a bad direction)")
        new = theta + a * direction
        if np.array_equal(new, theta):
            raise Stop(f"{self.name}: the accepted step no longer changes theta (at the limit of "
                       "floating-point precision)")
        if kind == "armijo" and not res_f < f0:
            # f no longer resolves a decrease: Armijo's test holds with equality and would accept
            # steps forever; go on only while the gradient still shrinks (how Newton gets from
            # ||g|| = 1e-8 to 1e-15). Strong Wolfe has its own rule for this (approximate Wolfe);
            # a full step (line_search=None) may raise f and ||g|| on its way (pure Newton on
            # Rosenbrock). The gradient at `new` is the next iteration's: the oracle keeps it.
            _, g_new = self.oracle.value_and_grad(new)
            if not np.linalg.norm(g_new) < np.linalg.norm(g0):
                raise Stop(f"{self.name}: steps no longer decrease the objective or the gradient "
                           "(at the limit of floating-point precision)")
        self.theta = new
        self.t += 1
        self.info["lr"] = a
        return res_f

    def _check_search(self, allow_none: bool = False) -> None:
        o = self.options
        allowed = ("armijo", "strong_wolfe") + ((None,) if allow_none else ())
        choice("line_search", o["line_search"], allowed)
        c1 = positive("c1", o["c1"])
        if o["line_search"] == "strong_wolfe":
            c2 = positive("c2", o["c2"])
            if not c1 < c2 < 1:
                raise ValueError(f"options c1={c1}, c2={c2}: need 0 < c1 < c2 < 1")
        elif not c1 < 1:
            raise ValueError(f"option c1={c1}: need 0 < c1 < 1")
