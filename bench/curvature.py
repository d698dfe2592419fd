"""Benchmark symgrad's second-order kernels (HVP, Gauss-Newton product) against JAX and PyTorch.

Run from the repository root (a few minutes on 2 cores; the first run also
compiles symgrad's second-order kernels, cached after that)::

    python bench/curvature.py [--threads 2] [--quick] [--only W1,W3] [--json out.json]

Workloads W1..W4 are those of bench/kernels.py (imported from it, as are the
data, the symgrad model and the PyTorch and JAX setups). For each (workload,
dtype) row one process times, all interleaved round by round and reported as
medians:

- symgrad: ``value_and_grad``, ``hvp`` (exact Hessian times v), ``gnvp``
  (generalized Gauss-Newton times v), the fused ``value_grad_hvp``, and
  ``value_and_grad`` followed by ``hvp`` (what the fused call replaces), all
  through the public methods, so per-call overhead counts;
- JAX: ``jit(value_and_grad)`` and a jitted forward-over-reverse HVP,
  ``jvp(grad(f))``;
- PyTorch: eager ``loss.backward()``, ``torch.func.jvp(torch.func.grad(f))``
  (forward-over-reverse) and double backward (``autograd.grad`` with
  ``create_graph=True``).

Before timing, the peers' loss and gradient are checked against symgrad's
(as in bench/kernels.py), their HVPs against symgrad's ``hvp`` (max|dHv| /
max|Hv| per parameter, rtol 1e-10 float64, 1e-4 float32), and symgrad against
itself (fused call = separate calls; ``hvp`` and ``gnvp`` symmetric, ``gnvp``
positive semi-definite, ``gnvp`` = ``hvp`` on W4, whose logits are linear in
the parameters); any disagreement aborts the run. ReLU workloads draw their
data away from the kinks, as bench/kernels.py does.

The process re-executes itself without the OpenBLAS variables that halve
GEMM speed on these machines and pins threads: the CPU affinity mask
(every thread pool), ``numba.set_num_threads``, ``torch.set_num_threads``,
and BLAS limited to 1 thread around symgrad's calls (threadpoolctl); the
header states all of it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable, Sequence

if __package__:
    from . import _common as common
else:
    import _common as common

IDS = ("W1", "W2", "W3", "W4")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return common.parse(common.arg_parser(__doc__, ",".join(IDS)), argv)


if __name__ == "__main__":  # before NumPy loads OpenBLAS
    common.reexec_clean_env(parse_args().threads)

import numpy as np  # noqa: E402  (only now: OpenBLAS reads its environment when loaded)

if __package__:  # noqa: E402
    from . import kernels as K
else:
    import kernels as K

Grads = K.Grads
#: max|dHv| / max|Hv| per parameter, peers' HVPs and symgrad's self-checks
HVP_RTOL = {np.float64: 1e-10, np.float32: 1e-4}

# Timed cases, in table order: key -> column header.
SG = {"sg grad": "value_and_grad", "sg hvp": "hvp", "sg gnvp": "gnvp",
      "sg fused": "value_grad_hvp", "sg grad, hvp": "value_and_grad + hvp"}
PEERS = {"JAX grad": "JAX value_and_grad", "JAX hvp": "JAX hvp",
         "PyTorch grad": "PyTorch backward", "torch.func hvp": "torch.func hvp",
         "PyTorch 2bwd hvp": "PyTorch double-backward hvp"}


# --- implementations ---------------------------------------------------------------------

class Symgrad(K.Symgrad):
    """kernels.Symgrad plus the second-order calls, all with a fixed direction v."""

    def bind_v(self, X: np.ndarray, T: np.ndarray, v: np.ndarray) -> None:
        self.bind(X, T)
        self.v = v

    def cases(self) -> dict[str, Callable[[], object]]:
        m, (theta, X, T), v = self.model, self.args, self.v

        def grad_then_hvp() -> object:
            return m.value_and_grad(theta, X, T), m.hvp(theta, v, X, T)

        return {"sg grad": lambda: m.value_and_grad(theta, X, T),
                "sg hvp": lambda: m.hvp(theta, v, X, T),
                "sg gnvp": lambda: m.gnvp(theta, v, X, T),
                "sg fused": lambda: m.value_grad_hvp(theta, v, X, T),
                "sg grad, hvp": grad_then_hvp}

    def blocks(self, flat: np.ndarray) -> Grads:
        return {k: np.array(a) for k, a in self.model.unflatten(flat).items()}


class Jax(K.Jax):
    """kernels.Jax (jit(value_and_grad) of its loss f) plus jit(jvp(grad(f))), forward over reverse."""

    def __init__(self, jax: Any, w: K.Workload, params: Grads, X: np.ndarray, T: np.ndarray, v: Grads) -> None:
        super().__init__(jax, w, params, X, T)
        f = self.f
        self.hvp_fn = jax.jit(lambda p, v, X, T: jax.jvp(lambda q: jax.grad(f)(q, X, T), (p,), (v,))[1])
        p, X_, T_ = self.args
        self.hvp_args = (p, {k: jax.numpy.asarray(a) for k, a in v.items()}, X_, T_)

    def hvp(self) -> Any:
        return self.jax.block_until_ready(self.hvp_fn(*self.hvp_args))

    def hvp_blocks(self) -> Grads:
        return {k: np.asarray(a) for k, a in self.hvp().items()}


class Torch(K.Torch):
    """kernels.Torch (eager backward) plus torch.func forward-over-reverse and double-backward HVPs."""

    def __init__(self, torch: Any, w: K.Workload, params: Grads, X: np.ndarray, T: np.ndarray, v: Grads) -> None:
        super().__init__(torch, w, params, X, T)
        self.v = {k: torch.from_numpy(a) for k, a in v.items()}
        self.v_list = [self.v[k] for k in self.p]
        self.p_func = {k: p.detach() for k, p in self.p.items()}  # torch.func needs no requires_grad
        # F.mse_loss (mean) fails under jvp(grad(...)), "ZeroTensors are immutable" (pytorch/pytorch#123996):
        # the HVPs use the same mean of squares written out; the timed backward keeps F.mse_loss.
        self.hvp_loss = (lambda o, t: ((o - t) ** 2).mean()) if w.loss == "mse" else self.loss

    def objective(self, p: dict[str, Any]) -> Any:
        """kernels.Torch.run's loss as a function of a parameter dict (run fuses it with backward)."""
        F = self.torch.nn.functional
        layers = [(p[a], p[b]) for a, b in self.w.layer_names()]
        h = self.X
        for W, b in layers[:-1]:
            h = self.act(F.linear(h, W, b))
        W, b = layers[-1]
        loss = self.hvp_loss(F.linear(h, W, b), self.T)
        if self.w.l2:
            loss = loss + self.w.l2 * (W * W).sum()
        return loss

    def func_hvp(self) -> dict[str, Any]:
        fx = self.torch.func
        return fx.jvp(fx.grad(self.objective), (self.p_func,), (self.v,))[1]

    def double_backward_hvp(self) -> tuple[Any, ...]:
        params = list(self.p.values())
        g = self.torch.autograd.grad(self.objective(self.p), params, create_graph=True)
        gv = sum((gi * vi).sum() for gi, vi in zip(g, self.v_list))
        return self.torch.autograd.grad(gv, params)

    def func_hvp_blocks(self) -> Grads:
        return {k: a.numpy().copy() for k, a in self.func_hvp().items()}

    def double_backward_hvp_blocks(self) -> Grads:
        return {k: a.numpy().copy() for k, a in zip(self.p, self.double_backward_hvp())}


# --- verification ------------------------------------------------------------------------

def fail(key: str, dtype: type, what: str, bad: list[str]) -> None:
    if bad:
        raise SystemExit(f"VERIFICATION FAILED for {key} {np.dtype(dtype).name} ({what}):\n  " + "\n  ".join(bad))


def verify_hvp(key: str, dtype: type, ref: Grads, impls: dict[str, Callable[[], Grads]]) -> dict[str, float]:
    """Every peer's HVP against symgrad's hvp, per parameter; abort with all mismatches listed."""
    rtol, worst, bad = HVP_RTOL[dtype], {}, []
    for name, hvp in impls.items():
        hv = hvp()
        if set(hv) != set(ref):
            bad.append(f"{name}: parameter names {sorted(hv)} != symgrad's {sorted(ref)}")
            continue
        errs = {k: K.max_rel_err(hv[k], np.asarray(ref[k], np.float64)) for k in ref}
        worst[name] = max(errs.values())
        bad += [f"{name} {k}: relative error {e:.2e} > {rtol:g}" for k, e in errs.items() if not e <= rtol]
    fail(key, dtype, "peer HVP vs symgrad hvp", bad)
    return worst


def verify_self(w: K.Workload, dtype: type, sg: Symgrad) -> dict[str, float]:
    """symgrad against itself: fused = separate calls, symmetric hvp/gnvp, PSD gnvp, W4 gnvp = hvp."""
    m, (theta, X, T), v = sg.model, sg.args, sg.v
    rtol = HVP_RTOL[dtype]
    u = np.random.default_rng(5).standard_normal(m.n_params).astype(dtype)
    f, g = m.value_and_grad(theta, X, T)
    hv, hu = m.hvp(theta, v, X, T), m.hvp(theta, u, X, T)
    gv, gu = m.gnvp(theta, v, X, T), m.gnvp(theta, u, X, T)
    f2, g2, hv2 = m.value_grad_hvp(theta, v, X, T)

    def dot(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.dot(a.astype(np.float64), b.astype(np.float64)))

    def norm(a: np.ndarray) -> float:
        return float(np.linalg.norm(a.astype(np.float64)))

    def asym(pu: np.ndarray, pv: np.ndarray) -> float:  # |u.Pv - v.Pu|, scaled by the sizes of both
        return abs(dot(u, pv) - dot(v, pu)) / max(norm(u) * norm(pv) + norm(v) * norm(pu), 1e-300)

    errs = {"value_grad_hvp f": abs(f2 - f) / max(abs(f), 1e-30),
            "value_grad_hvp g": K.max_rel_err(g2, g.astype(np.float64)),
            "value_grad_hvp Hv": K.max_rel_err(hv2, hv.astype(np.float64)),
            "hvp asymmetry": asym(hu, hv), "gnvp asymmetry": asym(gu, gv),
            "gnvp negative curvature": max(0.0, -dot(v, gv)) / max(norm(v) * norm(gv), 1e-300)}
    if w.activation is None and len(w.sizes) == 2:  # logits linear in theta: Gauss-Newton = Hessian
        errs["gnvp vs hvp (linear model)"] = K.max_rel_err(gv, hv.astype(np.float64))
    fail(w.key, dtype, "symgrad self-consistency",
         [f"{k}: {e:.2e} > {rtol:g}" for k, e in errs.items() if not e <= rtol])
    return errs


# --- one row: build, verify, time --------------------------------------------------------

def bench_row(w: K.Workload, dtype: type, peers: dict[str, Any], threads: common.Threads,
              rounds: int, block_s: float) -> dict[str, Any]:
    sg = Symgrad(w, dtype)
    params = sg.params()
    X, T = K.make_data(w, dtype)
    X = K.avoid_relu_kinks(w, params, X)
    v_flat = np.random.default_rng(4).standard_normal(sg.model.n_params).astype(dtype)
    sg.bind_v(X, T, v_flat)
    v = sg.blocks(v_flat)

    grad_peers: dict[str, Any] = {}
    hvp_peers: dict[str, Callable[[], Grads]] = {}
    timed: dict[str, Callable[[], object]] = {}
    if peers["jax"] is not None:
        jx = Jax(peers["jax"], w, params, X, T, v)
        grad_peers["JAX"], hvp_peers["JAX jvp(grad)"] = jx, jx.hvp_blocks
        timed.update({"JAX grad": jx.run, "JAX hvp": jx.hvp})
    if peers["torch"] is not None:
        pt = Torch(peers["torch"], w, params, X, T, v)
        grad_peers["PyTorch"] = pt
        hvp_peers.update({"torch.func jvp(grad)": pt.func_hvp_blocks,
                          "PyTorch double backward": pt.double_backward_hvp_blocks})
        timed.update({"PyTorch grad": pt.run, "torch.func hvp": pt.func_hvp,
                      "PyTorch 2bwd hvp": pt.double_backward_hvp})

    with threads.blas(1):  # also compiles symgrad's second-order kernels on first use
        ref = sg.value_and_grad()
        ref_hvp = sg.blocks(sg.model.hvp(sg.theta, v_flat, X, T))
        errors = {f"symgrad {k}": e for k, e in verify_self(w, dtype, sg).items()}
    with threads.blas(threads.threads):
        errors.update({f"{k} value_and_grad": e for k, e in K.verify(w.key, dtype, ref, grad_peers).items()})
        errors.update({f"{k} hvp": e for k, e in verify_hvp(w.key, dtype, ref_hvp, hvp_peers).items()})

    cases = {k: common.Case(fn, K.Symgrad.blas_threads) for k, fn in sg.cases().items()}
    cases.update({k: common.Case(fn, None) for k, fn in timed.items()})
    common.time_interleaved(cases, threads, rounds, block_s)
    return {"workload": w.key, "title": w.title, "dtype": np.dtype(dtype).name, "n_params": sg.model.n_params,
            "median_s": {k: c.median for k, c in cases.items()},
            "samples_s": {k: c.samples for k, c in cases.items()},
            "calls_per_sample": {k: c.inner for k, c in cases.items()},
            "max_rel_err": errors,
            "madds_per_sample": {k: product_madds(sg.model, k) for k in ("value_and_grad", "hvp", "gnvp")},
            "symgrad_stats": sg.model.stats}


def product_madds(model: Any, kind: str) -> int:
    """Multiply-adds per sample of the contractions (einsums) in ``kind``'s derived program.

    A GEMM-bound kernel's time is about proportional to this: the ratio of two
    kinds' counts is the time ratio a kernel reaches at equal BLAS efficiency,
    so it tells how far from its floor a measured ratio is. Contractions over
    parameters alone run once per call, not per sample, and are not counted.
    """
    from symgrad.ir import BATCH
    from symgrad.ops.einsum import Einsum, parse_spec
    total = 0
    for a in model.derivation(kind).program.body:
        if not isinstance(a.op, Einsum) or not any(x.batched for x in a.args):
            continue
        ins, _ = parse_spec(a.op.spec)
        size = {ch: d for letters, x in zip(ins, a.args)
                for ch, d in zip(letters.replace(BATCH, ""), x.shape)}
        total += math.prod(size.values())
    return total


# --- report ------------------------------------------------------------------------------

def header(args: argparse.Namespace, threads: common.Threads, notes: list[str]) -> list[str]:
    return K.header(args, threads, notes, "symgrad curvature (HVP, Gauss-Newton) benchmark", peers="")


RATIOS = (  # (column header, numerator, denominator)
    ("hvp/grad", "sg hvp", "sg grad"),
    ("gnvp/grad", "sg gnvp", "sg grad"),
    ("fused/(grad, hvp)", "sg fused", "sg grad, hvp"),
    ("sg hvp/JAX hvp", "sg hvp", "JAX hvp"),
    ("sg hvp/torch.func hvp", "sg hvp", "torch.func hvp"),
    ("sg hvp/PyTorch 2bwd hvp", "sg hvp", "PyTorch 2bwd hvp"),
    ("JAX hvp/grad", "JAX hvp", "JAX grad"),
    ("torch.func hvp/grad", "torch.func hvp", "PyTorch grad"),
    ("PyTorch 2bwd hvp/grad", "PyTorch 2bwd hvp", "PyTorch grad"),
)


def tables(rows: list[dict[str, Any]]) -> list[str]:
    cols = {**SG, **PEERS}
    times = [[r["title"], r["dtype"]] + [common.fmt_time(r["median_s"].get(k)) for k in cols] for r in rows]
    ratios = [[r["title"], r["dtype"]] + [common.fmt_ratio(r["median_s"].get(a), r["median_s"].get(b))
                                          for _, a, b in RATIOS] for r in rows]
    madds = [[r["title"], r["dtype"], *(str(r["madds_per_sample"][k]) for k in ("value_and_grad", "hvp", "gnvp")),
              *(f"{r['madds_per_sample'][k] / r['madds_per_sample']['value_and_grad']:.2f}" for k in ("hvp", "gnvp")),
              f"{r['median_s']['sg hvp'] / r['median_s']['sg grad']:.2f}"] for r in rows]
    return ["Medians per call (symgrad columns first):", "",
            common.markdown_table(["workload", "dtype", *cols.values()], times), "",
            "Ratios of medians (\"sg\": symgrad; grad: each library's own value_and_grad; "
            "fused: value_grad_hvp; (grad, hvp): value_and_grad then hvp):", "",
            common.markdown_table(["workload", "dtype", *(h for h, _, _ in RATIOS)], ratios), "",
            "Contraction multiply-adds per sample in symgrad's derived programs (product_madds): at equal "
            "BLAS efficiency a GEMM-bound hvp takes the madds ratio times the gradient's time:", "",
            common.markdown_table(["workload", "dtype", "value_and_grad madds", "hvp madds", "gnvp madds",
                                   "hvp/grad madds", "gnvp/grad madds", "hvp/grad time"], madds)]


#: issue 11: hvp at most 1.8x the gradient (JAX jvp-of-grad takes about 1.6-1.8x its own)
HVP_VS_GRAD = 1.8
HVP_VS_JAX = {"W1": 0.7, "W2": 0.7, "W3": 1.0}


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The curvature targets this run measured, each PASS or MISS with the measured value."""
    out = []

    def check(label: str, value: float, limit: float, strict: bool = False) -> None:
        ok = value < limit if strict else value <= limit
        out.append(f"- {'PASS' if ok else 'MISS'} {label}: {value:.3g} ({'<' if strict else '<='} {limit:g})")

    for r in rows:
        key, dt, m = r["workload"], r["dtype"], r["median_s"]
        check(f"{key} {dt} symgrad hvp / value_and_grad", m["sg hvp"] / m["sg grad"], HVP_VS_GRAD)
        if key in HVP_VS_JAX and "JAX hvp" in m:
            check(f"{key} {dt} symgrad hvp / JAX hvp", m["sg hvp"] / m["JAX hvp"], HVP_VS_JAX[key])
        check(f"{key} {dt} value_grad_hvp / (value_and_grad + hvp)", m["sg fused"] / m["sg grad, hvp"], 1.0,
              strict=True)
    return out


def peer_notes(torch: Any, jax: Any) -> list[str]:
    """What the second-order section's reader needs to know about the peers and the protocol."""
    notes = []
    if torch is None and jax is None:
        notes.append("no peer: symgrad's hvp was checked only against itself (symmetry, fused = separate)")
    notes.append(f"HVPs verified against symgrad's hvp as max|dHv|/max|Hv| per parameter, rtol "
                 f"{HVP_RTOL[np.float64]:g} float64, {HVP_RTOL[np.float32]:g} float32")
    if torch is not None:
        notes.append("PyTorch HVPs on MSE: ((o - t) ** 2).mean() in place of F.mse_loss, which torch.func's "
                     "jvp(grad) rejects (\"ZeroTensors are immutable\", pytorch/pytorch#123996)")
    notes.append("v: one fixed standard-normal direction per row; symgrad through its public methods "
                 "(argument checks and output allocation included)")
    return notes


def section(ids: Sequence[str], peers: dict[str, Any], threads: common.Threads,
            rounds: int, block_s: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Time the second-order kernels on the workloads `ids`: (rows, report lines with tables and targets)."""
    rows = []
    for key in ids:
        for dtype in K.DTYPES:
            w = K.WORKLOADS[key]
            print(f"... second order: {w.title} {np.dtype(dtype).name}", file=sys.stderr, flush=True)
            rows.append(bench_row(w, dtype, peers, threads, rounds, block_s))
    lines = [*tables(rows)] if rows else []
    checks = targets(rows)
    lines += ["", "Targets (second order):", *checks] if checks else []
    return rows, lines


def main(args: argparse.Namespace) -> None:
    args.busy_before = common.busy_cpus()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(IDS)
    if unknown:
        raise SystemExit(f"--only: unknown ids {sorted(unknown)}; known: {list(IDS)}")
    rounds, block_s = (7, 0.005) if args.quick else (25, 0.02)

    torch, why_torch = common.optional_import("torch")
    jax, why_jax = common.optional_import("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)  # float64 rows need it; float32 inputs stay float32
    notes = ([why_torch + ": PyTorch columns skipped"] if why_torch else []) + (
        [why_jax + ": JAX columns skipped"] if why_jax else [])
    threads = common.Threads(args.threads, torch)
    notes.append(f"medians over {rounds} interleaved rounds, each the mean of a block of >= {block_s * 1e3:g} ms "
                 "of calls; peers' loss and gradient verified as in bench/kernels.py "
                 f"(rtol {K.RTOL[np.float64]:g} float64, {K.RTOL[np.float32]:g} float32)")
    notes += peer_notes(torch, jax)
    rows, report = section([k for k in IDS if not only or k in only], {"torch": torch, "jax": jax},
                           threads, rounds, block_s)
    head = header(args, threads, notes)
    print("\n".join([*head, "", *report]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": head, "rows": rows}, f, indent=1, default=str)


if __name__ == "__main__":
    main(parse_args())
