"""Run under NUMBA_ENABLE_CUDASIM=1 by tests/test_cuda.py (``compare.py fused|staged``): every
kernel kind of the CUDA backend against the NumPy interpreter of the same derived programs on
tiny models (the CPU backend is checked against those programs and finite differences in the
other tests); prints one JSON object of relative errors (and a few facts and sources)."""
from __future__ import annotations

import dataclasses
import json
import re
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

    def tensor3(backend):   # rank 3, NumPy broadcasting, a sum over an axis
        x, t = sg.input("x", (2, 3, 4)), sg.target("t", (2, 4))
        h = sg.tanh(x * sg.param("c", 4) + sg.param("b", (2, 1, 1))) - sg.param("d", (3, 1))
        o = sg.sum(h, axis=1)
        return sg.compile(sg.mse(o, t), output=o, backend=backend, dtype=dtype)

    def data_ce(rng, n):
        return rng.normal(size=(n, 3)), rng.integers(0, 4, n)

    def data_mse(rng, n):
        return rng.normal(size=(n, 2)), rng.normal(size=(n, 2))

    def data_hinge(rng, n):
        return rng.normal(size=(n, 3)), rng.integers(0, 3, n)

    def data_bce(rng, n):
        return rng.normal(size=(n, 4)), (rng.random((n, 1)) < 0.5).astype(float)

    def cnn(backend):   # a padded conv, a max pool, an average pool, flatten, dense
        img, y = sg.input("img", (1, 5, 5)), sg.labels("y", 3)
        h = sg.max_pool2d(sg.conv2d(img, 2, 3, padding=1, activation="tanh", name="c1"), 2)
        h = sg.avg_pool2d(sg.conv2d(h, 2, 2, stride=1, padding=1, name="c2"), 2)
        o = sg.dense(sg.flatten(h), 3, name="f")
        return sg.compile(sg.softmax_cross_entropy(o, y), output=o, backend=backend, dtype=dtype)

    def data_cnn(rng, n):
        return rng.normal(size=(n, 1, 5, 5)), rng.integers(0, 3, n)

    def data_tensor3(rng, n):
        return rng.normal(size=(n, 2, 3, 4)), rng.normal(size=(n, 2, 4))

    return [("mlp_ce", mlp_ce, data_ce), ("mlp_mse", mlp_mse, data_mse), ("hinge", hinge, data_hinge),
            ("bce", bce, data_bce), ("tensor3", tensor3, data_tensor3), ("cnn", cnn, data_cnn)]


def staged_models(dtype):
    """Models that run as staged passes on a CUDA target with lowered thresholds (``backend`` is
    given that target; the simulator runs a few hundred threads a second: GEMMs of wide layers
    would take minutes)."""
    def shared(backend):
        """W2 used twice (two GEMM terms add into one sum), labels and argmax, penalties, one of
        them on a product of parameters alone (device code, not a GEMM launch), and names that
        the host driver uses too ("blocks", "zero")."""
        x, y = sg.input("blocks", 16), sg.labels("y", 3)   # 16 features: x @ W.T deep enough for a GEMM
        W2 = sg.param("zero", (6, 6))
        h1 = sg.dense(x, 6, "tanh", name="l1")
        h3 = sg.tanh(W2 @ sg.softplus(W2 @ h1) + sg.param("b2", 6))
        o = sg.dense(h3, 3, name="l3")
        low_rank = sg.param("A", (3, 16)) @ sg.param("B", (16, 3))
        return sg.compile(sg.softmax_cross_entropy(o, y) + 0.01 * sg.l2(W2) + 1e-3 * sg.l2(low_rank),
                          output=o, backend=backend, dtype=dtype)

    def gemv(backend):   # logistic regression: the contraction with a vector of weights is a GEMV
        x, t = sg.input("x", 20), sg.target("t", 1)
        W = sg.param("W", (1, 20))
        o = W @ x + sg.param("b", 1)
        return sg.compile(sg.bce_with_logits(o, t) + 1e-3 * sg.l2(W), output=o, backend=backend, dtype=dtype)

    def data_shared(rng, n):
        return rng.normal(size=(n, 16)), rng.integers(0, 3, n)

    def data_gemv(rng, n):
        return rng.normal(size=(n, 20)), (rng.random((n, 1)) < 0.5).astype(float)

    return [("shared", shared, data_shared), ("gemv", gemv, data_gemv)]


class Reference:
    """A model's kinds evaluated by the NumPy interpreter on its own derived programs: the CUDA
    kernels are checked against what they were lowered from, with no CPU kernel to compile
    (compiling the CPU references took most of this comparison's time)."""

    def __init__(self, model):
        self.model = model

    def _run(self, group, program, theta, data, v=None, extra=None, keys=("objective", "grad:")):
        from symgrad.interpret import run
        m = self.model
        prog = m._group(group).programs[program]
        wanted = tuple(k for k, _ in prog.outputs if k.startswith(keys))
        names = m._inputs if program == "jacobian" else m._objective_data
        args = {**m.unflatten(np.asarray(theta, dtype=m.dtype)), **dict(zip(names, data)), **(extra or {})}
        tangents = m.unflatten(np.asarray(v, dtype=m.dtype)) if v is not None else None
        return run(prog, args, len(data[0]), tangents, wanted)

    def _flat(self, res, prefix):
        m = self.model
        return np.concatenate([np.broadcast_to(res[f"{prefix}:{n}"], shape).ravel()
                               for n, shape, _, _ in m.signature.params])

    def loss(self, theta, *data):
        return float(self._run("first", "forward", theta, data, keys=("objective",))["objective"])

    def value_and_grad(self, theta, *data):
        res = self._run("first", "gradient", theta, data)
        return float(res["objective"]), self._flat(res, "grad")

    def predict(self, theta, *inputs):
        m = self.model
        out = self._run("first", "forward", theta, inputs, keys=("output",))["output"]
        return np.broadcast_to(out, (len(inputs[0]),) + m._output_shape)

    def hvp(self, theta, v, *data):
        return self._flat(self._run("second", "curvature", theta, data, v, keys=("hv:",)), "hv")

    def gnvp(self, theta, v, *data):
        return self._flat(self._run("second", "curvature", theta, data, v, keys=("gn:",)), "gn")

    def value_grad_hvp(self, theta, v, *data):
        res = self._run("second", "curvature", theta, data, v, keys=("objective", "grad:", "hv:"))
        return float(res["objective"]), self._flat(res, "grad"), self._flat(res, "hv")

    def jacobian(self, theta, *inputs):
        from symgrad.derived import COTANGENT
        m, n = self.model, len(inputs[0])
        shape = m._output_shape
        width = int(np.prod(shape)) if shape else 1
        jac = np.empty((n, width, m.n_params))
        for k in range(width):
            u = np.zeros((n, width))
            u[:, k] = 1
            res = self._run("second", "jacobian", theta, inputs, extra={COTANGENT: u.reshape((n,) + shape)},
                            keys=("jac:",))
            jac[:, k] = np.concatenate([np.broadcast_to(res[f"jac:{p}"], (n,) + ps).reshape(n, -1)
                                        for p, ps, _, _ in m.signature.params], axis=1)
        return jac.reshape((n,) + shape + (m.n_params,))


def flat(r):
    parts = r if isinstance(r, tuple) else (r,)
    return np.concatenate([np.ravel(np.asarray(p, dtype=np.float64)) for p in parts])


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


KINDS = ("loss", "value_and_grad", "predict", "hvp", "gnvp", "value_grad_hvp", "jacobian")


def compare_kinds(out, label, ref, gpu, data, n=7, kinds=KINDS):
    rng = np.random.default_rng(0)
    X, T = data(rng, n)
    theta = gpu.init(1) + 0.1 * rng.normal(size=gpu.n_params)
    v = rng.normal(size=gpu.n_params)
    calls = {"loss": ((), (X, T)), "value_and_grad": ((), (X, T)), "predict": ((), (X,)),
             "hvp": ((v,), (X, T)), "gnvp": ((v,), (X, T)), "value_grad_hvp": ((v,), (X, T)),
             "jacobian": ((), (X,))}
    for kind in kinds:
        extra, d = calls[kind]
        a = getattr(ref, kind)(theta, *extra, *d)
        b = getattr(gpu, kind)(theta, *extra, *d)
        out[f"{label} {kind}"] = rel(flat(b), flat(a))
    return theta, v, X, T


def staged(out):
    """Staged passes: row kernels and tiled GEMMs, in float64 and float32, one or three blocks,
    block sums in shared memory and (too many for it) in device memory."""
    import symgrad.cuda_runtime as runtime
    from codegen.targets import CUDA
    runtime.GEMM_TILE = 4
    small_gemms = dataclasses.replace(CUDA, gemm_min_work_per_row=16)
    for dtype in (np.float64, np.float32):
        for name, build, data in staged_models(dtype):
            gpu = build(small_gemms)
            ref = Reference(gpu)
            out[f"staged {name}"] = sorted(k for k in KINDS if gpu._lowered(k).staged)
            if dtype is np.float32 and name != "gemv":
                continue   # float32: one model (the simulator runs a few hundred threads a second)
            kinds = KINDS if (dtype, name) == (np.float64, "shared") else ("value_and_grad", "hvp", "predict")
            compare_kinds(out, f"{np.dtype(dtype).name} {name}", ref, gpu, data, kinds=kinds)
            if dtype is np.float64 and name == "shared":
                from numba import cuda
                out["staged source"] = gpu.source("value_and_grad")
                X, T = data(np.random.default_rng(0), 7)
                theta = gpu.init(1)
                f, g = gpu.value_and_grad(cuda.to_device(theta), X, T)   # written in place on the device
                out["staged device theta"] = rel(flat((f, g.copy_to_host())),
                                                 flat(ref.value_and_grad(theta, X, T)))
    # the tiled GEMM alone: every transpose, a vector operand, accumulation (tiles of 4, k = 7)
    from numba import cuda
    rng = np.random.default_rng(3)
    errs = []
    for ta in (False, True):
        for tb in (False, True):
            a, b, c0 = rng.normal(size=(7, 5) if ta else (5, 7)), rng.normal(size=(3, 7) if tb else (7, 3)), \
                rng.normal(size=(5, 3))
            want = (a.T if ta else a) @ (b.T if tb else b)
            for acc in (False, True):
                d_c = cuda.to_device(c0)
                runtime.gemm(cuda.to_device(a), cuda.to_device(b), d_c, ta, tb, acc)
                errs.append(rel(d_c.copy_to_host(), want + c0 if acc else want))
    x, m = rng.normal(size=7), rng.normal(size=(7, 3))
    d_c = cuda.to_device(np.zeros(3))
    runtime.gemm(cuda.to_device(x), cuda.to_device(m), d_c, False, False, False)   # row vector @ matrix
    errs.append(rel(d_c.copy_to_host(), x @ m))
    d_c = cuda.to_device(np.zeros(3))
    runtime.gemm(cuda.to_device(m.T.copy()), cuda.to_device(x), d_c, False, False, False)   # matrix @ column
    errs.append(rel(d_c.copy_to_host(), m.T @ x))
    out["gemm"] = max(errs)
    # 8 sums in 64 bytes: a row kernel's block sums go to device memory
    x, t = sg.input("x", 5), sg.target("t", 2)
    loss = sg.mse(sg.dense(sg.dense(x, 6, "tanh", name="l1"), 2, name="l2"), t)
    gpu = sg.compile(loss, backend=dataclasses.replace(small_gemms, shared_acc_bytes=64))
    ref = Reference(gpu)
    src = out["device-memory block sums source"] = gpu.source("value_and_grad")
    # chunks of 128 rows: 300 rows run as 128 + 128 + 44, each in one or two blocks
    row_bytes = int(re.search(r"stage_rows\(n_samples, (\d+)\)", src).group(1))
    runtime.STAGE_BUDGET = 128 * row_bytes
    compare_kinds(out, "device-memory block sums, 3 chunks", ref, gpu,
                  lambda rng, n: (rng.normal(size=(n, 5)), rng.normal(size=(n, 2))), 300, ("value_and_grad",))


def main(part: str) -> None:
    """``part``: "fused" (the narrow models, device data, device theta) or "staged"; the test
    runs both at once, one per core."""
    out = {}
    if part == "staged":
        staged(out)
        json.dump(out, sys.stdout)
        return
    for dtype in (np.float64, np.float32):
        for name, build, data in models(dtype):
            if dtype is np.float32 and name not in ("mlp_mse", "bce"):
                continue   # float32: two models suffice (the simulator runs a few hundred threads a second)
            gpu = build("cuda")
            ref = Reference(gpu)
            theta, v, X, T = compare_kinds(out, f"{np.dtype(dtype).name} {name}", ref, gpu, data)
            if dtype is np.float64 and name == "mlp_ce":
                host = build("cpu")   # the CPU backend itself: its refusals and an optimizer run
                # data resident on the device (to_device), then used in place
                dX, dT = gpu.to_device(X, T)
                out["resident value_and_grad"] = rel(flat(gpu.value_and_grad(theta, dX, dT)),
                                                     flat(ref.value_and_grad(theta, X, T)))
                out["resident predict"] = rel(flat(gpu.predict(theta, gpu.to_device(X))),
                                              flat(ref.predict(theta, X)))
                # a host array changed in place between calls: both backends see the new values
                Xm = X.copy()
                gpu.loss(theta, Xm, T)
                Xm *= 10
                out["host array changed in place"] = rel(np.array([gpu.loss(theta, Xm, T)]),
                                                         np.array([ref.loss(theta, Xm, T)]))
                try:
                    host.loss(theta, dX, dT)
                    out["cpu given a device array"] = "no error"
                except sg.DataError as e:
                    out["cpu given a device array"] = str(e)
                # a device theta: results stay on the device (as the caller's array type)
                from numba import cuda

                from symgrad.cuda_runner import on_device
                d_theta, d_v = cuda.to_device(theta), cuda.to_device(v)
                f, g = gpu.value_and_grad(d_theta, dX, dT)
                hv = gpu.hvp(d_theta, d_v, dX, dT)
                out["device theta on the device"] = on_device(g) and on_device(hv) and on_device(
                    gpu.predict(d_theta, dX))
                out["device theta value_and_grad"] = rel(flat((f, g.copy_to_host())),
                                                         flat(ref.value_and_grad(theta, X, T)))
                out["device theta hvp"] = rel(hv.copy_to_host(), ref.hvp(theta, v, X, T))
                try:
                    sg.optim.minimize(gpu, d_theta, dX, dT, method="lbfgs", max_iter=1)
                    out["optimizer given a numba device theta"] = "no error"
                except sg.DataError as e:
                    out["optimizer given a numba device theta"] = str(e)
                try:
                    host.loss(d_theta, X, T)
                    out["cpu given a device theta"] = "no error"
                except sg.DataError as e:
                    out["cpu given a device theta"] = str(e)
                # the optimizers run unchanged on the CUDA model
                ra = sg.optim.minimize(host, theta, X, T, method="lbfgs", max_iter=5, tol=0)
                rb = sg.optim.minimize(gpu, theta, dX, dT, method="lbfgs", max_iter=5, tol=0)
                out["lbfgs 5 iterations"] = rel(rb.theta, ra.theta)
                out["source"] = gpu.source("value_and_grad")
                out["block_sums"] = gpu._lowered("value_and_grad").block_sums
                # three blocks adding into their shared sums, the last one partly past the batch's end
                X3, T3 = data(np.random.default_rng(1), 300)
                out["300 rows, 3 blocks, value_and_grad"] = rel(flat(gpu.value_and_grad(theta, X3, T3)),
                                                                flat(ref.value_and_grad(theta, X3, T3)))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
