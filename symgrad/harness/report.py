"""What a benchmark writes: one CSV per run, runs.csv, a Markdown summary and one figure per problem.

Tables give medians over seeds, so one lucky or unlucky start does not
decide a row; the plots show the median over seeds with a min-max band.
Failed, diverged and skipped runs appear in the counts and, with their
messages, under each table.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..optim import HISTORY_FIELDS
from .methods import REFERENCES
from .protocol import GRAD_EQUIV, Benchmark, ProblemResult, Run

__all__ = ["RUN_FIELDS", "SUMMARY_COLUMNS", "write_report", "write_run_csv", "summary_rows", "summary_markdown",
           "plot_problem"]

#: columns of a run's CSV
RUN_FIELDS = ("problem", "method", "seed", *HISTORY_FIELDS, GRAD_EQUIV)
#: columns of runs.csv, one row per run
_RUNS_FIELDS = ("problem", "method", "seed", "status", "iterations", "time", "grad_equiv", "train_loss",
                "grad_norm", "heldout_loss", "train_accuracy", "heldout_accuracy", "target", "time_to_target",
                "iterations_to_target", "grad_equiv_to_target", "message", "options")
#: columns of the summary table (medians over seeds)
SUMMARY_COLUMNS = ("method", "converged", "reached target", "iterations", "time [s]", "grad-equiv",
                   "time to target [s]", "grad-equiv to target", "train loss", "held-out loss", "held-out acc")
_X = (("time", "wall time [s]"), ("iteration", "iterations"), (GRAD_EQUIV, "gradient-equivalents"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def write_run_csv(run: Run, path: str | os.PathLike) -> None:
    """The run's history, one row per iteration (RUN_FIELDS); a header only for a run that failed
    before its first record."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RUN_FIELDS)
        for r in run.history:
            w.writerow([run.problem, run.method, run.seed, *(repr(float(r[k])) for k in RUN_FIELDS[3:])])


def _median(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}g}"


def _best(result: ProblemResult, seed: int) -> float:
    return min((min(r["loss"] for r in run.history) for run in result.runs if run.seed == seed and run.history),
               default=math.nan)


def summary_rows(result: ProblemResult, methods: Sequence[str]) -> list[dict[str, str]]:
    """One row per method (SUMMARY_COLUMNS): counts over seeds, medians over the runs that
    produced a history; to-target medians over the runs that reached the target."""
    rows = []
    for m in methods:
        runs = [r for r in result.runs if r.method == m]
        if not runs:
            continue
        hit = [r for r in runs if not math.isnan(r.time_to_target)]
        ran = [r for r in runs if r.history]

        def med(key: str, digits: int = 3) -> str:
            return _fmt(_median([r.final(key) for r in ran]), digits)

        def med_attr(attr: str, digits: int = 3, pool: Sequence[Run] = ran) -> str:
            return _fmt(_median([getattr(r, attr) for r in pool]), digits)

        acc = _median([r.heldout_accuracy for r in ran])
        rows.append({
            "method": m,
            "converged": f"{sum(r.status == 'converged' for r in runs)}/{len(runs)}",
            "reached target": f"{len(hit)}/{len(runs)}",
            "iterations": med("iteration", 4),
            "time [s]": med("time"),
            "grad-equiv": med(GRAD_EQUIV, 4),
            "time to target [s]": med_attr("time_to_target", pool=hit),
            "grad-equiv to target": med_attr("grad_equiv_to_target", 4, pool=hit),
            "train loss": med("loss", 6),
            "held-out loss": med_attr("heldout_loss", 6),
            "held-out acc": "-" if math.isnan(acc) else f"{100 * acc:.1f}%",
        })
    return rows


def _table(rows: list[dict[str, str]]) -> list[str]:
    cols = SUMMARY_COLUMNS
    rule = "|".join("---" if c == "method" else "---:" for c in cols)
    lines = ["| " + " | ".join(cols) + " |", f"|{rule}|"]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return lines


def _notes(result: ProblemResult, methods: Sequence[str]) -> list[str]:
    """Options per method, then every failure, divergence and skip with its message."""
    out = []
    for m in methods:
        runs = [r for r in result.runs if r.method == m]
        if runs and runs[0].options:
            out.append(f"- `{m}` options: " + ", ".join(f"{k}={v!r}" for k, v in runs[0].options.items()))
    for m in methods:
        if m in result.skipped:
            out.append(f"- `{m}` skipped: {result.skipped[m]}")
        bad: dict[str, list[int]] = {}
        for r in result.runs:
            if r.method == m and r.status in ("failed", "diverged"):
                bad.setdefault(f"{r.status}: {r.message}", []).append(r.seed)
        out += [f"- `{m}` {msg} (seeds {', '.join(map(str, seeds))})" for msg, seeds in bad.items()]
    return out


def summary_markdown(bench: Benchmark, figures: dict[str, str] | None = None) -> str:
    """The whole report: settings, then per problem its costs, table, notes and figure."""
    s = bench.settings
    lines = ["# Optimizer benchmark", ""]
    keys = ("date", "machine", "load", "threads", "versions", "stopping", "target")
    lines += [f"- {k}: {s[k]}" for k in keys if k in s]
    lines += [f"- seeds: {', '.join(map(str, bench.seeds))}; one theta0 per seed, shared by every method",
              "- time: the method's own wall time; monitoring (the loss and gradient recorded at each iterate "
              "of a reference row) is excluded",
              "- grad-equiv: gradient evaluations plus every other kernel call weighted by its measured cost "
              "relative to value_and_grad (ratios below); torch.optim rows count PyTorch gradient evaluations",
              "- medians over seeds; to-target medians over the runs that reached the target", ""]
    for res in bench.results:
        p = res.problem
        data = f"{res.n_train} train / {res.n_heldout} held-out samples, " if res.n_train else "No data, "
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in res.ratios.items() if k != "grad")
        b = res.budget
        limit = f"{b['time_limit']:g} s" if b["time_limit"] is not None else "no time limit"
        lines += [f"## {p.name}", "", f"{p.description}. {data}P = {res.n_params} parameters. "
                  f"Budget per run: max_iter {b['max_iter']}, tol {b['tol']:g}, {limit}.", "",
                  f"Kernel costs: value_and_grad {1e3 * res.grad_seconds:.3g} ms; relative to it: {ratios}. "
                  "Targets: " + ", ".join(f"seed {k}: {v:.6g}" for k, v in res.targets.items()) + ".", ""]
        lines += _table(summary_rows(res, bench.methods)) + [""]
        notes = _notes(res, bench.methods)
        lines += notes + ([""] if notes else [])
        if figures and p.name in figures:
            lines += [f"![{p.name}: loss minus the best loss found, median and range over seeds]"
                      f"({figures[p.name]})", ""]
    return "\n".join(lines)


def _curve(run: Run, key: str, f_best: float, grid: np.ndarray) -> np.ndarray:
    """loss - f_best at each grid point: the last record at or before it (the first before the
    run starts, the final one after it ends)."""
    x = np.array([r[key] for r in run.history])
    y = np.array([r["loss"] for r in run.history]) - f_best
    idx = np.clip(np.searchsorted(x, grid, side="right") - 1, 0, len(x) - 1)
    return y[idx]


def plot_problem(result: ProblemResult, methods: Sequence[str], path: str | os.PathLike) -> None:
    """Loss minus the best loss found (log scale) against wall time, iterations and
    gradient-equivalents (log scales): per method the median over seeds and a min-max band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    best = {s: _best(result, s) for s in {r.seed for r in result.runs}}
    floor = 1e-15 * max(1.0, *(abs(b) for b in best.values() if not math.isnan(b)))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = plt.get_cmap("tab20")
    drawn = [m for m in methods if any(r.method == m and len(r.history) > 1 for r in result.runs)]
    for i, m in enumerate(drawn):
        runs = [r for r in result.runs if r.method == m and len(r.history) > 1]
        for ax, (key, label) in zip(axes, _X):
            xs = np.array([r[key] for run in runs for r in run.history[1:]])
            lo = xs[xs > 0].min() if np.any(xs > 0) else 1.0
            hi = max(xs.max(), lo * 1.01)
            grid = np.geomspace(lo, hi, 200)
            if key == "iteration":
                grid = np.unique(grid.round())
            ys = np.maximum(np.array([_curve(r, key, best[r.seed], grid) for r in runs]), floor)
            style = "--" if m in REFERENCES else "-"
            color = colors((2 * i) % 20 + (i // 10) % 2)   # the 10 strong colors first, then their light pairs
            ax.plot(grid, np.median(ys, axis=0), style, color=color, label=m, lw=1.6)
            ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.15, lw=0)
    for ax, (_, label) in zip(axes, _X):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("loss - best loss found")
    seeds = len({r.seed for r in result.runs})
    fig.suptitle(f"{result.problem.name}: median and min-max over {seeds} seed(s)")
    fig.tight_layout()
    if drawn:   # beside the panels, where it hides no curve
        fig.legend(*axes[0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.0, 0.93),
                   fontsize=9, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(bench: Benchmark, out_dir: str | os.PathLike, plots: bool = True) -> list[str]:
    """Write runs/<problem>/<method>__seed<k>.csv, runs.csv, summary.md and (with ``plots``)
    <problem>.png into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows: list[dict[str, Any]] = []
    for res in bench.results:
        folder = out / "runs" / _slug(res.problem.name)
        folder.mkdir(parents=True, exist_ok=True)
        for run in res.runs:
            path = folder / f"{_slug(run.method)}__seed{run.seed}.csv"
            write_run_csv(run, path)
            written.append(path)
            rows.append({"problem": run.problem, "method": run.method, "seed": run.seed, "status": run.status,
                         "iterations": run.final("iteration"), "time": run.final("time"),
                         "grad_equiv": run.final(GRAD_EQUIV), "train_loss": run.final("loss"),
                         "grad_norm": run.final("grad_norm"), "heldout_loss": run.heldout_loss,
                         "train_accuracy": run.train_accuracy, "heldout_accuracy": run.heldout_accuracy,
                         "target": run.target, "time_to_target": run.time_to_target,
                         "iterations_to_target": run.iterations_to_target,
                         "grad_equiv_to_target": run.grad_equiv_to_target, "message": run.message,
                         "options": json.dumps(run.options, default=repr)})
    path = out / "runs.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, _RUNS_FIELDS)
        w.writeheader()
        w.writerows(rows)
    written.append(path)
    figures = {}
    if plots:
        for res in bench.results:
            fig = out / f"{_slug(res.problem.name)}.png"
            plot_problem(res, bench.methods, fig)
            figures[res.problem.name] = fig.name
            written.append(fig)
    path = out / "summary.md"
    path.write_text(summary_markdown(bench, figures) + "\n")
    written.append(path)
    return [str(p) for p in written]
