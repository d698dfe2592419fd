"""Benchmark symgrad's CNN kernels (C1: LeNet-5, C2: a residual CNN) against PyTorch and JAX.

    python bench/cnn.py [--threads 2] [--quick] [--only C1,C2] [--json out.json]

C1: LeNet-5 on 1x28x28 (conv5x5 pad 2 to 6, relu, max-pool 2, conv5x5 to 16, relu, max-pool 2,
400-120-84-10 relu, softmax-CE), batch 128. C2: conv3x3 (pad 1) 3->16 relu, two residual blocks
of two conv3x3 each, global average pooling, dense 16->10, softmax-CE, on 3x32x32, batch 64.
Synthetic data (seeded). For each (workload, dtype) one process times, interleaved round by round
and reported as medians: symgrad ``value_and_grad`` and ``hvp`` (public methods), PyTorch eager
(``torch.nn.functional``: its oneDNN convolutions) ``loss.backward()`` and double-backward HVP,
JAX ``jit(value_and_grad)`` and ``jit(jvp(grad))``. Before timing, each peer's loss, gradient and
HVP are checked against symgrad's (rtol 1e-8 float64, 2e-3 float32); a disagreement aborts. The
process re-executes itself without the OpenBLAS variables that halve GEMM speed here and pins
threads (numba, torch; XLA by the affinity mask; BLAS at 1 thread inside symgrad). Also reported:
symgrad's first ``value_and_grad`` call (compile) and the cached load, each in a fresh process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

if __package__:
    from . import _common as common
else:
    import _common as common

WORKLOADS = {"C1": "LeNet-5 1x28x28 b128", "C2": "residual CNN 3x32x32 b64"}


def parse_args(argv: Sequence[str] | None = None):
    return common.parse(common.arg_parser(__doc__, ",".join(WORKLOADS)), argv)


if __name__ == "__main__":
    common.reexec_clean_env(parse_args().threads)

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.append(REPO)

BUILD = '''
import symgrad as sg, numpy as np
def build(key, dtype):
    y = sg.labels("y", 10)
    if key == "C1":
        img = sg.input("img", (1, 28, 28))
        h = sg.max_pool2d(sg.conv2d(img, 6, 5, padding=2, activation="relu", name="c1"), 2)
        h = sg.max_pool2d(sg.conv2d(h, 16, 5, activation="relu", name="c2"), 2)
        z = sg.dense(sg.dense(sg.flatten(h), 120, "relu", name="f1"), 84, "relu", name="f2")
        out = sg.dense(z, 10, name="f3")
    else:
        img = sg.input("img", (3, 32, 32))
        h = sg.conv2d(img, 16, 3, padding=1, activation="relu", name="stem")
        for k in (1, 2):
            r = sg.conv2d(sg.conv2d(h, 16, 3, padding=1, activation="relu", name=f"b{k}a"), 16, 3, padding=1,
                          name=f"b{k}b")
            h = sg.relu(h + r)
        out = sg.dense(sg.global_avg_pool(h), 10, name="fc")
    return sg.compile(sg.softmax_cross_entropy(out, y), output=out, dtype=dtype)
'''
exec(BUILD)   # defines build(key, dtype)


def data(key: str, dtype: Any) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(0)
    shape, n = ((1, 28, 28), 128) if key == "C1" else ((3, 32, 32), 64)
    return rng.normal(size=(n,) + shape).astype(dtype), rng.integers(0, 10, n), n


def torch_forward(torch: Any, key: str, p: dict, x: Any) -> Any:
    F = torch.nn.functional
    if key == "C1":
        h = F.max_pool2d(F.relu(F.conv2d(x, p["c1.W"], p["c1.b"], padding=2)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, p["c2.W"], p["c2.b"])), 2).flatten(1)
        h = F.relu(F.relu(h @ p["f1.W"].T + p["f1.b"]) @ p["f2.W"].T + p["f2.b"])
        return h @ p["f3.W"].T + p["f3.b"]
    h = F.relu(F.conv2d(x, p["stem.W"], p["stem.b"], padding=1))
    for k in (1, 2):
        r = F.conv2d(F.relu(F.conv2d(h, p[f"b{k}a.W"], p[f"b{k}a.b"], padding=1)), p[f"b{k}b.W"], p[f"b{k}b.b"],
                     padding=1)
        h = F.relu(h + r)
    return h.mean(dim=(2, 3)) @ p["fc.W"].T + p["fc.b"]


def jax_forward(jnp: Any, lax: Any, key: str, p: dict, x: Any) -> Any:
    def conv(h, w, b, pad):
        y = lax.conv_general_dilated(h, w, (1, 1), [(pad, pad), (pad, pad)],
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None]

    def pool(h):
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    relu = lambda z: jnp.maximum(z, 0)   # noqa: E731
    if key == "C1":
        h = pool(relu(conv(x, p["c1.W"], p["c1.b"], 2)))
        h = pool(relu(conv(h, p["c2.W"], p["c2.b"], 0))).reshape(x.shape[0], -1)
        h = relu(relu(h @ p["f1.W"].T + p["f1.b"]) @ p["f2.W"].T + p["f2.b"])
        return h @ p["f3.W"].T + p["f3.b"]
    h = relu(conv(x, p["stem.W"], p["stem.b"], 1))
    for k in (1, 2):
        h = relu(h + conv(relu(conv(h, p[f"b{k}a.W"], p[f"b{k}a.b"], 1)), p[f"b{k}b.W"], p[f"b{k}b.b"], 1))
    return h.mean(axis=(2, 3)) @ p["fc.W"].T + p["fc.b"]


COMPILE_PROBE = '''
import sys, time, json
sys.path[:0] = [{repo!r}]
import numpy as np
t0 = time.perf_counter()
{build}
import numpy as np
rng = np.random.default_rng(0)
m = build({key!r}, np.float64)
X = rng.normal(size=(8,) + ((1, 28, 28) if {key!r} == "C1" else (3, 32, 32))); Y = rng.integers(0, 10, 8)
t1 = time.perf_counter()
m.value_and_grad(m.init(0), X, Y)
print(json.dumps({{"compile_s": t1 - t0, "first_call_s": time.perf_counter() - t1}}))
'''


def compile_probe(key: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SYMGRAD_CACHE_DIR": tmp}
        code = COMPILE_PROBE.format(repo=REPO, build=BUILD, key=key)
        out = []
        for _ in range(2):   # cold, then the same model from the cache
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(r.stderr[-3000:])
            out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return {"cold": out[0], "cached": out[1]}


def row(key: str, dtype: Any, threads: common.Threads, torch: Any, jax: Any, rounds: int, block_s: float) -> dict:
    m = build(key, dtype)
    X, Y, n = data(key, dtype)
    theta = m.init(0).astype(dtype)
    v = np.random.default_rng(1).normal(size=m.n_params).astype(dtype)
    with threads.blas(1):
        f, g = m.value_and_grad(theta, X, Y)
        hv = m.hvp(theta, v, X, Y)
    rtol = 1e-8 if dtype == np.float64 else 2e-3
    cases = {"sg grad": common.Case(lambda: m.value_and_grad(theta, X, Y), 1),
             "sg hvp": common.Case(lambda: m.hvp(theta, v, X, Y), 1)}
    checks = {}

    def check(name: str, f2: float, g2: np.ndarray, hv2: np.ndarray) -> None:
        errs = (abs(f2 - f) / abs(f), np.abs(g2 - g).max() / np.abs(g).max(), np.abs(hv2 - hv).max() / np.abs(hv).max())
        checks[name] = errs
        if max(errs) > rtol:
            raise SystemExit(f"{key} {np.dtype(dtype).name}: {name} disagrees with symgrad (loss, grad, hvp): {errs}")
    if torch is not None:
        tdt = torch.float64 if dtype == np.float64 else torch.float32
        P = {k: torch.tensor(np.array(a), dtype=tdt, requires_grad=True) for k, a in m.unflatten(theta).items()}
        V = {k: torch.tensor(np.array(a), dtype=tdt) for k, a in m.unflatten(v).items()}
        tx, ty = torch.tensor(X), torch.tensor(Y)

        def t_grad():
            loss = torch.nn.functional.cross_entropy(torch_forward(torch, key, P, tx), ty)
            return loss, torch.autograd.grad(loss, list(P.values()))

        def t_hvp():
            loss = torch.nn.functional.cross_entropy(torch_forward(torch, key, P, tx), ty)
            gs = torch.autograd.grad(loss, list(P.values()), create_graph=True)
            return torch.autograd.grad(sum((gi * V[k]).sum() for gi, k in zip(gs, P)), list(P.values()))
        loss, gs = t_grad()
        check("PyTorch", loss.item(), np.concatenate([x.detach().numpy().ravel() for x in gs]),
              np.concatenate([x.detach().numpy().ravel() for x in t_hvp()]))
        cases["torch grad"] = common.Case(t_grad, None)
        cases["torch hvp"] = common.Case(t_hvp, None)
    if jax is not None:
        import jax.numpy as jnp
        from jax import lax
        jax.config.update("jax_enable_x64", True)
        jdt = jnp.float64 if dtype == np.float64 else jnp.float32
        PJ = {k: jnp.asarray(a, dtype=jdt) for k, a in m.unflatten(theta).items()}
        VJ = {k: jnp.asarray(a, dtype=jdt) for k, a in m.unflatten(v).items()}
        jx, jy = jnp.asarray(X, dtype=jdt), jnp.asarray(Y)

        def loss_fn(p):
            z = jax_forward(jnp, lax, key, p, jx)
            return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, jy[:, None], 1)[:, 0])
        vg = jax.jit(jax.value_and_grad(loss_fn))
        hvp_fn = jax.jit(lambda p, t: jax.jvp(jax.grad(loss_fn), (p,), (t,))[1])
        lf, gj = vg(PJ)
        hj = hvp_fn(PJ, VJ)
        flat = lambda d: np.concatenate([np.asarray(d[k]).ravel() for k in PJ])   # noqa: E731
        check("JAX", float(lf), flat(gj), flat(hj))
        cases["jax grad"] = common.Case(lambda: jax.block_until_ready(vg(PJ)), None)
        cases["jax hvp"] = common.Case(lambda: jax.block_until_ready(hvp_fn(PJ, VJ)), None)
    common.time_interleaved(cases, threads, rounds, block_s)
    return {"workload": key, "dtype": np.dtype(dtype).name, "n": n, "n_params": m.n_params,
            "median_s": {k: c.median for k, c in cases.items()}, "checks": checks}


def section(keys: Sequence[str], threads: common.Threads, torch: Any, jax: Any, quick: bool) -> tuple[list, dict, list[str]]:
    """Time the CNN workloads ``keys`` (also run by bench/kernels.py): rows, compile probes, report."""
    rounds, block_s = (5, 0.05) if quick else (15, 0.2)
    rows = []
    for k in keys:
        for dt in (np.float64, np.float32):
            print(f"... CNN {k} {np.dtype(dt).name}", file=sys.stderr, flush=True)
            rows.append(row(k, dt, threads, torch, jax, rounds, block_s))
    probes = {k: compile_probe(k) for k in keys}
    cols = ["sg grad", "sg hvp", "torch grad", "torch hvp", "jax grad", "jax hvp"]
    table = [[f"{r['workload']} {WORKLOADS[r['workload']]}", r["dtype"]] +
             [common.fmt_time(r["median_s"].get(c)) for c in cols] +
             [common.fmt_ratio(r["median_s"].get("sg grad"), r["median_s"].get(d)) for d in ("jax grad", "torch grad")] +
             [common.fmt_ratio(r["median_s"].get("sg hvp"), r["median_s"].get(d)) for d in ("sg grad", "jax hvp")]
             for r in rows]
    lines = [f"CNNs: medians over {rounds} interleaved rounds; peers' loss, gradient and HVP checked against "
             "symgrad's", "",
             common.markdown_table(["workload", "dtype", "symgrad value_and_grad", "symgrad hvp", "PyTorch backward",
                                    "PyTorch 2bwd hvp", "JAX value_and_grad", "JAX hvp", "sg/JAX grad",
                                    "sg/PyTorch grad", "sg hvp/sg grad", "sg hvp/JAX hvp"], table), "",
             "symgrad compile (float64, fresh process each, batch 8): cold sg.compile + first value_and_grad, "
             "then cached", "",
             common.markdown_table(["workload", "cold s", "cached s"],
                                   [[k, f"{p['cold']['compile_s'] + p['cold']['first_call_s']:.2f}",
                                     f"{p['cached']['compile_s'] + p['cached']['first_call_s']:.2f}"]
                                    for k, p in probes.items()])]
    return rows, probes, lines


def main(args) -> None:
    torch, why_t = common.optional_import("torch")
    jax, why_j = common.optional_import("jax")
    threads = common.Threads(args.threads, torch)
    keys = [k for k in WORKLOADS if not args.only or k in args.only.split(",")]
    rows, probes, lines = section(keys, threads, torch, jax, args.quick)
    print(f"# symgrad CNN benchmark ({time.strftime('%Y-%m-%d')})\n")
    print(f"- CPU: {common.cpu_model()}; threads: numba {args.threads}, torch {args.threads}, JAX by affinity, "
          f"BLAS 1 inside symgrad; {common.env_changes()}")
    print("- BLAS: " + "; ".join(threads.blas_libraries()))
    for why in (why_t, why_j):
        if why:
            print(f"- {why}")
    print("\n" + "\n".join(lines))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "compile": probes}, fh, indent=1)


if __name__ == "__main__":
    main(parse_args())
