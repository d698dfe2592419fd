"""Compare optimizers on fixed problems: a thin script over ``symgrad.harness`` (= ``symgrad bench``).

Run from anywhere (a minute with --quick on 2 cores; the first run also
compiles the problems' kernels, cached after that)::

    python bench/optimizers.py --quick
    python bench/optimizers.py --problems digits_mlp,logistic --methods adam,lbfgs,newton_cg,scipy \\
        --seeds 5 --option adam.lr=0.003 --out bench/results/optimizers

Every method starts from the same theta0 per seed; the output directory gets
one CSV per run, runs.csv, summary.md (the table printed at the end) and one
figure per problem. ``--list`` shows the problems, methods and groups.
"""
from __future__ import annotations

import sys

from symgrad.harness.command import main

if __name__ == "__main__":
    sys.exit(main(prog="bench/optimizers.py"))
