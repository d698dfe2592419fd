"""``symgrad.harness``: compare optimizers fairly on fixed problems, and say how.

>>> from symgrad import harness
>>> bench = harness.run_benchmark(["logistic", "digits_mlp"], ["adam", "lbfgs", "newton_cg"], seeds=3)
>>> bench.write("bench/results/optimizers")      # runs/*.csv, runs.csv, summary.md, <problem>.png

The same from the command line: ``symgrad bench --problems logistic --methods
adam,lbfgs,newton_cg``. Every method starts from the same theta0 per seed;
costs are wall time (threads pinned), iterations and gradient-equivalents
(each kernel call weighted by its measured cost); failures are recorded,
not dropped. ``problems`` holds the built-in problems and the ``Problem``
type for your own, ``methods`` the runners (symgrad.optim and the
scipy.optimize / torch.optim reference rows), ``protocol`` the run,
``report`` the CSV, Markdown and plots.
"""
from __future__ import annotations

from .methods import (DEFAULT_METHODS, GROUPS, REFERENCES, SCIPY, STATUSES, TORCH, Trace, check_options,
                      method_options, resolve_methods, run_method, unavailable)
from .problems import (DATASETS, PROBLEMS, Instance, Problem, binary_accuracy, class_accuracy, dataset,
                       get_problem, register, torch_params)
from .protocol import (Benchmark, ProblemResult, Run, cost_ratios, grad_equivalents, pinned_threads, reach_target,
                       run_benchmark)
from .report import (RUN_FIELDS, SUMMARY_COLUMNS, plot_problem, summary_markdown, summary_rows, write_report,
                     write_run_csv)

__all__ = [
    "Problem", "Instance", "PROBLEMS", "register", "get_problem", "dataset", "DATASETS", "binary_accuracy",
    "class_accuracy",
    "torch_params", "run_benchmark", "Benchmark", "ProblemResult", "Run", "cost_ratios", "grad_equivalents",
    "reach_target", "pinned_threads", "Trace", "run_method", "resolve_methods", "method_options",
    "check_options", "unavailable", "DEFAULT_METHODS", "GROUPS", "REFERENCES", "SCIPY", "TORCH", "STATUSES",
    "write_report", "write_run_csv", "summary_rows", "summary_markdown", "plot_problem", "RUN_FIELDS",
    "SUMMARY_COLUMNS",
]
