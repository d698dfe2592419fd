"""Optimizer demo: a digits classifier declared in the DSL, its derivation and kernel, then four
optimizers compared on it with the benchmark harness (table printed, figure saved).

    python examples/optimizer_demo.py [--seeds 3] [--time-limit 3] [--out bench/results/optimizer_demo]

Needs scikit-learn (the digits data ship with it) and matplotlib (the figure):
``pip install -e ".[demo]"``, which ``bash scripts/demo.sh`` does for you. About
1-2 minutes on 2 cores the first time (Numba compiles the gradient, HVP and
Gauss-Newton kernels), less once they are cached.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import symgrad as sg
from symgrad import harness

# 64 pixel features -> 32 tanh units -> 10 class scores; softmax cross-entropy + a small L2 penalty
x = sg.input("x", 64)
y = sg.labels("y", 10)
W1, b1 = sg.param("l1.W", (32, 64)), sg.param("l1.b", 32)
W2, b2 = sg.param("l2.W", (10, 32)), sg.param("l2.b", 10)
scores = W2 @ sg.tanh(W1 @ x + b1) + b2
loss = sg.softmax_cross_entropy(scores, y) + 1e-4 * (sg.l2(W1) + sg.l2(W2))
model = sg.compile(loss, output=scores)

#: one first-order method, a quasi-Newton one and two Newton-type ones (exact HVPs; Gauss-Newton)
METHODS = ("adam", "lbfgs", "newton_cg", "levenberg_marquardt")


def build() -> harness.Instance:
    """The digits data (seeded 80/20 split, standardized) for the model above."""
    train, heldout = harness.dataset("digits")
    return harness.Instance(model, train, heldout, accuracy=harness.class_accuracy)


def head(text: str, n: int) -> str:
    lines = text.splitlines()
    return "\n".join(lines[:n] + ([f"    ... ({len(lines) - n} more lines)"] if len(lines) > n else []))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=3.0, help="seconds of each method's own time per run "
                   "(default 3: every method gets the same time budget)")
    p.add_argument("--out", default="bench/results/optimizer_demo")
    args = p.parse_args()

    print(model, "\n")
    print("Derivation (forward program, then the adjoints), first lines:")
    print(head(str(model.derivation()), 14), "\n")
    src = model.source("value_and_grad")
    start = src.index("def ")
    print("Generated Numba kernel (value_and_grad), first lines:")
    print(head(src[start:], 24), "\n")

    # the built-in digits_mlp problem is this network; use its tuned learning rate for adam
    problem = harness.Problem("digits_mlp_demo", build, "the 64-32-10 tanh MLP above on digits",
                              max_iter=100_000, tol=1e-6, time_limit=args.time_limit,
                              options=harness.get_problem("digits_mlp").options)
    bench = harness.run_benchmark([problem], METHODS, seeds=args.seeds)
    files = bench.write(args.out)
    print(Path(args.out, "summary.md").read_text())
    print(f"wrote {len(files)} files to {args.out}/; the figure: {args.out}/digits_mlp_demo.png")


if __name__ == "__main__":
    main()
