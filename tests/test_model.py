"""The Model API contract, data conventions, reproducibility and every bad input of the issue."""
from __future__ import annotations

import numba
import numpy as np
import pytest
import sympy as sp

import symgrad as sg


@pytest.fixture(scope="module")
def quick():
    x = sg.input("x", 4)
    t = sg.target("t", 3)
    W = sg.param("W", (8, 4), init="glorot_uniform")
    b = sg.param("b", 8, init="zeros")
    h = sg.tanh(W @ x + b)
    h2 = sg.dense(h, 3, activation=sg.relu, name="fc2")
    mish = sg.elementwise("mish", lambda z: z * sp.tanh(sp.log(1 + sp.exp(z))))
    out = mish(h2)
    loss = sg.mse(out, t) + 1e-4 * sg.l2(W)
    model = sg.compile(loss, output=out)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 4))
    T = rng.normal(size=(700, 3))
    return model, X, T


def test_contract_names_and_layout(quick):
    model, X, T = quick
    assert model.param_names == ("W", "b", "fc2.W", "fc2.b")
    assert model.data_names == ("x", "t")
    theta = model.init(seed=0)
    assert theta.shape == (8 * 4 + 8 + 3 * 8 + 3,)
    P = model.unflatten(theta)
    assert P["fc2.W"].shape == (3, 8) and np.shares_memory(P["fc2.W"], theta)
    assert np.all(P["b"] == 0) and np.all(P["fc2.b"] == 0)
    np.testing.assert_array_equal(model.init(seed=0), theta)
    assert not np.array_equal(model.init(seed=1), theta)
    np.testing.assert_array_equal(model.flatten(P), theta)


def test_calls_agree(quick):
    model, X, T = quick
    theta = model.init(seed=0)
    J, g = model.value_and_grad(theta, X, T)
    assert model.loss(theta, X, T) == pytest.approx(J, rel=1e-14)
    assert model.loss(theta, x=X, t=T) == pytest.approx(J, rel=1e-14)
    np.testing.assert_allclose(model.grad(theta, X, t=T), g, rtol=0, atol=0)
    P = model.predict(theta, X)
    assert P.shape == (700, 3)
    W = model.unflatten(theta)
    h2 = np.maximum(0, np.tanh(X @ W["W"].T + W["b"]) @ W["fc2.W"].T + W["fc2.b"])
    out = h2 * np.tanh(np.log1p(np.exp(h2)))
    np.testing.assert_allclose(P, out, rtol=1e-13)
    assert J == pytest.approx(np.mean((out - T) ** 2) + 1e-4 * np.sum(W["W"] ** 2), rel=1e-13)
    assert sg.gradcheck(model, theta, X[:50], T[:50]) < 1e-5


def test_reproducible_across_thread_counts(quick, monkeypatch):
    from symgrad import runner
    model, X, T = quick
    theta = model.init(seed=0)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        J1, g1 = model.value_and_grad(theta, X, T)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        monkeypatch.setattr(runner, "AUTO_THREADS", False)   # split over the threads, even if slower
        J2, g2 = model.value_and_grad(theta, X, T)
    finally:
        numba.set_num_threads(before)
    assert J1 == J2
    np.testing.assert_array_equal(g1, g2)


def test_threads_are_used_only_where_timing_says_they_pay(quick, monkeypatch):
    """The first TUNE_CALLS calls each way are timed, then the faster way is kept; results never change."""
    from symgrad import runner
    model, X, T = quick
    theta = model.init(seed=0)
    before = numba.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one CPU: nothing to split")
    monkeypatch.setattr(runner, "TUNE_CALLS", 2)
    try:
        numba.set_num_threads(2)
        obj = model.bind(X, T)
        ref = obj.value_and_grad(theta)
        r = model._runner("value_and_grad")
        key = (X.shape[0], 2)
        for _ in range(6):
            J, g = obj.value_and_grad(theta)
            assert J == ref[0] and np.array_equal(g, ref[1])
        assert key in r._split and all(len(t) == 2 for t in r._timed[key])
    finally:
        numba.set_num_threads(before)


def test_float32(quick):
    model64, X, T = quick
    x = sg.input("x", 4)
    t = sg.target("t", 3)
    h = sg.dense(x, 8, "tanh", name="l1")
    o = sg.dense(h, 3, name="l2")
    m32 = sg.compile(sg.mse(o, t), dtype=np.float32)
    m64 = sg.compile(sg.mse(o, t))
    th = m64.init(0)
    J32, g32 = m32.value_and_grad(th.astype(np.float32), X, T)
    J64, g64 = m64.value_and_grad(th, X, T)
    assert g32.dtype == np.float32
    # float32 tolerance: a few hundred ulps relative to the gradient's scale
    assert J32 == pytest.approx(J64, rel=1e-5)
    assert np.max(np.abs(g32 - g64)) < 1e-5 * max(1.0, np.max(np.abs(g64)))


def test_multi_input_weight_sharing_and_shared_output():
    a = sg.input("a", 3)
    c = sg.input("c", 3)
    t = sg.target("t", 2)
    W = sg.param("W", (2, 3))
    o = sg.tanh(W @ a) + W @ c          # W used twice
    loss = sg.mse(o, t) + 0.1 * sg.sum(o * o) + 0.01 * sg.l2(W)   # o feeds loss and penalty
    model = sg.compile(loss, output=o)
    assert model.data_names == ("a", "c", "t")
    rng = np.random.default_rng(1)
    A, C, T = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    theta = model.init(0)
    Wv = theta.reshape(2, 3)
    O = np.tanh(A @ Wv.T) + C @ Wv.T
    dO = (2 * (O - T) / 2 + 0.2 * O) / 40
    gW = (dO * (1 - np.tanh(A @ Wv.T) ** 2)).T @ A + dO.T @ C + 0.02 * Wv
    J, g = model.value_and_grad(theta, A, C, T)
    assert J == pytest.approx(np.mean(np.mean((O - T) ** 2, 1) + 0.1 * (O * O).sum(1)) + 0.01 * (Wv ** 2).sum())
    np.testing.assert_allclose(g, gW.ravel(), rtol=1e-12)
    np.testing.assert_allclose(model.predict(theta, A, C), O, rtol=1e-13)


def test_parameter_only_graph():
    """Rosenbrock: scalar parameters, no data at all."""
    u = sg.param("u", ())
    v = sg.param("v", ())
    rb = sg.elementwise("rosenbrock", lambda a, b: (1 - a) ** 2 + 100 * (b - a ** 2) ** 2)
    model = sg.compile(rb(u, v) + 0 * sg.l2(sg.param("w", 3)))
    assert model.data_names == ()
    theta = np.array([-1.2, 1.0, 0.5, 0.5, 0.5])
    J, g = model.value_and_grad(theta)
    assert J == pytest.approx(24.2)
    np.testing.assert_allclose(g, [-215.6, -88.0, 0, 0, 0])


# ------------------------------------------------------------------------------ bad input

def test_graph_build_errors():
    x = sg.input("x", 4)
    W = sg.param("W", (3, 5))
    with pytest.raises(sg.GraphError, match=r"W.*\(3, 5\).*\(4,\)"):
        W @ x
    with pytest.raises(sg.GraphError, match="broadcast"):
        sg.param("b", 3) + x
    with pytest.raises(sg.GraphError, match="valid identifier"):
        sg.param("W]; import os; #", 3)
    with pytest.raises(sg.GraphError, match="valid identifier"):
        sg.input("class", 3)
    with pytest.raises(sg.GraphError, match="per-sample scalar"):
        sg.compile(sg.tanh(x))
    with pytest.raises(sg.GraphError, match="duplicate name 'W'"):
        sg.compile(sg.sum(sg.param("W", 4) * x) + sg.sum(sg.param("W", 4)))
    with pytest.raises(sg.GraphError, match="10 classes"):
        sg.softmax_cross_entropy(x, sg.labels("y", 10))
    with pytest.raises(sg.GraphError, match="unknown activation"):
        sg.dense(x, 3, activation="tanhh")


def test_undifferentiable_or_unprintable_function_named_at_compile():
    x = sg.input("x", 2)
    f = sg.elementwise("mystery", lambda z: sp.Function("g")(z) + z)
    with pytest.raises(sg.GraphError, match="mystery.*g"):
        sg.compile(sg.sum(f(x * sg.param("a", 2, init="ones"))))
    z = sg.elementwise("zeta_act", lambda z: sp.zeta(z))
    with pytest.raises(ValueError, match="zeta"):
        sg.compile(sg.sum(z(x * sg.param("a", 2, init="ones"))))


def test_call_time_errors(quick):
    model, X, T = quick
    theta = model.init(0)
    with pytest.raises(sg.DataError, match="theta.*67"):
        model.loss(theta[:-1], X, T)
    with pytest.raises(sg.DataError, match=r"'x'.*\(N, 4\).*\(700, 5\)"):
        model.loss(theta, np.zeros((700, 5)), T)
    with pytest.raises(sg.DataError, match="missing"):
        model.loss(theta, X)
    with pytest.raises(sg.DataError, match="at most 2"):
        model.loss(theta, X, T, T)
    with pytest.raises(sg.DataError, match="samples"):
        model.loss(theta, X, T[:10])
    with pytest.raises(sg.DataError, match="dtype"):
        model.loss(theta, X.astype(str), T)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(sg.DataError, match=r"'x'.*NaN.*\(3, 2\)"):
        model.value_and_grad(theta, bad, T)


def test_nan_check_opt_out():
    x = sg.input("x", 2)
    m = sg.compile(sg.sum(x * sg.param("a", 2, init="ones")), check_finite=False)
    assert np.isnan(m.loss(m.init(0), np.array([[np.nan, 1.0]])))


def test_label_errors():
    x = sg.input("x", 3)
    y = sg.labels("y", 3)
    m = sg.compile(sg.softmax_cross_entropy(sg.dense(x, 3, name="l"), y))
    th = m.init(0)
    X = np.zeros((4, 3))
    assert np.isfinite(m.loss(th, X, np.array([0.0, 1.0, 2.0, 1.0])))   # whole floats accepted
    with pytest.raises(sg.DataError, match="outside"):
        m.loss(th, X, np.array([0, 1, 3, 1]))
    with pytest.raises(sg.DataError, match="outside"):
        m.loss(th, X, np.array([0, -1, 2, 1]))
    with pytest.raises(sg.DataError, match="whole numbers"):
        m.loss(th, X, np.array([0.5, 1, 2, 1]))


def test_an_array_changed_in_shape_or_dtype_in_place_is_checked_again(quick):
    model, X, T = quick
    X, T = X.copy(), T.copy()
    theta = model.init(seed=0)
    model.loss(theta, X, T)                            # X and T pass, and are remembered
    X.shape = (X.shape[0] * 2, 2)                      # the same object, reshaped in place
    with pytest.raises(sg.DataError, match="data 'x'"):
        model.loss(theta, X, T)
    X.shape = (X.shape[0] // 2, 4)
    model.loss(theta, X, T)
    X.dtype = np.int64                                 # reinterpreted in place: converted, not trusted
    np.testing.assert_equal(model.loss(theta, X, T), model.loss(theta, X.astype(np.float64), T))


def test_each_kind_takes_exactly_the_data_it_reads():
    x, f, t = sg.input("x", 2), sg.input("f", 1), sg.target("t", 1)
    out = sg.dense(x, 1, name="l")
    model = sg.compile(sg.mse(out + f, t), output=out)
    rng = np.random.default_rng(0)
    X, F, T = rng.normal(size=(6, 2)), rng.normal(size=(6, 1)), rng.normal(size=(6, 1))
    theta = model.init(0)
    P = model.predict(theta, X)          # the output reads x alone: no f, no t
    assert P.shape == (6, 1)
    np.testing.assert_allclose(model.predict(theta, x=X, f=F), P)   # known extras by name are ignored
    assert model.jacobian(theta, X).shape == (6, 1, model.n_params)
    J = model.loss(theta, X, F, T)
    assert J == pytest.approx(np.mean((P + F - T) ** 2))
    with pytest.raises(sg.DataError, match=r"missing data argument\(s\) \[.t.\]"):
        model.loss(theta, X, F)


def test_labels_in_arithmetic_point_to_one_hot():
    x, y = sg.input("x", 3), sg.labels("y", 3)
    with pytest.raises(sg.GraphError, match=r"sg\.one_hot"):
        y * 2.0
    o = sg.dense(x, 3, name="l")
    model = sg.compile(sg.sum((o - sg.one_hot(y)) ** 2))     # squared error against one-hot targets
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(5, 3)), np.array([0, 2, 1, 1, 0])
    theta = model.init(0) + 0.1
    W, b = model.unflatten(theta)["l.W"], model.unflatten(theta)["l.b"]
    assert model.loss(theta, X, Y) == pytest.approx(np.mean(np.sum((X @ W.T + b - np.eye(3)[Y]) ** 2, axis=1)))
    assert sg.gradcheck(model, theta, X, Y) < 1e-6


def test_an_elementwise_that_ignores_its_per_sample_operand_is_a_constant_for_every_sample():
    x, t = sg.input("x", 3), sg.target("t", ())
    w = sg.param("w", 3, init="ones")
    two = sg.elementwise("two", lambda a: 2.0)(x)            # folded to 2.0 for every sample
    first = sg.elementwise("first", lambda a, b: a)(w, x)    # w, the same for every sample
    o = sg.sum(two) + sg.sum(first * x) + sg.sum(0 * x)
    model = sg.compile(sg.mse(o, t) + 0 * sg.sum(x))
    rng = np.random.default_rng(2)
    X, T = rng.normal(size=(4, 3)), rng.normal(size=4)
    theta = np.array([0.5, -1.0, 2.0])
    want = np.mean((6.0 + X @ theta - T) ** 2)
    assert model.loss(theta, X, T) == pytest.approx(want)
    assert sg.gradcheck(model, theta, X, T) < 1e-6
