"""The methods a benchmark can run: symgrad's own, and scipy.optimize / torch.optim reference rows.

Every runner returns the same :class:`Trace`: a history of records with
the keys of ``symgrad.optim.HISTORY_FIELDS``, the final theta, a status and
a message. All rows stop by the same rule, the gradient's 2-norm at most
``tol`` (for the references the harness checks it after every iteration and
sets the library's own tolerances to 0 so they do not stop first), after
``max_iter`` iterations, or past ``time_limit`` seconds of the method's own
time. The references' records take the loss and gradient at each iterate
from symgrad's objective, outside the clock and the counts: monitoring is
not the method's cost.

scipy's methods call symgrad's compiled kernels (``fun`` and ``jac`` share one
``value_and_grad`` call per point, ``hessp`` is the HVP kernel), so they
differ from symgrad's rows only by the algorithm. torch.optim's run on the
problem's own PyTorch objective over one flat float64 tensor: the same
function, PyTorch's kernels; their counts are PyTorch gradient evaluations.
"""
from __future__ import annotations

import importlib.util
import inspect
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..model import Objective
from ..optim import METHODS, minimize
from ..optim.oracle import COUNTED
from .problems import Instance, Problem

__all__ = ["Trace", "SCIPY", "TORCH", "REFERENCES", "DEFAULT_METHODS", "GROUPS", "STATUSES", "resolve_methods",
           "method_options", "check_options", "unavailable", "run_method"]

#: reference row -> scipy.optimize.minimize method
SCIPY = {"scipy:L-BFGS-B": "L-BFGS-B", "scipy:BFGS": "BFGS", "scipy:Newton-CG": "Newton-CG",
         "scipy:trust-ncg": "trust-ncg"}
#: reference row -> torch.optim class
TORCH = {"torch:SGD": "SGD", "torch:Adam": "Adam", "torch:LBFGS": "LBFGS"}
REFERENCES = (*SCIPY, *TORCH)
#: reference -> the symgrad method whose per-problem learning rate it takes
_TWINS = {"torch:SGD": "sgd", "torch:Adam": "adam"}
#: the references' own defaults (tolerances 0: the harness applies tol to every row alike; torch's
#: LBFGS makes one iteration per step(), keeping its state across steps, with max_eval = 1 + the
#: 25 line-search evaluations its _strong_wolfe allows by default)
_REFERENCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "scipy:L-BFGS-B": {"ftol": 0.0, "gtol": 0.0},
    "scipy:BFGS": {"gtol": 0.0},
    "scipy:Newton-CG": {"xtol": 0.0},
    "scipy:trust-ncg": {"gtol": 0.0},
    "torch:SGD": {},
    "torch:Adam": {},
    "torch:LBFGS": {"lr": 1.0, "max_iter": 1, "max_eval": 26, "history_size": 10,
                    "line_search_fn": "strong_wolfe", "tolerance_grad": 0.0, "tolerance_change": 0.0},
}
_HESSP = ("scipy:Newton-CG", "scipy:trust-ncg")

#: one first-order, the quasi-Newton and CG methods, the Newton family, and a reference of each kind
DEFAULT_METHODS = ("adam", "momentum", "cg", "lbfgs", "bfgs", "newton", "newton_cg", "levenberg_marquardt",
                   "scipy:L-BFGS-B", "scipy:trust-ncg", "torch:Adam", "torch:LBFGS")
#: names accepted by ``resolve_methods`` for several methods at once
GROUPS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT_METHODS, "symgrad": tuple(METHODS), "scipy": tuple(SCIPY), "torch": tuple(TORCH),
    "references": REFERENCES, "all": (*METHODS, *REFERENCES)}
#: a run's outcome: ||g|| <= tol; stopped by max_iter, time_limit or the method itself; the
#: objective became NaN/inf (the last finite iterate is kept); raised an error
STATUSES = ("converged", "stopped", "diverged", "failed")


@dataclass(frozen=True)
class Trace:
    """One run as the method saw it: history records (HISTORY_FIELDS), final theta (None if it
    failed before the first iteration), status (one of STATUSES) and why it stopped."""

    history: tuple[dict[str, float], ...]
    theta: np.ndarray | None
    status: str
    message: str


def _canonical() -> dict[str, str]:
    return {m.lower(): m for m in (*METHODS, *REFERENCES)}


def resolve_methods(names: Sequence[str]) -> tuple[str, ...]:
    """Method names and group names (GROUPS) -> method names, in order, without repeats;
    case-insensitive."""
    canon, out = _canonical(), []
    for name in names:
        key = name.strip().lower()
        found = GROUPS.get(key) or ((canon[key],) if key in canon else None)
        if not found:
            raise ValueError(f"unknown method {name!r}; methods are {', '.join(METHODS)}, "
                             f"{', '.join(REFERENCES)}; groups: {', '.join(GROUPS)}")
        out += [m for m in found if m not in out]
    if not out:
        raise ValueError("no methods given")
    return tuple(out)


def method_options(problem: Problem, method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options a method runs with on a problem: the reference's own defaults, the twin
    method's learning rate (torch:SGD <- sgd, torch:Adam <- adam), the problem's defaults,
    then ``overrides``."""
    base = dict(_REFERENCE_DEFAULTS.get(method, {}))
    twin = problem.options.get(_TWINS.get(method, ""), {})
    if "lr" in twin:
        base["lr"] = twin["lr"]
    return {**base, **problem.options.get(method, {}), **(overrides or {})}


def check_options(method: str, options: Mapping[str, Any]) -> None:
    """Refuse option names the method does not take (before anything runs). scipy and torch
    options are checked only where the library is installed."""
    if method in METHODS:
        allowed = {*METHODS[method].defaults, "batch_size"}
    elif method in SCIPY:
        import scipy.optimize
        doc = scipy.optimize.show_options(solver="minimize", method=SCIPY[method], disp=False)
        allowed = set(re.findall(r"^(\w+) : ", doc, re.M)) - {"maxiter", "disp", "return_all", "callback"}
    elif unavailable(method) is None:
        import torch
        sig = inspect.signature(getattr(torch.optim, TORCH[method]).__init__)
        allowed = set(sig.parameters) - {"self", "params"}
    else:
        return
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {method}; its options are {sorted(allowed)}")


def unavailable(method: str, instance: Instance | None = None) -> str | None:
    """Why the method cannot run here (None: it can)."""
    if method in TORCH:
        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed (pip install torch)"
        if instance is not None and instance.torch_loss is None:
            return "the problem gives no PyTorch objective (Instance.torch_loss)"
    return None


def run_method(method: str, instance: Instance, objective: Objective, theta0: np.ndarray, *, max_iter: int,
               tol: float, time_limit: float | None, seed: int, options: Mapping[str, Any]) -> Trace:
    """Run one method from theta0; an error becomes a ``failed`` Trace, never an exception."""
    try:
        if method in METHODS:
            return _run_symgrad(method, objective, theta0, max_iter, tol, time_limit, seed, dict(options))
        recorder = _Recorder(objective, tol, time_limit)
        try:
            if method in SCIPY:
                _run_scipy(method, objective, theta0, max_iter, recorder, dict(options))
            else:
                _run_torch(method, instance, theta0, max_iter, recorder, dict(options))
        except Exception as e:
            return recorder.trace("failed", f"{type(e).__name__}: {e}")
        return recorder.trace(None, recorder.message)
    except Exception as e:
        return Trace((), None, "failed", f"{type(e).__name__}: {e}")


def _run_symgrad(method: str, objective: Objective, theta0: np.ndarray, max_iter: int, tol: float,
                 time_limit: float | None, seed: int, options: dict[str, Any]) -> Trace:
    batch_size = options.pop("batch_size", None)
    res = minimize(objective, theta0, method=method, max_iter=max_iter, tol=tol, time_limit=time_limit,
                   batch_size=batch_size, seed=seed, **options)
    status = res.status if res.status in ("converged", "diverged") else "stopped"
    return Trace(tuple(res.history), res.theta, status, res.message)


class _Recorder:
    """The references' clock, counts and history. The clock runs only between ``resume`` and
    ``pause``; ``record`` evaluates the iterate with symgrad's objective, uncounted."""

    def __init__(self, objective: Objective, tol: float, time_limit: float | None) -> None:
        self.objective, self.tol, self.time_limit = objective, tol, time_limit
        self.counts = dict.fromkeys(COUNTED, 0.0)
        self.history: list[dict[str, float]] = []
        self.theta: np.ndarray | None = None
        self.clock, self._since = 0.0, 0.0
        self.message, self.diverged = "", False

    def resume(self) -> None:
        self._since = time.perf_counter()

    def pause(self) -> None:
        self.clock += time.perf_counter() - self._since

    def record(self, theta: np.ndarray) -> bool:
        """Add the iterate's record; True when the run must stop (converged, diverged, out of time)."""
        f, g = self.objective.value_and_grad(theta)
        gn = float(np.linalg.norm(g))
        if not (math.isfinite(f) and math.isfinite(gn)):
            self.diverged = True
            self.message = (f"the objective became {f} at iteration {len(self.history)}; "
                            f"returning the last finite iterate (iteration {len(self.history) - 1})")
            return True
        self.history.append({"iteration": len(self.history), "time": self.clock, "loss": f, "grad_norm": gn,
                             **{f"n_{k}": v for k, v in self.counts.items()},
                             "ls_trials": math.nan, "damping": math.nan, "lr": math.nan})
        self.theta = np.array(theta, dtype=self.objective.model.dtype)
        if gn <= self.tol:
            self.message = f"gradient norm {gn:.3g} <= tol={self.tol:g}"
            return True
        if self.time_limit is not None and self.clock >= self.time_limit:
            self.message = f"time_limit={self.time_limit:g} s reached"
            return True
        return False

    def trace(self, status: str | None, message: str) -> Trace:
        if status is None:
            last = self.history[-1]["grad_norm"] if self.history else math.inf
            status = "diverged" if self.diverged else "converged" if last <= self.tol else "stopped"
        return Trace(tuple(self.history), self.theta, status, message)


def _run_scipy(method: str, objective: Objective, theta0: np.ndarray, max_iter: int, rec: _Recorder,
               options: dict[str, Any]) -> None:
    import scipy.optimize
    memo: dict[str, Any] = {"x": None}

    def fun(x: np.ndarray) -> float:
        if memo["x"] is None or not np.array_equal(memo["x"], x):
            memo["f"], memo["g"] = objective.value_and_grad(x)
            memo["x"] = np.array(x)
            rec.counts["grad"] += 1
        return memo["f"]

    def jac(x: np.ndarray) -> np.ndarray:
        fun(x)
        return memo["g"].copy()

    def hessp(x: np.ndarray, p: np.ndarray) -> np.ndarray:
        rec.counts["hvp"] += 1
        return objective.hvp(x, p)

    def callback(xk: np.ndarray) -> None:
        rec.pause()
        stop = rec.record(xk)
        rec.resume()
        if stop:
            raise StopIteration

    if rec.record(theta0):
        return
    rec.resume()
    try:
        res = scipy.optimize.minimize(fun, theta0.copy(), jac=jac, hessp=hessp if method in _HESSP else None,
                                      method=SCIPY[method], callback=callback,
                                      options={**options, "maxiter": max_iter})
    finally:
        rec.pause()
    if not rec.message:
        rec.message = f"scipy: {res.message}"
    if not rec.diverged and not np.array_equal(res.x, rec.theta):   # stopped between callbacks
        rec.record(res.x)


def _run_torch(method: str, instance: Instance, theta0: np.ndarray, max_iter: int, rec: _Recorder,
               options: dict[str, Any]) -> None:
    import torch
    assert instance.torch_loss is not None
    data = tuple(torch.as_tensor(a) for a in instance.train)
    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, TORCH[method])([theta], **options)
    last: list[Any] = []   # (x, loss, grad) of the last evaluation: LBFGS re-evaluates its start point

    def closure() -> Any:
        x = theta.detach()
        if last and torch.equal(last[0], x):
            theta.grad = last[2].clone()
            return last[1]
        rec.counts["grad"] += 1
        opt.zero_grad()
        loss = instance.torch_loss(theta, data)
        loss.backward()
        last[:] = [x.clone(), loss.detach(), theta.grad.clone()]
        return loss

    if rec.record(theta0):
        return
    for _ in range(max_iter):
        before = theta.detach().clone()
        rec.resume()
        opt.step(closure)
        rec.pause()
        if rec.record(theta.detach().numpy()):
            return
        if torch.equal(before, theta.detach()):
            rec.message = "the step no longer changes theta"
            return
    rec.message = f"max_iter={max_iter} reached"
