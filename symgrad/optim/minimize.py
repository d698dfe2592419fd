"""``minimize``: run one method to a tolerance, recording the cost of every iteration.

An iteration is one step of a full-batch method, or one epoch of
mini-batch updates. Each history record holds the objective and the
gradient norm on the full data at the iterate, the wall time spent in the
method so far, and the cumulative kernel calls (in full-data passes). For
mini-batch runs the full-data objective is measured outside the clock and
the counts: monitoring is not the method's cost.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..model import Model, Objective
from .base import Diverged, Optimizer, Stop
from .first_order import GD, SGD, Adagrad, Adam, Momentum, Nesterov, RMSProp
from .oracle import COUNTED
from .quasi_newton import BFGS, CG, LBFGS
from .second_order import GaussNewton, LevenbergMarquardt, Newton, NewtonCG

__all__ = ["minimize", "run", "OptimizeResult", "METHODS", "HISTORY_FIELDS", "STATUSES"]

#: method name -> optimizer class
METHODS: dict[str, type[Optimizer]] = {c.name: c for c in (
    GD, SGD, Momentum, Nesterov, Adagrad, RMSProp, Adam, Newton, NewtonCG, BFGS, LBFGS, CG,
    GaussNewton, LevenbergMarquardt)}

#: why a run stopped (``OptimizeResult.status``): the gradient norm reached tol; the iteration or
#: time budget ran out; the callback asked; the method could not go on; the objective became
#: NaN/inf (the last finite iterate is returned)
STATUSES = ("converged", "max_iter", "time_limit", "callback", "stopped", "diverged")

#: the keys of every history record, in order
HISTORY_FIELDS = ("iteration", "time", "loss", "grad_norm", *(f"n_{k}" for k in COUNTED),
                  "ls_trials", "damping", "lr")


@dataclass
class OptimizeResult:
    """What ``minimize`` returns. ``converged``: the gradient norm reached ``tol``;
    ``status`` (one of STATUSES) and ``message`` say why the run stopped; ``history``:
    one dict per iteration (keys HISTORY_FIELDS; iteration 0 is the starting point).
    ``counts`` are all kernel calls made, those of a last attempt that failed included."""

    theta: np.ndarray
    loss: float
    grad_norm: float
    converged: bool
    status: str
    message: str
    method: str
    n_iter: int
    time: float
    counts: dict[str, float]
    history: list[dict[str, float]] = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict)


def minimize(model: Model | Objective, theta0: Any, *data: Any, method: str = "lbfgs", max_iter: int = 500,
             tol: float = 1e-8, batch_size: int | None = None, seed: int | None = 0,
             time_limit: float | None = None, callback: Callable[[dict[str, float]], Any] | None = None,
             **options: Any) -> OptimizeResult:
    """Minimize the model's objective on ``data`` from ``theta0`` with ``method`` (see METHODS).

    Stops when the gradient's 2-norm falls to ``tol`` (converged), after
    ``max_iter`` iterations (epochs for mini-batch runs), when the method's
    own time exceeds ``time_limit`` seconds, when ``callback(record)``
    returns True, when the method cannot go on, or when the objective becomes
    NaN/inf (then the last finite iterate is returned, never NaN).
    ``options`` are the method's own (see ``METHODS[method].defaults``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; methods are {sorted(METHODS)}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r}: expected an integer >= 1")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol={tol!r}: expected a number >= 0")
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ValueError(f"time_limit={time_limit!r}: expected a positive number of seconds or None")
    if callback is not None and not callable(callback):
        raise ValueError("callback: expected a callable taking the iteration's record")
    opt = METHODS[method](model, theta0, *data, batch_size=batch_size, seed=seed, **options)
    return run(opt, max_iter=max_iter, tol=tol, time_limit=time_limit, callback=callback)


def run(opt: Optimizer, max_iter: int, tol: float, time_limit: float | None = None,
        callback: Callable[[dict[str, float]], Any] | None = None) -> OptimizeResult:
    """Drive an optimizer instance (see ``minimize``)."""
    oracle = opt.oracle
    monitored = opt.batch_size is not None
    history: list[dict[str, float]] = []
    clock = 0.0

    def evaluate() -> tuple[float, np.ndarray]:
        if monitored:   # not the method's cost
            return oracle.objective.value_and_grad(opt.theta)
        return oracle.value_and_grad(opt.theta)

    def record(it: int, f: float, g: np.ndarray) -> dict[str, float]:
        rec = {"iteration": it, "time": clock, "loss": f, "grad_norm": float(np.linalg.norm(g)),
               **{f"n_{k}": v for k, v in oracle.counts.items()},
               "ls_trials": float(opt.info["ls_trials"] + (history[-1]["ls_trials"] if history else 0)),
               "damping": float(opt.info["damping"]), "lr": float(opt.info["lr"])}
        history.append(rec)
        return rec

    t0 = time.perf_counter()
    f, g = evaluate()
    clock += 0.0 if monitored else time.perf_counter() - t0
    if not (math.isfinite(f) and np.all(np.isfinite(g))):
        raise ValueError(f"the objective at theta0 is not finite (f = {f}); check the data and theta0")
    opt.info["ls_trials"] = 0
    rec = record(0, f, g)
    converged = rec["grad_norm"] <= tol
    message = "gradient norm <= tol at the starting point" if converged else f"max_iter={max_iter} reached"
    status = "converged" if converged else "max_iter"
    it = 0
    while not converged and it < max_iter:
        it += 1
        last = (opt.theta.copy(), f, g)
        opt.info["ls_trials"] = 0
        stopped = diverged = None
        t0 = time.perf_counter()
        try:
            for _ in range(opt.steps_per_iteration):
                opt.step()
            if not monitored:
                f, g = oracle.value_and_grad(opt.theta)
        except Diverged as e:
            diverged = str(e)
        except Stop as e:   # theta stays at the method's last accepted point
            stopped = str(e)
        clock += time.perf_counter() - t0
        if stopped is not None:   # theta is still the last recorded iterate: no new record
            opt.theta, f, g = last
            message, status, it = stopped, "stopped", it - 1
            break
        if diverged is None and monitored:
            f, g = evaluate()
        if diverged is None and not (math.isfinite(f) and np.all(np.isfinite(g))):
            diverged = f"the objective became {f} at iteration {it}"
        if diverged is not None:
            opt.theta, f, g = last
            message, status = f"{diverged}; returning the last finite iterate (iteration {it - 1})", "diverged"
            break
        rec = record(it, f, g)
        asked = callback is not None and callback(rec) is True
        if rec["grad_norm"] <= tol:   # converged, whatever the callback said
            converged, message = True, f"gradient norm {rec['grad_norm']:.3g} <= tol={tol:g}"
            status = "converged"
        elif asked:
            message, status = "stopped by the callback", "callback"
            break
        elif time_limit is not None and clock >= time_limit:
            message, status = f"time_limit={time_limit:g} s reached", "time_limit"
            break
    return OptimizeResult(theta=opt.theta, loss=float(f), grad_norm=float(np.linalg.norm(g)),
                          converged=converged, status=status, message=message, method=opt.name, n_iter=it,
                          time=clock, counts=dict(oracle.counts), history=history, options=dict(opt.options))
