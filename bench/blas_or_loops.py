"""BLAS calls or fused loops for small contractions: the CPU target's cost model, measured.

The CPU target makes every GEMM-shaped contraction a BLAS call
(``codegen.targets.CPU``: ``gemm_min_work=0, gemm_min_depth=0``). This script
times that against the earlier rule (loops fused into the row loop below
8192 multiply-adds per 128-row chunk or below depth 16), the same networks
built both ways in one process, calls interleaved round by round, medians::

    python bench/blas_or_loops.py [--threads 1] [--quick] [--only xor,W1,...]

Threads: Numba and BLAS pinned (``--threads``, default 1: the per-call
work, not the thread pool, is compared).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Sequence

if __package__:
    from . import _common as common
else:
    import _common as common

NETS = {   # id: (layer sizes, activation, batch)
    "xor": ((2, 2, 1), "tanh", 4),
    "xor1k": ((2, 2, 1), "tanh", 1000),
    "narrow8": ((4, 8, 8, 8, 2), "tanh", 256),
    "deep16": ((4, 16, 16, 16, 16, 16, 2), "tanh", 512),
    "W1": ((2, 32, 32, 1), "tanh", 1024),
    "W1b32": ((2, 32, 32, 1), "tanh", 32),
    "mid": ((16, 64, 64, 4), "relu", 512),
}


def parse_args(argv: Sequence[str] | None = None):  # type: ignore[no-untyped-def]
    p = common.arg_parser(__doc__, ",".join(NETS))
    p.set_defaults(threads=1)
    return common.parse(p, argv)


if __name__ == "__main__":  # before NumPy loads OpenBLAS
    common.reexec_clean_env(parse_args().threads)

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.append(REPO)


def build(sizes: tuple[int, ...], act: str, dtype: type, target):  # type: ignore[no-untyped-def]
    import symgrad as sg
    x, t = sg.input("x", sizes[0]), sg.target("t", sizes[-1])
    h = x
    for k, w in enumerate(sizes[1:-1]):
        h = sg.dense(h, w, act, name=f"l{k}")
    o = sg.dense(h, sizes[-1], name="o")
    return sg.compile(sg.mse(o, t), output=o, backend=target, dtype=dtype)


def main(argv: Sequence[str] | None = None) -> None:
    from codegen.targets import CPU
    args = parse_args(argv)
    threads = common.Threads(args.threads)
    loops = dataclasses.replace(CPU, gemm_min_work=8192, gemm_min_depth=16)
    only = [k for k in args.only.split(",") if k] or list(NETS)
    print(f"# {common.cpu_model()}; Numba and BLAS threads: {args.threads}")
    rows = []
    for key in only:
        sizes, act, n = NETS[key]
        for dtype in (np.float64, np.float32):
            rng = np.random.default_rng(0)
            X, T = rng.normal(size=(n, sizes[0])).astype(dtype), rng.normal(size=(n, sizes[-1])).astype(dtype)
            ms = {"blas": build(sizes, act, dtype, CPU), "loops": build(sizes, act, dtype, loops)}
            th = ms["blas"].init(0).astype(dtype)
            v = np.ones_like(th)
            cells = []
            for kind in ("value_and_grad", "hvp"):
                cases = {name: common.Case((lambda m=m: m.value_and_grad(th, X, T)) if kind == "value_and_grad"
                                           else (lambda m=m: m.hvp(th, v, X, T))) for name, m in ms.items()}
                common.time_interleaved(cases, threads, rounds=5 if args.quick else 15,
                                        block_s=0.02 if args.quick else 0.05)
                cells += [common.fmt_time(cases["loops"].median), common.fmt_time(cases["blas"].median),
                          common.fmt_ratio(cases["blas"].median, cases["loops"].median)]
            rows.append([key, str(n), np.dtype(dtype).name, *cells])
    print(common.markdown_table(["net", "rows", "dtype", "v&g loops", "v&g BLAS", "BLAS/loops",
                                 "hvp loops", "hvp BLAS", "BLAS/loops"], rows))


if __name__ == "__main__":
    main()
