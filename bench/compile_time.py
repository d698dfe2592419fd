"""Compile latency against graph size: what a notebook user waits for.

For deep narrow tanh MLPs (depth chosen so the forward program has about the
requested number of ops; ``--mixed``: every layer another width, the activations
in turn, so no two neighbouring layers are alike), each in a fresh process with a fresh kernel cache
(symgrad.runtime's helpers already in Numba's cache, as after a first model
on the machine): ``sg.compile``, then the first call of ``value_and_grad``,
``loss`` and ``predict`` (each compiles its kernels), then the same model in
another fresh process from the cache. Reports seconds, and seconds per op.

    python bench/compile_time.py [--ops 50,200,600] [--threads 1] [--mixed]

Threads: Numba and BLAS pinned (``--threads``); compile time is
single-threaded (Numba holds a compiler lock).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import markdown_table

PROBE = """
import json, sys, time
sys.path[:0] = [{symgrad_dir!r}]
import numpy as np, numba
numba.set_num_threads({threads})
import symgrad as sg
x, t = sg.input("x", 4), sg.target("t", 2)
h = x
for k, (width, act) in enumerate({layers!r}):
    h = sg.dense(h, width, act, name=f"l{{k}}")
o = sg.dense(h, 2, name="out")
rng = np.random.default_rng(0)
X, T = rng.normal(size=(64, 4)), rng.normal(size=(64, 2))
t0 = time.perf_counter()
m = sg.compile(sg.mse(o, t), output=o)
t1 = time.perf_counter()
theta = m.init(0)
m.value_and_grad(theta, X, T)
t2 = time.perf_counter()
m.loss(theta, X, T)
t3 = time.perf_counter()
m.predict(theta, X)
t4 = time.perf_counter()
print(json.dumps({{"forward_ops": m.stats["forward_ops"], "gradient_ops": m.stats["ops_after_cse"],
                  "source_lines": m.stats["source_lines"], "compile_s": t1 - t0,
                  "value_and_grad_s": t2 - t1, "loss_s": t3 - t2, "predict_s": t4 - t3,
                  "cache": m.stats["kernels_compiled"]["value_and_grad"]["numba_cache"]}}))
"""


def depth_for(ops: int) -> int:
    """Hidden layers giving about ``ops`` forward ops (3 per dense layer, plus leaves and loss)."""
    return max(1, round((ops - 12) / 5))


def layers_for(depth: int, mixed: bool) -> list[tuple[int, str]]:
    """Hidden layers (width, activation): 8 tanh units each, or with ``mixed`` widths 3, 4, 5, ... and
    the activations in turn."""
    acts = ("tanh", "relu", "sigmoid", "softplus")
    return [(3 + k % 97, acts[k % 4]) if mixed else (8, "tanh") for k in range(depth)]


def probe(layers: list[tuple[int, str]], threads: int, cache: str, numba_cache: str) -> dict:
    import symgrad
    code = PROBE.format(symgrad_dir=os.path.dirname(os.path.dirname(os.path.abspath(symgrad.__file__))),
                        threads=threads, layers=layers)
    env = {**os.environ, "SYMGRAD_CACHE_DIR": cache, "NUMBA_CACHE_DIR": numba_cache,
           "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"probe ({len(layers)} hidden layers) failed:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="50,200,600", help="forward-program sizes to probe")
    p.add_argument("--threads", type=int, default=1, help="Numba and BLAS threads (default 1)")
    p.add_argument("--mixed", action="store_true",
                   help="layers that do not repeat: widths 3, 4, 5, ... and tanh, relu, sigmoid, softplus in turn")
    args = p.parse_args(argv)
    threads = max(1, args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="symgrad-compile-") as tmp:
        nb = os.path.join(tmp, "numba")
        probe(layers_for(1, False), threads, os.path.join(tmp, "warm"), nb)   # symgrad.runtime's helpers into Numba's cache
        nets = [("4-16-16-2 tanh MLP", [(16, "tanh"), (16, "tanh")])]
        nets += [(str(d), layers_for(d, args.mixed)) for d in (depth_for(int(s)) for s in args.ops.split(","))]
        for label, layers in nets:
            cache = os.path.join(tmp, f"net{len(rows)}")
            cold, hot = probe(layers, threads, cache, nb), probe(layers, threads, cache, nb)
            first = cold["compile_s"] + cold["value_and_grad_s"]
            rows.append([label, str(cold["forward_ops"]), str(cold["gradient_ops"]), str(cold["source_lines"]),
                         f"{cold['compile_s']:.2f}", f"{cold['value_and_grad_s']:.2f}", f"{cold['loss_s']:.2f}",
                         f"{cold['predict_s']:.2f}", f"{1e3 * first / cold['forward_ops']:.1f}",
                         f"{hot['compile_s'] + hot['value_and_grad_s']:.2f} ({hot['cache']})"])
    print(markdown_table(["hidden layers", "forward ops", "gradient ops", "source lines", "sg.compile s",
                          "first value_and_grad s", "then loss s", "then predict s",
                          "ms per forward op (compile + first call)", "cached: compile + first call s"], rows))


if __name__ == "__main__":
    main()
