"""Our own kernels' run time, two versions of symgrad side by side: the no-regression check of a change.

Each round times ``value_and_grad`` and ``hvp`` of every workload (float64 and float32) in a
fresh process per version, the versions alternating, and the table gives the median over
rounds of each version's median, their ratio, and the spread (slowest/fastest round) of each:
on a shared, noisy host only a ratio beyond the spread is a difference.

    git worktree add /tmp/before <commit>
    python bench/before_after.py /tmp/before . [--rounds 3] [--threads 2] [--only W1,W2,W3,W4,W1b32,DEEP]

Threads: Numba and BLAS pinned to ``--threads``. Workloads: the W1-W4 and W1b32 networks of
bench/kernels.py, and DEEP, a 38-layer 8-wide tanh MLP (4 inputs, 2 outputs, MSE, batch 256).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from _common import markdown_table

WORKLOADS = {"W1": ((2, 32, 32, 1), "tanh", "mse", 1024), "W2": ((64, 128, 128, 10), "relu", "ce", 256),
             "W3": ((784, 512, 512, 10), "relu", "ce", 512), "W4": ((100, 1), None, "bce", 10000),
             "W1b32": ((2, 32, 32, 1), "tanh", "mse", 32), "DEEP": ((4,) + (8,) * 38 + (2,), "tanh", "mse", 256)}

PROBE = """
import json, sys, time
import numpy as np, numba
numba.set_num_threads({threads})
import symgrad as sg
out = {{}}
for key, (sizes, act, loss, n) in {work!r}.items():
    for dt in ("float64", "float32"):
        h = x = sg.input("x", sizes[0])
        for j, s in enumerate(sizes[1:-1]):
            h = sg.dense(h, s, act, name=f"l{{j}}")
        o = sg.dense(h, sizes[-1], name="o")
        rng = np.random.default_rng(0)
        X = rng.normal(size=(n, sizes[0])).astype(dt)
        if loss == "ce":
            L, T = sg.softmax_cross_entropy(o, sg.labels("y", sizes[-1])), rng.integers(0, sizes[-1], n)
        elif loss == "bce":
            L, T = sg.bce_with_logits(o, sg.target("t", 1)), (rng.random((n, 1)) > 0.5).astype(dt)
        else:
            L, T = sg.mse(o, sg.target("t", sizes[-1])), rng.normal(size=(n, sizes[-1])).astype(dt)
        m = sg.compile(L, output=o, dtype=dt)
        th = m.init(0).astype(dt)
        v = rng.normal(size=th.size).astype(dt)
        res = {{}}
        for name, f in (("value_and_grad", lambda: m.value_and_grad(th, X, T)), ("hvp", lambda: m.hvp(th, v, X, T))):
            f()
            t0 = time.perf_counter(); f(); once = time.perf_counter() - t0
            reps = max(3, int(0.05 / max(once, 1e-6)))
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                times.append((time.perf_counter() - t0) / reps)
            res[name] = float(np.median(times))
        out[f"{{key}} {{dt}}"] = res
print(json.dumps(out))
"""


def run(path: str, work: dict, threads: int, cache: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(path), "SYMGRAD_CACHE_DIR": cache,
           "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, "-c", PROBE.format(threads=threads, work=work)], env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{path}: probe failed\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", help="a checkout of the earlier version (its root, put on PYTHONPATH)")
    p.add_argument("after", help="a checkout of the later version")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    args = p.parse_args(argv)
    work = {k: WORKLOADS[k] for k in args.only.split(",")}
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="symgrad-ab-") as tmp:
        for _ in range(args.rounds):
            for which in ("before", "after"):
                runs[which].append(run(getattr(args, which), work, args.threads, os.path.join(tmp, which)))
    rows = []
    for key in runs["before"][0]:
        for kind in ("value_and_grad", "hvp"):
            b = [r[key][kind] for r in runs["before"]]
            a = [r[key][kind] for r in runs["after"]]
            mb, ma = statistics.median(b), statistics.median(a)
            rows.append([key, kind, f"{mb * 1e6:.1f}", f"{ma * 1e6:.1f}", f"{ma / mb:.2f}",
                         f"{max(b) / min(b):.2f}", f"{max(a) / min(a):.2f}"])
    print(f"{args.rounds} rounds, {args.threads} threads (Numba and BLAS)")
    print(markdown_table(["workload", "kind", "before µs", "after µs", "after / before", "spread before",
                          "spread after"], rows))


if __name__ == "__main__":
    main()
