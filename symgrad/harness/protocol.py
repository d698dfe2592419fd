"""The benchmark protocol: methods x seeds on each problem, the same start for every method.

Per problem: build it; one theta0 per seed, shared by every method; one
untimed warm-up iteration of each method (so no run pays for compiling a
kernel); the runs; then each kernel's cost is measured (median seconds
relative to ``value_and_grad``) for every kind the runs used, and each
record gets its cost in gradient-equivalents, n_grad + sum_k r_k n_k. The
target loss of a seed is f_best + frac (f0 - f_best), f_best the lowest loss
any run of that seed reached (or the problem's absolute ``target``); a run's
time-to-target is the first record at or below it.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..model import Objective
from ..optim.oracle import COUNTED
from .methods import (DEFAULT_METHODS, TORCH, Trace, check_options, method_options, resolve_methods, run_method,
                      unavailable)
from .problems import Instance, Problem, get_problem

__all__ = ["Run", "ProblemResult", "Benchmark", "run_benchmark", "cost_ratios", "grad_equivalents",
           "reach_target", "pinned_threads"]

#: the record key the harness adds to HISTORY_FIELDS
GRAD_EQUIV = "grad_equiv"


@dataclass(frozen=True)
class Run:
    """One method from one seed's theta0, with its costs and final quality. NaN where a value
    does not apply (no held-out set, not a classifier, target not reached, failed run)."""

    problem: str
    method: str
    seed: int
    status: str
    message: str
    options: Mapping[str, Any]
    history: tuple[dict[str, float], ...]   # HISTORY_FIELDS + grad_equiv
    theta: np.ndarray | None
    heldout_loss: float
    train_accuracy: float
    heldout_accuracy: float
    target: float
    time_to_target: float
    iterations_to_target: float
    grad_equiv_to_target: float

    def final(self, key: str) -> float:
        """The last record's value (NaN without history)."""
        return float(self.history[-1][key]) if self.history else math.nan


@dataclass(frozen=True)
class ProblemResult:
    """Every run of one problem, the measured kernel costs and the targets."""

    problem: Problem
    n_params: int
    n_train: int
    n_heldout: int
    ratios: Mapping[str, float]     # kernel kind -> seconds / value_and_grad seconds
    grad_seconds: float             # median value_and_grad time
    targets: Mapping[int, float]    # seed -> target loss
    budget: Mapping[str, Any]       # max_iter, tol, time_limit the runs had
    runs: tuple[Run, ...]
    skipped: Mapping[str, str]      # method -> why it did not run


@dataclass(frozen=True)
class Benchmark:
    """What ``run_benchmark`` returns; ``write(out_dir)`` saves CSVs, summary.md and plots."""

    results: tuple[ProblemResult, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: Mapping[str, str] = field(default_factory=dict)

    def write(self, out_dir: str | os.PathLike, plots: bool = True) -> list[str]:
        from .report import write_report
        return write_report(self, out_dir, plots=plots)


# ----------------------------------------------------------------------------- costs

def cost_ratios(objective: Objective, theta: np.ndarray, kinds: Sequence[str] = COUNTED,
                repeats: int = 9) -> tuple[dict[str, float], float]:
    """Median time of one call of each kernel kind relative to ``value_and_grad``: ({kind: ratio},
    value_and_grad seconds). Calls are interleaved round by round so load changes hit every kind
    alike; a ``jacobian`` call is one output component (one kernel call, as the optimizers count)."""
    v = np.random.default_rng(0).normal(size=objective.model.n_params)
    calls: dict[str, Callable[[], Any]] = {
        "loss": lambda: objective.loss(theta),
        "grad": lambda: objective.value_and_grad(theta),
        "hvp": lambda: objective.hvp(theta, v),
        "gnvp": lambda: objective.gnvp(theta, v),
        "jacobian": lambda: objective.jacobian(theta),
    }
    unknown = set(kinds) - set(calls)
    if unknown:
        raise ValueError(f"unknown kernel kind(s) {sorted(unknown)}; kinds are {COUNTED}")
    order = ["grad", *(k for k in COUNTED if k in kinds and k != "grad")]
    per = dict.fromkeys(order, 1)
    for k in order:   # first calls outside the timing
        out = calls[k]()
        if k == "jacobian":   # (N, *output, P): one kernel call per output component
            per[k] = out[0].size // objective.model.n_params
    times: dict[str, list[float]] = {k: [] for k in order}
    for _ in range(repeats):
        for k in order:
            t0 = time.perf_counter()
            calls[k]()
            times[k].append((time.perf_counter() - t0) / per[k])
    grad = statistics.median(times["grad"])
    return {k: statistics.median(times[k]) / grad for k in order}, grad


def grad_equivalents(record: Mapping[str, float], ratios: Mapping[str, float]) -> float:
    """A record's cumulative cost in gradient evaluations: sum over kinds of count x cost ratio."""
    total = 0.0
    for k in COUNTED:
        n = record.get(f"n_{k}", 0.0)
        if n:
            if k not in ratios:
                raise ValueError(f"no cost ratio for {k!r} (measured: {sorted(ratios)})")
            total += n * ratios[k]
    return total


def reach_target(history: Sequence[Mapping[str, float]], target: float) -> Mapping[str, float] | None:
    """The first record whose loss is at or below ``target`` (None: never reached)."""
    return next((r for r in history if r["loss"] <= target), None)


# ----------------------------------------------------------------------------- threads

@contextlib.contextmanager
def pinned_threads(threads: int | None, torch: bool = False) -> Iterator[str]:
    """Inside the block: Numba (symgrad's kernels) and, with ``torch``, PyTorch's intra-op pool on
    ``threads`` threads (None: Numba's current count), every loaded BLAS on one (threadpoolctl).
    Yields the statement for the report; restores Numba's and BLAS's settings afterwards.

    BLAS gets one thread because the optimizers' own linear algebra is mostly vector work,
    where waking a second BLAS thread costs more than it saves, and on a busy machine much
    more (measured here: scipy's L-BFGS-B on Rosenbrock, 2 ms per run on one BLAS thread,
    2-140 ms on two while another process used a core).
    """
    import numba
    import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS Numba's np.dot calls, so the limit reaches it)
    from threadpoolctl import threadpool_limits
    old = numba.get_num_threads()
    n = old if threads is None else threads
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads={threads!r}: expected 1..{numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)")
    numba.set_num_threads(n)
    parts = [f"Numba {n}", "BLAS 1 (threadpoolctl)"]
    if torch:
        import torch as th
        th.set_num_threads(n)
        parts.append(f"PyTorch {n} intra-op")
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield ", ".join(parts)
    finally:
        numba.set_num_threads(old)


class _OtherLoad:
    """CPUs' worth of work other processes did while the benchmark ran: all busy CPU time in
    /proc/stat minus this process's own (Linux; NaN elsewhere)."""

    def __init__(self) -> None:
        self.wall, self.busy, self.own = time.perf_counter(), self._busy(), time.process_time()

    @staticmethod
    def _busy() -> float:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AttributeError):
            return math.nan

    def cpus(self) -> float:
        wall = time.perf_counter() - self.wall
        return max(0.0, (self._busy() - self.busy - (time.process_time() - self.own)) / max(wall, 1e-9))


def _machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {usable} usable cores of {os.cpu_count()}; {platform.system()} {platform.release()}"


def _versions(torch: bool) -> str:
    import numba
    import scipy
    from .. import __version__
    parts = [f"symgrad {__version__}", f"numpy {np.__version__}", f"scipy {scipy.__version__}",
             f"numba {numba.__version__}", f"Python {platform.python_version()}"]
    if torch:
        import torch as th
        parts.append(f"torch {th.__version__}")
    return ", ".join(parts)


class _Progress:
    """A progress bar on stderr: one line rewritten in place on a terminal, else a line per run."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def show(self, text: str, advance: bool = False) -> None:
        """Update the line; off a terminal only finished runs (``advance``) get a line."""
        self.done += advance
        if not self.enabled or not (self.tty or advance):
            return
        width = 24
        filled = width * self.done // max(self.total, 1)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{time.perf_counter() - self.t0:6.1f}s  {text}")
        sys.stderr.write(f"\r{line[:110]:<110}" if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


# ----------------------------------------------------------------------------- protocol

def run_benchmark(problems: Sequence[str | Problem], methods: Sequence[str] = DEFAULT_METHODS,
                  seeds: int | Sequence[int] = 3, *, max_iter: int | None = None, tol: float | None = None,
                  time_limit: float | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                  threads: int | None = None, target_frac: float = 1e-3,
                  targets: Mapping[str, float] | None = None, progress: bool = True) -> Benchmark:
    """Run every method from every seed's shared theta0 on every problem (see the module doc).

    ``problems``: registered names or :class:`Problem` objects. ``methods``:
    names or groups (``resolve_methods``). ``seeds``: a count (0..n-1) or the
    seeds themselves. ``max_iter``, ``tol``, ``time_limit`` override every
    problem's defaults; ``options`` maps a method to options overriding the
    problem's (``{"adam": {"lr": 0.01}}``); ``targets`` maps a problem name to
    an absolute target loss. Failed and diverged runs are kept, with their
    messages; methods that cannot run here are listed as skipped with the reason.
    """
    probs = [p if isinstance(p, Problem) else get_problem(p) for p in problems]
    if not probs:
        raise ValueError("no problems given")
    names = resolve_methods(methods)
    seed_list = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds={seeds!r}: expected a positive count or distinct seeds")
    if not 0 < target_frac < 1:
        raise ValueError(f"target_frac={target_frac!r}: expected a number in (0, 1)")
    unknown_targets = set(targets or {}) - {p.name for p in probs}
    if unknown_targets:
        raise ValueError(f"targets given for problem(s) not run: {sorted(unknown_targets)}")
    overrides = dict(options or {})
    unknown = set(overrides) - set(names)
    if unknown:
        raise ValueError(f"options given for method(s) not run: {sorted(unknown)} (methods: {', '.join(names)})")
    for p in probs:
        for m in names:
            check_options(m, method_options(p, m, overrides.get(m)))
    use_torch = any(m in TORCH and unavailable(m) is None for m in names)
    bar = _Progress(len(probs) * len(names) * len(seed_list), progress)
    load = _OtherLoad()
    results = []
    with pinned_threads(threads, torch=use_torch) as thread_note:
        for p in probs:
            results.append(_run_problem(p, names, seed_list, max_iter, tol, time_limit, overrides, target_frac,
                                        (targets or {}).get(p.name, p.target), bar))
    bar.close()
    settings = {"machine": _machine(), "threads": thread_note, "versions": _versions(use_torch),
                "load": f"other processes used {load.cpus():.2f} CPUs on average while this ran",
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "stopping": "every row alike: ||g||_2 <= tol, max_iter iterations, or time_limit seconds of the "
                            "method's own time (values per problem below)",
                "target": _target_rule(target_frac, targets)}
    return Benchmark(tuple(results), names, seed_list, settings)


def _target_rule(frac: float, targets: Mapping[str, float] | None) -> str:
    rule = f"f_best + {frac:g} (f0 - f_best) per seed, f_best the lowest loss any run of that seed reached"
    return rule + (f"; given: {dict(targets)}" if targets else "")


def _run_problem(problem: Problem, methods: tuple[str, ...], seeds: tuple[int, ...], max_iter: int | None,
                 tol: float | None, time_limit: float | None, overrides: Mapping[str, Mapping[str, Any]],
                 target_frac: float, target: float | None, bar: _Progress) -> ProblemResult:
    bar.show(f"{problem.name}: building")
    inst = problem.build()
    model = inst.model
    train = model.bind(*inst.train)
    heldout = model.bind(*inst.heldout) if inst.heldout is not None else None
    theta0 = {s: inst.theta0(s) for s in seeds}
    budget = {"max_iter": max_iter or problem.max_iter, "tol": problem.tol if tol is None else tol,
              "time_limit": time_limit if time_limit is not None else problem.time_limit}
    skipped = {m: why for m in methods if (why := unavailable(m, inst)) is not None}
    runnable = [m for m in methods if m not in skipped]
    opts = {m: method_options(problem, m, overrides.get(m)) for m in runnable}
    for m in runnable:   # compile every kernel the method calls, outside any timed run
        bar.show(f"{problem.name}: warming up {m}")
        run_method(m, inst, train, theta0[seeds[0]], max_iter=1, tol=0.0, time_limit=None, seed=seeds[0],
                   options=opts[m])
    traces: dict[tuple[str, int], Trace] = {}
    for s in seeds:
        for m in methods:
            if m in skipped:
                bar.show(f"{problem.name} {m}: skipped", advance=True)
                continue
            bar.show(f"{problem.name} {m} seed {s}")
            traces[m, s] = run_method(m, inst, train, theta0[s], seed=s, options=opts[m], **budget)
            bar.show(f"{problem.name} {m} seed {s}: {traces[m, s].status}", advance=True)
    used = {k for (m, _), t in traces.items() if m not in TORCH and t.history
            for k in COUNTED if t.history[-1][f"n_{k}"] > 0}
    bar.show(f"{problem.name}: measuring kernel costs")
    ratios, grad_seconds = cost_ratios(train, theta0[seeds[0]], sorted(used | {"loss", "grad"}))
    targets = {}
    for s in seeds:
        f0 = train.loss(theta0[s])
        lows = [min(r["loss"] for r in t.history) for (m, s2), t in traces.items() if s2 == s and t.history]
        f_best = min(lows, default=f0)
        targets[s] = target if target is not None else f_best + target_frac * (f0 - f_best)
    runs = tuple(_finish(problem.name, m, s, traces[m, s], opts[m], ratios if m not in TORCH else {"grad": 1.0},
                         targets[s], inst, heldout)
                 for s in seeds for m in methods if (m, s) in traces)
    return ProblemResult(problem, model.n_params, train.n_samples if inst.train else 0,
                         heldout.n_samples if heldout is not None else 0, ratios, grad_seconds, targets, budget,
                         runs, skipped)


def _finish(problem: str, method: str, seed: int, trace: Trace, options: Mapping[str, Any],
            ratios: Mapping[str, float], target: float, inst: Instance, heldout: Objective | None) -> Run:
    history = tuple({**r, GRAD_EQUIV: grad_equivalents(r, ratios)} for r in trace.history)
    hit = reach_target(history, target)
    theta, nan = trace.theta, math.nan
    ok = theta is not None

    def accuracy(data: Any) -> float:
        return inst.accuracy(inst.model, theta, data) if ok and inst.accuracy is not None and data else nan

    return Run(problem, method, seed, trace.status, trace.message, dict(options), history, theta,
               heldout_loss=heldout.loss(theta) if ok and heldout is not None else nan,
               train_accuracy=accuracy(inst.train), heldout_accuracy=accuracy(inst.heldout),
               target=target, time_to_target=hit["time"] if hit else nan,
               iterations_to_target=hit["iteration"] if hit else nan,
               grad_equiv_to_target=hit[GRAD_EQUIV] if hit else nan)
