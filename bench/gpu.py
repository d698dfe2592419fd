"""Benchmark symgrad's CUDA kernels against PyTorch (CUDA eager, torch.func) and JAX jit on one GPU.

Run from the repository root on a machine with an NVIDIA GPU::

    python bench/gpu.py [--quick] [--only W1,W1big] [--json out.json]
    NUMBA_ENABLE_CUDASIM=1 python bench/gpu.py --simulate   # check the script, no timings

Workloads: W1..W4 of bench/kernels.py plus W1big (W1 at batch 65536). Per
(workload, dtype) one process times, interleaved round by round (medians):
symgrad ``value_and_grad`` and ``hvp`` on device-resident data
(``model.to_device``) with theta and v on the device too (a call returns
device arrays and moves only the objective to the host), PyTorch CUDA eager backward and ``torch.func.jvp(grad)``, and
JAX ``jit(value_and_grad)`` and ``jit(jvp(grad))`` when JAX sees a GPU.
Every peer's loss, gradient and HVP is checked against symgrad's first; any
disagreement aborts the run. Without a GPU the script stops and measures
nothing: GPU numbers that were not measured are never reported.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any, Callable, Sequence

if __package__:
    from . import _common as common
else:
    import _common as common

IDS = ("W1", "W2", "W3", "W4", "W1big")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = common.arg_parser(__doc__, ",".join(IDS), threads=False)
    p.add_argument("--simulate", action="store_true",
                   help="run only the verification, on batch 4, in numba-cuda's simulator (no timings)")
    return common.parse(p, argv)


import numpy as np  # noqa: E402

if __package__:  # noqa: E402
    from . import curvature as C
    from . import kernels as K
else:
    import curvature as C
    import kernels as K

WORKLOADS = {**{k: K.WORKLOADS[k] for k in ("W1", "W2", "W3", "W4")},
             "W1big": replace(K.WORKLOADS["W1"], key="W1big", batch=65536)}


class SymgradCuda:
    """symgrad's CUDA model with its data resident on the device."""

    def __init__(self, w: K.Workload, dtype: type, X: np.ndarray, T: np.ndarray) -> None:
        from numba import cuda
        self.model = K.build_symgrad(w, dtype, backend="cuda")
        self.theta_host = self.model.init(seed=0)
        self.data = self.model.to_device(X, T)
        self.v_host = np.random.default_rng(4).standard_normal(self.model.n_params).astype(dtype)
        self.theta, self.v = cuda.to_device(self.theta_host), cuda.to_device(self.v_host)

    def params(self) -> K.Grads:
        return {k: np.array(a) for k, a in self.model.unflatten(self.theta_host).items()}

    def blocks(self, flat: Any) -> K.Grads:
        flat = flat if isinstance(flat, np.ndarray) else flat.copy_to_host()
        return {k: np.array(a) for k, a in self.model.unflatten(flat).items()}

    def grad(self) -> object:
        return self.model.value_and_grad(self.theta, *self.data)   # the objective's copy synchronizes

    def hvp(self) -> object:
        from numba import cuda
        out = self.model.hvp(self.theta, self.v, *self.data)
        cuda.synchronize()   # the product stays on the device: wait for it
        return out


class TorchCuda(C.Torch):
    """curvature.Torch with parameters, data and v on the GPU; every timed call synchronizes."""

    def __init__(self, torch: Any, w: K.Workload, params: K.Grads, X: np.ndarray, T: np.ndarray,
                 v: K.Grads) -> None:
        super().__init__(torch, w, params, X, T, v)
        dev = torch.device("cuda")
        self.p = {k: p.detach().to(dev).requires_grad_() for k, p in self.p.items()}
        self.layers = [(self.p[a], self.p[b]) for a, b in w.layer_names()]
        self.X, self.T = self.X.to(dev), self.T.to(dev)
        self.v = {k: a.to(dev) for k, a in self.v.items()}
        self.v_list = [self.v[k] for k in self.p]
        self.p_func = {k: p.detach() for k, p in self.p.items()}

    def grad(self) -> Any:
        loss = self.run()
        self.torch.cuda.synchronize()
        return loss

    def hvp(self) -> Any:
        out = self.func_hvp()
        self.torch.cuda.synchronize()
        return out

    def value_and_grad(self) -> tuple[float, K.Grads]:
        J = self.run().item()
        return J, {k: p.grad.cpu().numpy().copy() for k, p in self.p.items()}

    def func_hvp_blocks(self) -> K.Grads:
        return {k: a.cpu().numpy().copy() for k, a in self.func_hvp().items()}


def row(w: K.Workload, dtype: type, peers: dict[str, Any], threads: common.Threads, rounds: int,
        block_s: float, timed: bool) -> dict[str, Any]:
    X, T = K.make_data(w, dtype)
    probe = K.build_symgrad(w, dtype)   # CPU twin: same init, used only to keep data off ReLU kinks
    X = K.avoid_relu_kinks(w, {k: np.array(a) for k, a in probe.unflatten(probe.init(seed=0)).items()}, X)
    sg = SymgradCuda(w, dtype, X, T)
    params, v = sg.params(), sg.blocks(sg.v_host)
    f, g = sg.model.value_and_grad(sg.theta, *sg.data)
    ref = (f, sg.blocks(g))
    ref_hv = sg.blocks(sg.model.hvp(sg.theta, sg.v, *sg.data))
    cases: dict[str, Callable[[], object]] = {"symgrad grad": sg.grad, "symgrad hvp": sg.hvp}
    grad_peers, hvp_peers, errors = {}, {}, {}
    if peers["torch"] is not None:
        pt = TorchCuda(peers["torch"], w, params, X, T, v)
        grad_peers["PyTorch"], hvp_peers["torch.func"] = pt, pt.func_hvp_blocks
        cases.update({"PyTorch grad": pt.grad, "torch.func hvp": pt.hvp})
    if peers["jax"] is not None:
        jx = C.Jax(peers["jax"], w, params, X, T, v)
        grad_peers["JAX"], hvp_peers["JAX"] = jx, jx.hvp_blocks
        cases.update({"JAX grad": jx.run, "JAX hvp": jx.hvp})
    errors.update({f"{k} grad": e for k, e in K.verify(w.key, dtype, ref, grad_peers).items()})
    errors.update({f"{k} hvp": e for k, e in C.verify_hvp(w.key, dtype, ref_hv, hvp_peers).items()})
    out = {"workload": w.key, "title": w.title, "dtype": np.dtype(dtype).name, "max_rel_err": errors}
    if timed:
        timers = {k: common.Case(fn, None) for k, fn in cases.items()}
        common.time_interleaved(timers, threads, rounds, block_s)
        out["median_s"] = {k: c.median for k, c in timers.items()}
    return out


def main(args: argparse.Namespace) -> None:
    import numba
    from numba import cuda
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(IDS):
        raise SystemExit(f"--only: unknown ids {sorted(only - set(IDS))}; known: {list(IDS)}")
    if args.simulate != bool(numba.config.ENABLE_CUDASIM):
        raise SystemExit("--simulate needs NUMBA_ENABLE_CUDASIM=1 in the environment, and only then")
    if not args.simulate and not cuda.is_available():
        raise SystemExit("no CUDA GPU here (numba.cuda.is_available() is False): nothing measured")
    torch, why_torch = common.optional_import("torch")
    if torch is not None and not args.simulate and not torch.cuda.is_available():
        torch, why_torch = None, "torch sees no GPU"
    jax, why_jax = common.optional_import("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
        if not args.simulate and jax.default_backend() != "gpu":
            jax, why_jax = None, f"JAX runs on {jax.default_backend()}, not the GPU"
    if args.simulate:   # the simulator: verify the script's plumbing on tiny batches, CPU peers
        torch = None    # TorchCuda needs a real device
    rounds, block_s = (5, 0.01) if args.quick else (21, 0.05)
    threads = common.Threads(1, torch)
    rows = []
    for key in IDS:
        if only and key not in only:
            continue
        w = WORKLOADS[key] if not args.simulate else replace(WORKLOADS[key], batch=4)
        for dtype in K.DTYPES:
            print(f"... {w.title} {np.dtype(dtype).name}", file=sys.stderr, flush=True)
            rows.append(row(w, dtype, {"torch": torch, "jax": jax}, threads, rounds, block_s,
                            timed=not args.simulate))
    notes = [n for n in (why_torch and f"PyTorch skipped: {why_torch}", why_jax and f"JAX skipped: {why_jax}")
             if n]
    lines = ["# symgrad CUDA benchmark" + (" (simulator: verification only)" if args.simulate else ""), ""]
    if not args.simulate:
        lines.append(f"- GPU: {cuda.get_current_device().name}; numba {numba.__version__}")
    lines += [f"- note: {n}" for n in notes] + [""]
    cols = ["symgrad grad", "symgrad hvp", "PyTorch grad", "torch.func hvp", "JAX grad", "JAX hvp"]
    if args.simulate:
        lines += [f"- {r['workload']} {r['dtype']}: peers agree, max rel err "
                  f"{max(r['max_rel_err'].values(), default=0):.2g}" for r in rows]
    else:
        body = [[r["title"], r["dtype"]] + [common.fmt_time(r["median_s"].get(c)) for c in cols]
                + [common.fmt_ratio(r["median_s"]["symgrad grad"], r["median_s"].get("PyTorch grad")),
                   common.fmt_ratio(r["median_s"]["symgrad grad"], r["median_s"].get("JAX grad")),
                   common.fmt_ratio(r["median_s"]["symgrad hvp"], r["median_s"].get("torch.func hvp")),
                   common.fmt_ratio(r["median_s"]["symgrad hvp"], r["median_s"].get("JAX hvp"))]
                for r in rows]
        lines.append(common.markdown_table(["workload", "dtype", *cols, "sg/PyTorch grad", "sg/JAX grad",
                                            "sg/torch.func hvp", "sg/JAX hvp"], body))
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "notes": notes}, f, indent=1, default=str)


if __name__ == "__main__":
    main(parse_args())
