"""Run under NUMBA_ENABLE_CUDASIM=1 by tests/test_cuda.py: every kernel kind of the CUDA backend
against the CPU backend on tiny models; prints one JSON object of relative errors."""
from __future__ import annotations

import json
import sys

import numpy as np

import symgrad as sg


def models(dtype):
    """(name, build(backend), data(rng), has second order): small graphs covering the op kinds."""
    def mlp_ce(backend):
        x, y = sg.input("x", 3), sg.labels("y", 4)
        W1 = sg.param("W1", (5, 3))
        h = sg.tanh(W1 @ x + sg.param("b1", 5, init="uniform"))
        o = sg.dense(h, 4, name="l2")
        return sg.compile(sg.softmax_cross_entropy(o, y) + 0.03 * sg.l2(W1), output=o, backend=backend,
                          dtype=dtype)

    def mlp_mse(backend):
        x, t = sg.input("x", 2), sg.target("t", 2)
        o = sg.dense(sg.dense(x, 6, "softplus", name="l1"), 2, "sigmoid", name="l2")
        return sg.compile(sg.mse(o, t) + sg.huber(o, t, 0.5), output=o, backend=backend, dtype=dtype)

    def hinge(backend):
        x, y = sg.input("x", 3), sg.labels("y", 3)
        o = sg.dense(x, 3, "elu", name="fc")
        return sg.compile(sg.multiclass_hinge(o, y) + sg.kl_div(o, sg.softmax(o * 0.5)), output=o,
                          backend=backend, dtype=dtype)

    def bce(backend):
        x, t = sg.input("x", 4), sg.target("t", 1)
        W = sg.param("W", (1, 4))
        o = W @ x + sg.param("b", 1)
        return sg.compile(sg.bce_with_logits(o, t) + 1e-2 * sg.l1(W), output=o, backend=backend, dtype=dtype)

    def data_ce(rng, n):
        return rng.normal(size=(n, 3)), rng.integers(0, 4, n)

    def data_mse(rng, n):
        return rng.normal(size=(n, 2)), rng.normal(size=(n, 2))

    def data_hinge(rng, n):
        return rng.normal(size=(n, 3)), rng.integers(0, 3, n)

    def data_bce(rng, n):
        return rng.normal(size=(n, 4)), (rng.random((n, 1)) < 0.5).astype(float)

    def wide(backend):   # sums too big for a block's shared memory: one row of partials per thread
        x, t = sg.input("x", 6), sg.target("t", 1)
        o = sg.dense(sg.dense(x, 900, "tanh", name="l1"), 1, name="l2")
        return sg.compile(sg.mse(o, t), output=o, backend=backend, dtype=dtype)

    def data_wide(rng, n):
        return rng.normal(size=(n, 6)), rng.normal(size=(n, 1))

    return [("mlp_ce", mlp_ce, data_ce), ("mlp_mse", mlp_mse, data_mse), ("hinge", hinge, data_hinge),
            ("bce", bce, data_bce), ("wide", wide, data_wide)]


def flat(r):
    parts = r if isinstance(r, tuple) else (r,)
    return np.concatenate([np.ravel(np.asarray(p, dtype=np.float64)) for p in parts])


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main() -> None:
    out = {}
    for dtype in (np.float64, np.float32):
        for name, build, data in models(dtype):
            if dtype is np.float32 and name not in ("mlp_mse", "bce"):
                continue   # float32: two models suffice (compiling the CPU references dominates)
            cpu, gpu = build("cpu"), build("cuda")
            if name == "wide":
                rng = np.random.default_rng(0)
                X, T = data(rng, 3)
                theta = cpu.init(1)
                out["wide block_sums"] = gpu._lowered("value_and_grad").block_sums
                out["wide value_and_grad"] = rel(flat(gpu.value_and_grad(theta, X, T)),
                                                 flat(cpu.value_and_grad(theta, X, T)))
                continue
            rng = np.random.default_rng(0)
            X, T = data(rng, 7)
            theta = cpu.init(1) + 0.1 * rng.normal(size=cpu.n_params)
            v = rng.normal(size=cpu.n_params)
            calls = {"loss": ((), (X, T)), "value_and_grad": ((), (X, T)), "predict": ((), (X,)),
                     "hvp": ((v,), (X, T)), "gnvp": ((v,), (X, T)), "value_grad_hvp": ((v,), (X, T)),
                     "jacobian": ((), (X,))}
            for kind, (extra, d) in calls.items():
                a = getattr(cpu, kind)(theta, *extra, *d)
                b = getattr(gpu, kind)(theta, *extra, *d)
                out[f"{np.dtype(dtype).name} {name} {kind}"] = rel(flat(b), flat(a))
            if dtype is np.float64 and name == "mlp_ce":
                # data resident on the device (to_device), then used in place
                dX, dT = gpu.to_device(X, T)
                out["resident value_and_grad"] = rel(flat(gpu.value_and_grad(theta, dX, dT)),
                                                     flat(cpu.value_and_grad(theta, X, T)))
                out["resident predict"] = rel(flat(gpu.predict(theta, gpu.to_device(X))),
                                              flat(cpu.predict(theta, X)))
                # a host array changed in place between calls: both backends see the new values
                Xm = X.copy()
                gpu.loss(theta, Xm, T)
                Xm *= 10
                out["host array changed in place"] = rel(np.array([gpu.loss(theta, Xm, T)]),
                                                         np.array([cpu.loss(theta, Xm, T)]))
                try:
                    cpu.loss(theta, dX, dT)
                    out["cpu given a device array"] = "no error"
                except sg.DataError as e:
                    out["cpu given a device array"] = str(e)
                # the optimizers run unchanged on the CUDA model
                ra = sg.optim.minimize(cpu, theta, X, T, method="lbfgs", max_iter=5, tol=0)
                rb = sg.optim.minimize(gpu, theta, dX, dT, method="lbfgs", max_iter=5, tol=0)
                out["lbfgs 5 iterations"] = rel(rb.theta, ra.theta)
                out["source"] = gpu.source("value_and_grad")
                out["block_sums"] = gpu._lowered("value_and_grad").block_sums
                # three blocks adding into their shared sums, the last one partly past the batch's end
                X3, T3 = data(np.random.default_rng(1), 300)
                out["300 rows, 3 blocks, value_and_grad"] = rel(flat(gpu.value_and_grad(theta, X3, T3)),
                                                                flat(cpu.value_and_grad(theta, X3, T3)))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
