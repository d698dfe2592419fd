"""Second-order kernels: Gauss-Newton products, Jacobians, dense Hessians, the scipy bridge.

The HVP of every activation and loss is checked in test_ops.py; here are the
products built on it and their contracts (GN = J^T H_loss J, PSD, equal to
the Hessian for a linear model with MSE; Jacobian rows; thread-independent
sums; float32; bad arguments).
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

import symgrad as sg
from symgrad.model import DataError


def rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def matrix(product, n):
    return np.stack([product(e) for e in np.eye(n)], axis=1)


@pytest.fixture(scope="module")
def mlp():
    """3-5-4 tanh MLP, softmax cross-entropy and an L2 penalty on the first layer."""
    x = sg.input("x", 3)
    y = sg.labels("y", 4)
    h = sg.dense(x, 5, "tanh", name="l1")
    o = sg.dense(h, 4, name="l2")
    W1 = [p for p in _params(o) if p.name == "l1.W"][0]
    model = sg.compile(sg.softmax_cross_entropy(o, y) + 0.03 * sg.l2(W1), output=o)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(37, 3))
    Y = rng.integers(0, 4, size=37)
    theta = model.init(1) + 0.2 * rng.normal(size=model.n_params)
    return model, theta, X, Y


def _params(t):
    seen, stack, out = set(), [t], []
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op.is_leaf() and n.op.role == "param":
            out.append(n)
        stack.extend(n.args)
    return out


def test_gnvp_is_jacobian_sandwich(mlp):
    """GN v = 1/N sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i v + 0.06 v on l1.W, built from the
    Jacobian kernel and the softmax-CE Hessian written by hand."""
    model, theta, X, Y = mlp
    rng = np.random.default_rng(1)
    v = rng.normal(size=model.n_params)
    J = model.jacobian(theta, X)                      # (N, 4, P)
    logits = model.predict(theta, X)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    Jv = J @ v
    HJv = p * Jv - p * (p * Jv).sum(1, keepdims=True)
    want = np.einsum("nkp,nk->p", J, HJv) / len(X)
    off, size = 0, 15                                 # l1.W comes first
    want[off:off + size] += 2 * 0.03 * v[off:off + size]
    assert rel(model.gnvp(theta, v, X, Y), want) < 1e-12


def test_gnvp_psd_and_symmetric_for_convex_losses():
    x = sg.input("x", 3)
    t = sg.target("t", 2)
    p = sg.target("p", 2)
    y = sg.labels("y", 2)
    o = sg.dense(sg.dense(x, 4, "sigmoid", name="h"), 2, name="o")
    rng = np.random.default_rng(2)
    n = 11
    data = {"x": rng.normal(size=(n, 3)), "t": rng.normal(size=(n, 2)), "y": rng.integers(0, 2, n),
            "p": rng.dirichlet(np.ones(2), size=n)}
    for loss in (sg.mse(o, t), sg.softmax_cross_entropy(o, y), sg.bce_with_logits(o, p),
                 sg.kl_div(o, p), sg.nll(sg.log_softmax(o), y), sg.bce(sg.sigmoid(o), p)):
        model = sg.compile(loss)
        args = [data[k] for k in model.data_names]
        theta = model.init(3)
        G = matrix(lambda e: model.gnvp(theta, e, *args), model.n_params)
        assert np.abs(G - G.T).max() < 1e-12 * np.abs(G).max()
        assert np.linalg.eigvalsh(G).min() > -1e-12 * np.abs(G).max(), loss.name
        assert np.abs(G).max() > 0


def test_gnvp_equals_hvp_for_linear_model_with_mse():
    x = sg.input("x", 4)
    t = sg.target("t", 3)
    o = sg.dense(x, 3, name="lin")
    model = sg.compile(sg.mse(o, t) + 0.1 * sg.l2(sg.param("extra", 2)))
    rng = np.random.default_rng(4)
    X, T = rng.normal(size=(9, 4)), rng.normal(size=(9, 3))
    theta, v = model.init(0), rng.normal(size=model.n_params)
    assert rel(model.gnvp(theta, v, X, T), model.hvp(theta, v, X, T)) < 1e-14


def test_gnvp_splits_at_output_without_builtin_loss():
    x = sg.input("x", 2)
    t = sg.target("t", 1)
    o = sg.dense(sg.dense(x, 3, "tanh", name="h"), 1, name="o")
    sq = sg.elementwise("sq", lambda a, b: (a - b) ** 2)
    with pytest.raises(sg.GraphError, match="gnvp needs"):
        sg.compile(sg.sum(sq(o, t))).gnvp(np.zeros(13), np.zeros(13), np.zeros((2, 2)), np.zeros((2, 1)))
    model = sg.compile(sg.sum(sq(o, t)), output=o)
    ref = sg.compile(sg.mse(o, t))     # the same loss, split by the built-in
    rng = np.random.default_rng(5)
    X, T = rng.normal(size=(6, 2)), rng.normal(size=(6, 1))
    theta, v = model.init(0), rng.normal(size=model.n_params)
    assert rel(model.gnvp(theta, v, X, T), ref.gnvp(theta, v, X, T)) < 1e-14


def test_jacobian_matches_finite_differences(mlp):
    model, theta, X, _ = mlp
    J = model.jacobian(theta, X[:5])
    assert J.shape == (5, 4, model.n_params)
    h = 1e-6
    fd = np.stack([(model.predict(theta + h * e, X[:5]) - model.predict(theta - h * e, X[:5])) / (2 * h)
                   for e in np.eye(model.n_params)], axis=-1)
    assert rel(J, fd) < 1e-8
    assert np.all(J[..., 15:20].any(axis=1))          # hidden bias moves the output
    x = sg.input("x", 2)
    s = sg.dense(x, 1, name="s")
    scalar = sg.compile(sg.mse(s, sg.target("t", 1)), output=sg.sum(s))
    assert scalar.jacobian(scalar.init(0), np.ones((3, 2))).shape == (3, 3)


def test_hessian_symmetric_and_refused_above_limit(mlp):
    model, theta, X, Y = mlp
    H = model.hessian(theta, X, Y)
    assert H.shape == (model.n_params,) * 2 and np.array_equal(H, H.T)
    with pytest.raises(ValueError, match=f"P = {model.n_params}.*max_params=10"):
        model.hessian(theta, X, Y, max_params=10)


def test_second_order_reproducible_across_threads(mlp):
    model, theta, _, _ = mlp
    rng = np.random.default_rng(6)
    X = rng.normal(size=(3000, 3))
    Y = rng.integers(0, 4, 3000)
    v = rng.normal(size=model.n_params)
    saved = numba.get_num_threads()
    try:
        out = []
        for n in sorted({1, saved}):
            numba.set_num_threads(n)
            out.append((model.hvp(theta, v, X, Y), model.gnvp(theta, v, X, Y)))
    finally:
        numba.set_num_threads(saved)
    for a, b in zip(out[0], out[-1]):
        assert np.array_equal(a, b)


def test_float32_hvp():
    x = sg.input("x", 3)
    t = sg.target("t", 2)
    o = sg.dense(sg.dense(x, 6, "tanh", name="h"), 2, name="o")
    m64 = sg.compile(sg.mse(o, t))
    m32 = sg.compile(sg.mse(o, t), dtype=np.float32)
    rng = np.random.default_rng(7)
    X, T = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    theta, v = m64.init(0), rng.normal(size=m64.n_params)
    hv32 = m32.hvp(theta, v, X, T)
    assert hv32.dtype == np.float32
    assert rel(hv32, m64.hvp(theta, v, X, T)) < 1e-5     # float32: about 1e-7 per op


def test_scipy_objective_trust_ncg():
    scipy_opt = pytest.importorskip("scipy.optimize")
    x = sg.input("x", 5)
    t = sg.target("t", 1)
    z = sg.dense(x, 1, name="logit")
    w = [p for p in _params(z) if p.name == "logit.W"][0]
    model = sg.compile(sg.bce_with_logits(z, t) + 0.01 * sg.l2(w))
    rng = np.random.default_rng(8)
    X = rng.normal(size=(200, 5))
    T = (X @ rng.normal(size=5) + 0.5 * rng.normal(size=200) > 0).astype(float)[:, None]
    fun, jac, hessp = model.scipy_objective(X, T)
    res = scipy_opt.minimize(fun, np.zeros(6), jac=jac, hessp=hessp, method="trust-ncg",
                             options={"gtol": 1e-9})
    ref = scipy_opt.minimize(fun, np.zeros(6), jac=jac, method="L-BFGS-B",
                             options={"gtol": 1e-12, "ftol": 1e-15})
    assert res.success and res.nhev > 0 and np.linalg.norm(jac(res.x)) < 1e-9
    assert res.fun == pytest.approx(ref.fun, rel=1e-9)


def test_bad_second_order_arguments(mlp):
    model, theta, X, Y = mlp
    with pytest.raises(DataError, match=r"v: expected a flat vector of 44"):
        model.hvp(theta, np.zeros(3), X, Y)
    with pytest.raises(DataError, match="v: expected real numbers"):
        model.gnvp(theta, np.array(["a"] * 44), X, Y)
    with pytest.raises(DataError, match="labels 'y'"):
        model.value_grad_hvp(theta, np.zeros(44), X, Y + 10)
    x = sg.input("x", 2)
    no_output = sg.compile(sg.mse(sg.dense(x, 1, name="d"), sg.target("t", 1)))
    with pytest.raises(sg.GraphError, match="jacobian needs the model's output"):
        no_output.jacobian(no_output.init(0), np.ones((2, 2)))


def test_second_order_inspection(mlp):
    model = mlp[0]
    for kind in ("hvp", "gnvp", "value_grad_hvp", "jacobian"):
        assert f"def {kind}_chunks(" in model.source(kind)
    d = str(model.derivation("hvp"))
    assert "# tangents (forward over reverse" in d and "v_l1_W: tangent 'l1.W'" in d
    assert str(model.derivation("gnvp")).count("\n") < d.count("\n")   # curvature terms dropped
    assert "def gnvp(" in model.source("second_order_module")
    assert "define" in model.llvm("hvp")
    assert model.stats["second_order"]["cache"] in ("hit", "miss")


def test_jacobian_columns_of_parameters_the_output_does_not_use_are_zero():
    """A penalty-only parameter: its Jacobian block is a constant 0, broadcast over all its columns."""
    x, t = sg.input("x", 3), sg.target("t", 2)
    o = sg.dense(x, 2, name="fc")
    q = sg.param("q", 3)
    model = sg.compile(sg.mse(o, t) + sg.l2(q), output=o)
    theta = model.init(0) + 1.0
    X = np.random.default_rng(3).normal(size=(5, 3))
    jac = model.jacobian(theta, X)
    assert np.array_equal(jac[..., -3:], np.zeros((5, 2, 3)))
    assert np.all(np.isfinite(jac)) and np.abs(jac[..., :-3]).max() > 0
