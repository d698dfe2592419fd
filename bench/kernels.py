"""Benchmark symgrad's fused value_and_grad kernels against NumPy, PyTorch, JAX and the GEMM limit.

Run from the repository root (takes a few minutes on 2 cores)::

    python bench/kernels.py [--threads 2] [--quick] [--only W1,W3,compile] [--no-curvature] [--json out.json]

Every (workload, dtype) row is timed in one process, all implementations
interleaved round by round, and reported as medians. Before timing, every
peer's loss and gradient are checked against symgrad's; a disagreement aborts
the run. The process re-executes itself first, without the OpenBLAS variables
that halve GEMM speed on these machines, and pins threads (stated in the
header). Workload ids: W1, W2, W3, W4, W1b32 (W1 at batch 32: per-call
overhead), `compile` (W2 built in fresh subprocesses: the first model on a
fresh install, a new model, the same model again from the cache), and the CNNs C1 (LeNet-5) and
C2 (a residual CNN) of bench/cnn.py (unless --no-cnn). Unless --no-curvature, the same run then times the second-order
kernels on W1..W4 beside JAX and PyTorch HVPs (the section bench/curvature.py
runs on its own).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

if __package__:
    from . import _common as common
else:
    import _common as common


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = common.arg_parser(__doc__, "W1,W2,W3,W4,W1b32,C1,C2,compile")
    p.add_argument("--no-cnn", action="store_true", help="skip the CNN section (C1, C2; see bench/cnn.py)")
    p.add_argument("--no-curvature", action="store_true",
                   help="skip the second-order section (hvp, gnvp, value_grad_hvp; see bench/curvature.py)")
    return common.parse(p, argv)


if __name__ == "__main__":  # before NumPy loads OpenBLAS
    common.reexec_clean_env(parse_args().threads)

import numpy as np  # noqa: E402  (only now: OpenBLAS reads its environment when loaded)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # the checkout's symgrad, unless one is installed or on PYTHONPATH
    sys.path.append(REPO)

Grads = dict[str, np.ndarray]


@dataclass(frozen=True)
class Workload:
    """A dense network and loss; `l2` > 0 marks logistic regression with an L2 penalty on W."""

    key: str
    sizes: tuple[int, ...]
    activation: str | None
    loss: str  # "mse" | "ce" (softmax cross-entropy) | "bce" (bce_with_logits)
    batch: int
    l2: float = 0.0

    @property
    def title(self) -> str:
        act = f" {self.activation}" if self.activation else ""
        name = {"mse": "MSE", "ce": "CE", "bce": "BCE+L2"}[self.loss]
        return f"{self.key} {'-'.join(map(str, self.sizes))}{act} {name} b{self.batch}"

    def layer_names(self) -> list[tuple[str, str]]:
        """(weight, bias) parameter names per layer, in symgrad's declaration order."""
        if self.l2:
            return [("W", "b")]
        names = [f"l{i + 1}" for i in range(len(self.sizes) - 2)] + ["out"]
        return [(f"{n}.W", f"{n}.b") for n in names]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for (w, b), n_in, n_out in zip(self.layer_names(), self.sizes[:-1], self.sizes[1:]):
            shapes[w], shapes[b] = (n_out, n_in), (n_out,)
        return shapes


WORKLOADS = {w.key: w for w in [
    Workload("W1", (2, 32, 32, 1), "tanh", "mse", 1024),
    Workload("W2", (64, 128, 128, 10), "relu", "ce", 256),
    Workload("W3", (784, 512, 512, 10), "relu", "ce", 512),
    Workload("W4", (100, 1), None, "bce", 10000, l2=1e-4),
    Workload("W1b32", (2, 32, 32, 1), "tanh", "mse", 32),
]}
DTYPES = (np.float64, np.float32)
RTOL = {np.float64: 1e-6, np.float32: 1e-3}
COMPILE_WORKLOAD = "W2"


def make_data(w: Workload, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Seeded inputs and targets: (N, in) features; (N, out) reals, (N, out) 0/1, or (N,) int labels."""
    rng = np.random.default_rng(1)
    n, n_in, n_out = w.batch, w.sizes[0], w.sizes[-1]
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if w.loss == "ce":
        return X, rng.integers(0, n_out, n)
    if w.loss == "bce":
        return X, (rng.random((n, n_out)) < 0.5).astype(dtype)
    return X, np.sin(X.sum(axis=1, keepdims=True)).astype(dtype)


def avoid_relu_kinks(w: Workload, params: Grads, X: np.ndarray, margin: float = 1e-4) -> np.ndarray:
    """Redraw samples with a ReLU pre-activation within `margin` of 0 (exact, in float64).

    The derivative at a kink is a tie that float32 rounding breaks differently
    per implementation: one such unit of W3 (|z| = 2e-8) changed a weight
    gradient by 1.3e-2 relative, failing verification for no fault of anyone.
    """
    if w.activation != "relu":
        return X
    rng, X = np.random.default_rng(3), X.copy()
    layers = [(params[a].astype(np.float64), params[b].astype(np.float64)) for a, b in w.layer_names()[:-1]]
    for _ in range(100):
        h, near = X.astype(np.float64), np.zeros(len(X), bool)
        for W, b in layers:
            z = h @ W.T + b
            near |= (np.abs(z) < margin).any(axis=1)
            h = np.maximum(z, 0)
        if not near.any():
            return X
        X[near] = rng.standard_normal((int(near.sum()), X.shape[1]))
    raise SystemExit(f"{w.key}: could not draw data away from ReLU kinks")


# --- symgrad ---------------------------------------------------------------------------

def build_symgrad(w: Workload, dtype: type, backend: str = "cpu") -> Any:
    """The workload in symgrad's DSL, compiled for ``backend``."""
    import symgrad as sg

    x = sg.input("x", w.sizes[0])
    tgt = sg.labels("y", w.sizes[-1]) if w.loss == "ce" else sg.target("t", w.sizes[-1])
    if w.l2:  # explicit parameters, so the penalty can name W
        W, b = sg.param("W", (w.sizes[1], w.sizes[0])), sg.param("b", w.sizes[1])
        out = W @ x + b
    else:
        h = x
        for (name, _), width in zip(w.layer_names()[:-1], w.sizes[1:-1]):
            h = sg.dense(h, width, activation=w.activation, name=name.split(".")[0])
        out = sg.dense(h, w.sizes[-1], name="out")
    loss = {"mse": sg.mse, "ce": sg.softmax_cross_entropy, "bce": sg.bce_with_logits}[w.loss](out, tgt)
    if w.l2:
        loss = loss + w.l2 * sg.l2(W)
    return sg.compile(loss, output=out, dtype=dtype, backend=backend)


class Symgrad:
    """symgrad's value_and_grad, the implementation under test (BLAS pinned to 1 thread)."""

    blas_threads = 1

    def __init__(self, w: Workload, dtype: type) -> None:
        self.model = build_symgrad(w, dtype)
        expected = tuple(w.param_shapes())
        if tuple(self.model.param_names) != expected:
            raise SystemExit(f"{w.key}: symgrad param_names {self.model.param_names} != {expected}")
        self.theta = self.model.init(seed=0)

    def bind(self, X: np.ndarray, T: np.ndarray) -> None:
        self.args = (self.theta, X, T)

    def params(self) -> Grads:
        return {k: np.array(v) for k, v in self.model.unflatten(self.theta).items()}

    def run(self) -> object:
        return self.model.value_and_grad(*self.args)

    def value_and_grad(self) -> tuple[float, Grads]:
        J, g = self.model.value_and_grad(*self.args)
        return float(J), {k: np.array(v) for k, v in self.model.unflatten(g).items()}


# --- peers -----------------------------------------------------------------------------

class NumpyBackprop:
    """Hand-written NumPy forward/backward, PyTorch loss conventions, BLAS on all threads."""

    def __init__(self, w: Workload, params: Grads, X: np.ndarray, T: np.ndarray, threads: int) -> None:
        self.w, self.X, self.T, self.blas_threads = w, X, T, threads
        self.layers = [(params[a], params[b]) for a, b in w.layer_names()]

    def value_and_grad(self) -> tuple[float, Grads]:
        w, X, T = self.w, self.X, self.T
        n = X.shape[0]
        hs = [X]
        for W, b in self.layers[:-1]:
            z = hs[-1] @ W.T
            z += b
            hs.append(np.tanh(z, out=z) if w.activation == "tanh" else np.maximum(z, 0, out=z))
        W, b = self.layers[-1]
        o = hs[-1] @ W.T
        o += b
        if w.loss == "mse":
            d = o - T
            J = float(np.mean(d * d))
            do = d * (2 / d.size)
        elif w.loss == "ce":
            m = o.max(axis=1, keepdims=True)
            e = np.exp(o - m)
            s = e.sum(axis=1, keepdims=True)
            rows = np.arange(n)
            J = float(np.mean(m[:, 0] + np.log(s[:, 0]) - o[rows, T]))
            do = e / s
            do[rows, T] -= 1
            do /= n
        else:  # bce_with_logits: max(o, 0) - o t + log(1 + exp(-|o|)), sigmoid'(o) in a stable form
            e = np.exp(-np.abs(o))
            J = float(np.mean(np.maximum(o, 0) - o * T + np.log1p(e)) + w.l2 * np.sum(W * W))
            do = (np.where(o >= 0, 1, e) / (1 + e) - T) / o.size
        grads: Grads = {}
        for i in range(len(self.layers) - 1, -1, -1):
            (wn, bn), (W, _) = self.w.layer_names()[i], self.layers[i]
            grads[wn], grads[bn] = do.T @ hs[i], do.sum(axis=0)
            if i:
                dh = do @ W
                h = hs[i]
                do = dh * (1 - h * h) if w.activation == "tanh" else dh * (h > 0)
        if w.l2:
            grads["W"] += 2 * w.l2 * self.layers[0][0]
        return J, grads

    run = value_and_grad


class Torch:
    """PyTorch eager: forward, loss, loss.backward() (grads reset to None each call)."""

    blas_threads = None

    def __init__(self, torch: Any, w: Workload, params: Grads, X: np.ndarray, T: np.ndarray) -> None:
        F = torch.nn.functional
        self.torch, self.w = torch, w
        self.p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        self.X, self.T = torch.from_numpy(X), torch.from_numpy(T)
        self.layers = [(self.p[a], self.p[b]) for a, b in w.layer_names()]
        self.act = torch.tanh if w.activation == "tanh" else torch.relu
        self.loss = {"mse": F.mse_loss, "ce": F.cross_entropy, "bce": F.binary_cross_entropy_with_logits}[w.loss]

    def run(self) -> Any:
        for p in self.p.values():
            p.grad = None
        F = self.torch.nn.functional
        h = self.X
        for W, b in self.layers[:-1]:
            h = self.act(F.linear(h, W, b))
        W, b = self.layers[-1]
        loss = self.loss(F.linear(h, W, b), self.T)
        if self.w.l2:
            loss = loss + self.w.l2 * (W * W).sum()
        loss.backward()
        return loss

    def value_and_grad(self) -> tuple[float, Grads]:
        J = self.run().item()
        return J, {k: p.grad.numpy().copy() for k, p in self.p.items()}


class Jax:
    """jax.jit(jax.value_and_grad(f)) on device-resident params and data, result blocked on."""

    blas_threads = None

    def __init__(self, jax: Any, w: Workload, params: Grads, X: np.ndarray, T: np.ndarray) -> None:
        jnp = jax.numpy
        names = w.layer_names()
        act = jnp.tanh if w.activation == "tanh" else jax.nn.relu

        def f(p: dict[str, Any], X: Any, T: Any) -> Any:
            h = X
            for a, b in names[:-1]:
                h = act(h @ p[a].T + p[b])
            a, b = names[-1]
            o = h @ p[a].T + p[b]
            if w.loss == "mse":
                return jnp.mean((o - T) ** 2)
            if w.loss == "ce":
                lse = jax.nn.logsumexp(o, axis=1)
                return jnp.mean(lse - jnp.take_along_axis(o, T[:, None], axis=1)[:, 0])
            bce = jnp.mean(jnp.maximum(o, 0) - o * T + jnp.log1p(jnp.exp(-jnp.abs(o))))
            return bce + w.l2 * jnp.sum(p[a] * p[a])

        self.jax, self.f, self.fn = jax, f, jax.jit(jax.value_and_grad(f))
        self.args = ({k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(X),
                     jnp.asarray(T.astype(np.int32) if w.loss == "ce" else T))

    def run(self) -> Any:
        return self.jax.block_until_ready(self.fn(*self.args))

    def value_and_grad(self) -> tuple[float, Grads]:
        J, g = self.run()
        return float(J), {k: np.asarray(v) for k, v in g.items()}


class GemmLimit:
    """Only the matmuls of forward+backward (3 per layer, 2 for the first) via np.dot into preallocated arrays.

    Timed with BLAS at 1 and at all threads; the faster is the limit (small
    products are faster on one thread).
    """

    def __init__(self, w: Workload, dtype: type, threads: int) -> None:
        rng = np.random.default_rng(2)
        n, self.blas_threads = w.batch, threads

        def arr(*shape: int) -> np.ndarray:
            return rng.standard_normal(shape).astype(dtype)

        self.ops: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for i, (n_in, n_out) in enumerate(zip(w.sizes[:-1], w.sizes[1:])):
            H, W, dZ = arr(n, n_in), arr(n_out, n_in), arr(n, n_out)
            self.ops += [(H, W.T, arr(n, n_out)), (dZ.T, H, arr(n_out, n_in))]
            if i:
                self.ops.append((dZ, W, arr(n, n_in)))

    def run(self) -> None:
        for a, b, c in self.ops:
            np.dot(a, b, out=c)


# --- one row: build, verify, time -----------------------------------------------------

def max_rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / max |ref|: element-wise relative errors blow up on near-zero gradients."""
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref))) / (scale or 1.0)


def verify(key: str, dtype: type, ref: tuple[float, Grads], impls: dict[str, Any]) -> dict[str, float]:
    """Every peer's loss and gradient against symgrad's; abort with all mismatches listed."""
    J0, g0 = ref
    rtol, worst, bad = RTOL[dtype], {}, []
    for name, impl in impls.items():
        J, g = impl.value_and_grad()
        errs = {"loss": abs(J - J0) / max(abs(J0), 1e-30)}
        if set(g) != set(g0):
            bad.append(f"{name}: gradient names {sorted(g)} != symgrad's {sorted(g0)}")
            continue
        errs.update({k: max_rel_err(g[k], np.asarray(g0[k], np.float64)) for k in g0})
        worst[name] = max(errs.values())
        bad += [f"{name} {k}: relative error {e:.2e} > {rtol:g}" for k, e in errs.items() if not e <= rtol]
    if bad:
        raise SystemExit(f"VERIFICATION FAILED for {key} {np.dtype(dtype).name} "
                         f"(reference: symgrad, loss {J0!r}):\n  " + "\n  ".join(bad))
    return worst


def bench_row(w: Workload, dtype: type, peers: dict[str, Any], threads: common.Threads,
              rounds: int, block_s: float) -> dict[str, Any]:
    sg_impl = Symgrad(w, dtype)
    params = sg_impl.params()
    X, T = make_data(w, dtype)
    X = avoid_relu_kinks(w, params, X)
    sg_impl.bind(X, T)
    impls: dict[str, Any] = {"NumPy": NumpyBackprop(w, params, X, T, threads.threads)}
    if peers["torch"] is not None:
        impls["PyTorch"] = Torch(peers["torch"], w, params, X, T)
    if peers["jax"] is not None:
        impls["JAX"] = Jax(peers["jax"], w, params, X, T)
    with threads.blas(1):
        ref = sg_impl.value_and_grad()
    with threads.blas(threads.threads):
        errors = verify(w.key, dtype, ref, impls)
    gemm = {f"GEMM, BLAS {n} thread{'s' * (n > 1)}": GemmLimit(w, dtype, n) for n in sorted({1, threads.threads})}
    impls = {"symgrad": sg_impl, **impls, **gemm}
    cases = {k: common.Case(v.run, v.blas_threads) for k, v in impls.items()}
    common.time_interleaved(cases, threads, rounds, block_s)
    median = {k: c.median for k, c in cases.items()}
    median["GEMM limit"] = min(median[k] for k in gemm)
    return {"workload": w.key, "title": w.title, "dtype": np.dtype(dtype).name,
            "median_s": median,
            "samples_s": {k: c.samples for k, c in cases.items()},
            "calls_per_sample": {k: c.inner for k, c in cases.items()},
            "max_rel_err_vs_symgrad": errors,
            "symgrad_stats": sg_impl.model.stats}


# --- cold compile and cached load, each in a fresh process -----------------------------

PROBE = """
import json, sys, time
sys.path[:0] = [{bench_dir!r}, {symgrad_dir!r}]
t0 = time.perf_counter()
import symgrad
t1 = time.perf_counter()
import numba, numpy as np, kernels
numba.set_num_threads({threads})
w = kernels.WORKLOADS[{key!r}]
X, T = kernels.make_data(w, np.{dtype})
t2 = time.perf_counter()
model = kernels.build_symgrad(w, np.{dtype})
t3 = time.perf_counter()
model.value_and_grad(model.init(seed=0), X, T)
t4 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "compile_s": t3 - t2, "first_call_s": t4 - t3,
                  "total_s": t4 - t2, "stats": model.stats}}, default=str))
"""


#: compile-probe phases: (name, SYMGRAD_CACHE_DIR, NUMBA_CACHE_DIR), each dir "a"/"b"/"n" a fresh
#: temporary directory shared by the phases that name it
PROBE_PHASES = (("first model on a fresh install", "a", "n"),   # nothing compiled yet
                ("new model (cold)", "b", "n"),                  # runtime helpers in Numba's cache
                ("same model again (cached)", "b", "n"))         # its kernels cached too


def compile_probe(threads: int, key: str = COMPILE_WORKLOAD, dtype: str = "float64") -> dict[str, Any]:
    """sg.compile + first value_and_grad in a fresh process for each of PROBE_PHASES.

    Numba's cache goes to a fresh NUMBA_CACHE_DIR, so the first phase pays for
    everything, symgrad.runtime's array helpers included (built once per
    machine); the second is a model this machine has not compiled before.
    """
    import symgrad

    code = PROBE.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), threads=threads, key=key, dtype=dtype,
                        symgrad_dir=os.path.dirname(os.path.dirname(os.path.abspath(symgrad.__file__))))
    out: dict[str, Any] = {"workload": key, "dtype": dtype, "phases": []}
    with tempfile.TemporaryDirectory(prefix="symgrad-bench-cache-") as tmp:
        dirs = {d: os.path.join(tmp, d) for d in "abn"}
        for name, sg_dir, nb_dir in PROBE_PHASES:
            env = {**os.environ, "SYMGRAD_CACHE_DIR": dirs[sg_dir], "NUMBA_CACHE_DIR": dirs[nb_dir]}
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"compile probe ({name}) failed:\n{r.stdout}{r.stderr}")
            out["phases"].append({"phase": name, **json.loads(r.stdout.strip().splitlines()[-1])})
    out["cold"], out["cached"] = out["phases"][1], out["phases"][2]
    return out


# --- report ----------------------------------------------------------------------------

def threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel ran in this process
        return "not initialized"


def header(args: argparse.Namespace, threads: common.Threads, notes: list[str],
           title: str = "symgrad value_and_grad benchmark", peers: str | None = None) -> list[str]:
    """The report's header: machine, versions, environment, threads (``peers``: how the other
    implementations were pinned), BLAS libraries, a warning if the CPUs were busy, notes."""
    import numba
    import scipy
    import symgrad

    n, busy_after = threads.threads, common.busy_cpus()
    versions = [f"python {sys.version.split()[0]}", f"numpy {np.__version__}", f"scipy {scipy.__version__}",
                f"numba {numba.__version__}", f"symgrad {getattr(symgrad, '__version__', '?')}"]
    versions += [f"{m} {sys.modules[m].__version__}" for m in ("torch", "jax") if m in sys.modules]
    gemm = f"faster of BLAS at 1 and {n} threads" if n > 1 else "BLAS at 1 thread"
    xla = f" and XLA_FLAGS={os.environ['XLA_FLAGS']}" if "XLA_FLAGS" in os.environ else ""
    if peers is None:
        peers = f"NumPy backprop with BLAS at {n}; GEMM limit: {gemm}; "
    lines = [f"# {title}{' (--quick)' if args.quick else ''}", "",
             f"- CPU: {common.cpu_model()}; this process may run on CPUs {sorted(os.sched_getaffinity(0))}; "
             f"other processes kept {args.busy_before:.2f} CPUs busy before the run, {busy_after:.2f} after it",
             f"- {', '.join(versions)}",
             f"- {common.env_changes()}",
             f"- threads: numba.set_num_threads({n}); symgrad with BLAS limited to 1 thread (threadpoolctl); "
             f"{peers}torch.set_num_threads({n}); JAX/XLA by the affinity mask{xla}",
             f"- numba threading layer: {threading_layer()}",
             "- BLAS/OpenMP libraries loaded (threadpoolctl):"]
    lines += [f"  - {lib}" for lib in threads.blas_libraries()]
    if max(args.busy_before, busy_after) > 0.2:
        lines.append("- **WARNING: other processes were using the CPUs (see above); spinning "
                     "thread pools (PyTorch, NumPy's BLAS) suffer most, up to 100x. Rerun on an idle machine "
                     "before quoting numbers.**")
    lines += [f"- note: {note}" for note in notes]
    return lines


COLUMNS = ("symgrad", "JAX", "PyTorch", "NumPy", "GEMM limit")


def table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        m = r["median_s"]
        sg_t = m["symgrad"]
        body.append([r["title"], r["dtype"]] + [common.fmt_time(m.get(c)) for c in COLUMNS]
                    + [common.fmt_ratio(sg_t, m.get(c)) for c in COLUMNS[1:]])
    return common.markdown_table(["workload", "dtype", *COLUMNS]
                                 + [f"sg/{c.split()[0]}" for c in COLUMNS[1:]], body)


def targets(rows: list[dict[str, Any]], probe: dict[str, Any] | None) -> list[str]:
    """The issue's targets that this run measured, each PASS or MISS with the measured value."""
    med = {(r["workload"], r["dtype"]): r["median_s"] for r in rows}
    out = []

    def check(label: str, value: float, limit: float, at_most: bool = True) -> None:
        ok = value <= limit if at_most else value >= limit
        out.append(f"- {'PASS' if ok else 'MISS'} {label}: {value:.3g} ({'<=' if at_most else '>='} {limit:g})")

    for (key, dt), m in med.items():
        for peer, limits in (("JAX", {"W1": 0.5, "W2": 0.6, "W3": 1.0}), ("PyTorch", {"W1": 0.5, "W2": 0.5}),
                             ("GEMM limit", {"W3": 1.25})):
            if key in limits and peer in m:
                check(f"{key} {dt} symgrad/{peer}", m["symgrad"] / m[peer], limits[key])
        if key == "W1b32":
            check(f"W1b32 {dt} per-call time [µs]", m["symgrad"] * 1e6, 15)
    if ("W3", "float64") in med and ("W3", "float32") in med:
        check("W3 float64/float32 speed-up", med["W3", "float64"]["symgrad"] / med["W3", "float32"]["symgrad"],
              1.6, at_most=False)
    if probe:
        check(f"new model: compile + first call, {probe['workload']} [s]", probe["cold"]["total_s"], 3.0)
        check(f"cached build + first call, {probe['workload']} [s]", probe["cached"]["total_s"], 0.5)
    return out


def main(args: argparse.Namespace) -> None:
    args.busy_before = common.busy_cpus()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if __package__:
        from . import cnn
    else:
        import cnn
    unknown = only - set(WORKLOADS) - set(cnn.WORKLOADS) - {"compile"}
    if unknown:
        raise SystemExit(f"--only: unknown ids {sorted(unknown)}; known: {list(WORKLOADS)}, "
                         f"{list(cnn.WORKLOADS)} and 'compile'")
    selected = [w for k, w in WORKLOADS.items() if not only or k in only]
    rounds, block_s = (7, 0.005) if args.quick else (25, 0.02)

    notes: list[str] = []
    torch, why = common.optional_import("torch")
    notes += [why + ": PyTorch column skipped"] if why else []
    jax, why = common.optional_import("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)  # float64 rows need it; float32 inputs stay float32
    notes += [why + ": JAX column skipped"] if why else []
    threads = common.Threads(args.threads, torch)
    notes.append(f"medians over {rounds} interleaved rounds, each the mean of a block of >= {block_s * 1e3:g} ms "
                 "of calls; peers verified against symgrad first (loss and max|dg|/max|g|, "
                 f"rtol {RTOL[np.float64]:g} float64, {RTOL[np.float32]:g} float32)")

    rows = []
    for w in selected:
        for dtype in DTYPES:
            print(f"... {w.title} {np.dtype(dtype).name}", file=sys.stderr, flush=True)
            rows.append(bench_row(w, dtype, {"torch": torch, "jax": jax}, threads, rounds, block_s))
    curvature_rows: list[dict[str, Any]] = []
    curvature_report: list[str] = []
    curvature_ids = [w.key for w in selected if w.key in ("W1", "W2", "W3", "W4")]
    if not args.no_curvature and curvature_ids:
        if __package__:
            from . import curvature
        else:
            import curvature
        notes += curvature.peer_notes(torch, jax)
        curvature_rows, curvature_report = curvature.section(curvature_ids, {"torch": torch, "jax": jax},
                                                             threads, rounds, block_s)
    cnn_ids = [k for k in cnn.WORKLOADS if (not only and not args.no_cnn) or k in only]
    cnn_rows, cnn_report = [], []
    if cnn_ids:
        cnn_rows, _, cnn_report = cnn.section(cnn_ids, threads, torch, jax, args.quick)
    probe = None
    if not only or "compile" in only:
        print(f"... cold/cached compile of {COMPILE_WORKLOAD}", file=sys.stderr, flush=True)
        probe = compile_probe(args.threads)

    head = header(args, threads, notes)
    lines = list(head)
    if rows:
        lines += ["", table(rows)]
    if probe:
        lines += ["", f"Compile ({WORKLOADS[probe['workload']].title} {probe['dtype']}, fresh process each, "
                  "after `import symgrad`):", "",
                  common.markdown_table(
                      ["phase", "sg.compile", "first value_and_grad", "total", "import symgrad"],
                      [[d["phase"], common.fmt_time(d["compile_s"]), common.fmt_time(d["first_call_s"]),
                        common.fmt_time(d["total_s"]), common.fmt_time(d["import_s"])] for d in probe["phases"]]),
                  ""] + [f"model.stats, {d['phase']}: {json.dumps(d['stats'], default=str)}" for d in probe["phases"]]
    checks = targets(rows, probe)
    lines += ["", "Targets (first order):", *checks] if checks else []
    lines += ["", "## Second order (hvp, gnvp, value_grad_hvp)", "", *curvature_report] if curvature_report else []
    lines += ["", "## Convolutional networks (bench/cnn.py)", "", *cnn_report] if cnn_report else []
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": head, "rows": rows, "curvature_rows": curvature_rows, "cnn_rows": cnn_rows,
                       "compile": probe}, f, indent=1, default=str)


if __name__ == "__main__":
    main(parse_args())
