"""Convolutions and pools (symgrad.convolution) against a direct NumPy implementation written
here: values, the gradient against central differences of the NumPy loss, Hessian-vector
products against differences of the gradient, Gauss-Newton and Jacobian, float32, and every
bad argument the layers refuse."""
from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg

try:
    from .reference_conv import central, np_avg_pool, np_conv, np_max_pool   # type: ignore[attr-defined]
except ImportError:   # pragma: no cover - run from the tests folder
    from reference_conv import central, np_avg_pool, np_conv, np_max_pool   # type: ignore[no-redef]

RNG = np.random.default_rng(11)


# ----------------------------------------------------------------------------- one model, every option

BRANCHES = {   # name: (build(x2, x1), reference(X2, X1, params))
    "pad1": (lambda x, x1: sg.conv2d(x, 3, 3, padding=1, name="pad1"),
             lambda X, X1, p: np_conv(X, p["pad1.W"], p["pad1.b"], (1, 1), [(1, 1)] * 2, (1, 1))),
    "strided": (lambda x, x1: sg.conv2d(x, 4, (3, 2), stride=2, dilation=(2, 1), padding=(1, 2), name="strided"),
                lambda X, X1, p: np_conv(X, p["strided.W"], p["strided.b"], (2, 2), [(1, 1), (2, 2)], (2, 1))),
    "same": (lambda x, x1: sg.conv2d(x, 2, 4, padding="same", bias=False, name="same"),
             lambda X, X1, p: np_conv(X, p["same.W"], None, (1, 1), [(1, 2), (1, 2)], (1, 1))),
    "groups": (lambda x, x1: sg.conv2d(x, 4, 3, groups=2, padding="valid", name="groups"),
               lambda X, X1, p: np_conv(X, p["groups.W"], p["groups.b"], (1, 1), [(0, 0)] * 2, (1, 1), groups=2)),
    "c1d": (lambda x, x1: sg.conv1d(x1, 3, 3, stride=2, padding=1, dilation=2, name="c1d"),
            lambda X, X1, p: np_conv(X1, p["c1d.W"], p["c1d.b"], (2,), [(1, 1)], (2,))),
    "max2": (lambda x, x1: sg.max_pool2d(x, 2), lambda X, X1, p: np_max_pool(X, (2, 2), (2, 2), 0)),
    "max2p": (lambda x, x1: sg.max_pool2d(x, 3, stride=1, padding=1), lambda X, X1, p: np_max_pool(X, (3, 3), (1, 1), 1)),
    "avg2p": (lambda x, x1: sg.avg_pool2d(x, 2, padding=1), lambda X, X1, p: np_avg_pool(X, (2, 2), (2, 2), 1)),
    "avg1": (lambda x, x1: sg.avg_pool1d(x1, 3, stride=2), lambda X, X1, p: np_avg_pool(X1, (3,), (2,), 0)),
    "max1": (lambda x, x1: sg.max_pool1d(x1, 2, padding=1), lambda X, X1, p: np_max_pool(X1, (2,), (2,), 1)),
    "gap": (lambda x, x1: sg.global_avg_pool(x), lambda X, X1, p: X.mean(axis=(2, 3))),
}
SHAPE2, SHAPE1 = (2, 7, 6), (2, 9)


def _scaled(x: sg.Tensor, name: str, shape) -> sg.Tensor:
    """tanh(w * x): parameters in front of the pools too, and second derivatives that are not zero."""
    return sg.tanh(x * sg.param(name, shape, init="uniform"))


def _reference(X, X1, p, names=tuple(BRANCHES)):
    """The network's output in NumPy (the same parameters)."""
    A, A1 = np.tanh(X * p["w2"]), np.tanh(X1 * p["w1"])
    return np.concatenate([np.tanh(BRANCHES[k][1](A, A1, p)).reshape(len(X), -1) for k in names], axis=1)


def _cnn(names):
    x, x1 = sg.input("x", SHAPE2), sg.input("x1", SHAPE1)
    a, a1 = _scaled(x, "w2", (2, 1, 1)), _scaled(x1, "w1", (2, 1))
    out = sg.concat([sg.flatten(sg.tanh(BRANCHES[k][0](a, a1))) for k in names])
    t = sg.target("t", out.shape)
    m = sg.compile(sg.mse(out, t), output=out)
    X, X1 = RNG.normal(size=(5,) + SHAPE2), RNG.normal(size=(5,) + SHAPE1)
    T = RNG.normal(size=(5,) + out.shape)
    theta = m.init(3) + 0.2 * RNG.normal(size=m.n_params)
    return m, theta, X, X1, T


@pytest.fixture(scope="module")
def cnn():
    """Every option side by side (first-order kinds)."""
    return _cnn(list(BRANCHES))


@pytest.fixture(scope="module")
def small_cnn():
    """A strided, dilated, padded conv, a padded max pool and a 1-d conv and pool: the
    second-order kinds compile in seconds."""
    return _cnn(["strided", "max2p", "c1d", "avg1"])


def test_every_option_matches_numpy_values_and_gradient(cnn):
    m, theta, X, X1, T = cnn
    p = m.unflatten(theta)
    np.testing.assert_allclose(m.predict(theta, X, X1), _reference(X, X1, p), rtol=1e-12, atol=1e-13)
    f, g = m.value_and_grad(theta, X, X1, T)

    def np_loss(th):
        return np.mean((_reference(X, X1, m.unflatten(th)) - T) ** 2)
    assert f == pytest.approx(np_loss(theta), rel=1e-12)
    np.testing.assert_allclose(g, central(np_loss, theta), rtol=1e-6, atol=1e-9)   # independent of our kernels


def test_curvature_gauss_newton_and_jacobian_of_a_cnn(small_cnn):
    m, theta, X, X1, T = small_cnn
    u, v = RNG.normal(size=m.n_params), RNG.normal(size=m.n_params)
    hv = m.hvp(theta, v, X, X1, T)
    grad = lambda th: m.value_and_grad(th, X, X1, T)[1]   # noqa: E731
    h = 1e-5
    np.testing.assert_allclose(hv, (grad(theta + h * v) - grad(theta - h * v)) / (2 * h), rtol=1e-5, atol=1e-8)
    assert u @ hv == pytest.approx(v @ m.hvp(theta, u, X, X1, T), rel=1e-10)
    gn = m.gnvp(theta, v, X, X1, T)
    assert v @ gn >= 0 and u @ gn == pytest.approx(v @ m.gnvp(theta, u, X, X1, T), rel=1e-10)
    J = m.jacobian(theta, X[:2], X1[:2])
    fd = central(lambda th: m.predict(th, X[:2], X1[:2]), theta)
    np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-9)
    # Gauss-Newton of the mean squared error from the Jacobian: 2/(N K) J^T J v
    Jf = m.jacobian(theta, X, X1).reshape(len(X), -1, m.n_params)
    ref = 2 / Jf.shape[1] * np.einsum("nkp,nkq,q->p", Jf, Jf, v) / len(X)
    np.testing.assert_allclose(gn, ref, rtol=1e-10, atol=1e-12)


def test_float32_cnn():
    img, y = sg.input("img", (1, 8, 8)), sg.labels("y", 4)
    h = sg.max_pool2d(sg.conv2d(img, 3, 3, padding=1, activation="relu", name="c1"), 2)
    out = sg.dense(sg.flatten(sg.avg_pool2d(sg.conv2d(h, 4, 3, padding=1, activation="tanh", name="c2"), 2)), 4,
                   name="f")
    loss = sg.softmax_cross_entropy(out, y)
    m64, m32 = sg.compile(loss, output=out), sg.compile(loss, output=out, dtype=np.float32)
    X, Y = RNG.normal(size=(16, 1, 8, 8)), RNG.integers(0, 4, 16)
    theta = m64.init(0)
    f64, g64 = m64.value_and_grad(theta, X, Y)
    f32, g32 = m32.value_and_grad(theta.astype(np.float32), X.astype(np.float32), Y)
    assert g32.dtype == np.float32 and f32 == pytest.approx(f64, rel=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-5 * np.abs(g64).max())
    assert m64.stats["forward_ops"] > 0 and {k for k in m64.unflatten(theta)} == {"c1.W", "c1.b", "c2.W", "c2.b", "f.W", "f.b"}
    bound = 1 / np.sqrt(1 * 3 * 3)   # PyTorch's default: U(+-1/sqrt(fan_in)) for W and b
    W = m64.unflatten(theta)["c1.W"]
    assert W.shape == (3, 1, 3, 3) and np.abs(W).max() <= bound and np.abs(W).max() > 0.5 * bound


def test_max_pool_gradient_goes_to_the_first_largest_element():
    x = sg.input("x", (1, 2, 4))
    w = sg.param("w", (1, 2, 4), init="ones")
    m = sg.compile(sg.sum(sg.max_pool2d(x * w, 2)))
    X = np.ones((1, 1, 2, 4))   # every window ties
    _, g = m.value_and_grad(m.init(0), X)
    np.testing.assert_array_equal(g.reshape(2, 4), [[1, 0, 1, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("build, message", [
    (lambda x: sg.conv2d(x, 2, 9), "larger than the padded input"),
    (lambda x: sg.conv2d(x, 2, 3, stride=0), "stride 0 must be positive"),
    (lambda x: sg.conv2d(x, 2, 3, dilation=-1), "dilation -1 must be positive"),
    (lambda x: sg.conv2d(x, 2, 3, padding=-1), "padding -1 must be non-negative"),
    (lambda x: sg.conv2d(x, 2, 3, padding="same", stride=2), "'same' needs stride 1"),
    (lambda x: sg.conv2d(x, 2, 3, groups=2), "groups=2 must divide the 3 input channels"),
    (lambda x: sg.conv(x, sg.param("K", (2, 2, 3, 3))), "3 input channels of x do not match"),
    (lambda x: sg.conv(x, sg.param("K", (2, 3, 3))), "is not \\(C, L\\)"),
    (lambda x: sg.conv1d(x, 2, 3), "input must be \\(C, L\\)"),
    (lambda x: sg.max_pool2d(x[0], 2), "input must be a real \\(C, H, W\\)"),
    (lambda x: sg.avg_pool2d(x, 2, padding=2), "at most half the kernel"),
    (lambda x: sg.conv2d(x, 2, (3, 3, 3)), "kernel_size must be an int or 2 ints"),
    (lambda x: sg.conv2d(x, 2, 3, padding="full"), "padding must be an int, a tuple, 'same' or 'valid'"),
])
def test_bad_arguments_are_graph_errors(build, message):
    with pytest.raises(sg.GraphError, match=message):
        build(sg.input("x", (3, 6, 6)))


def test_convolutions_big_enough_are_one_blas_product_per_sample():
    """im2col: the weights times each sample's windows (and the two transposed products of the
    backward pass) as symgrad.runtime.dot_rows calls, checked against NumPy, differences and hvp."""
    x = sg.input("x", (3, 10, 10))
    h = sg.conv2d(x, 8, 3, padding=1, activation="tanh", name="c1")
    h = sg.conv2d(h, 4, 3, stride=2, name="c2")
    t = sg.target("t", h.shape)
    m = sg.compile(sg.mse(h, t), output=h)
    src = m.source("value_and_grad")
    assert src.count("dot_rows(") >= 4   # c1 and c2 forward, each weight's gradient, c2's input adjoint
    X, T = RNG.normal(size=(6, 3, 10, 10)), RNG.normal(size=(6, 4, 4, 4))
    theta = m.init(0)
    p = m.unflatten(theta)

    def np_out(p):
        a = np.tanh(np_conv(X, p["c1.W"], p["c1.b"], (1, 1), [(1, 1)] * 2, (1, 1)))
        return np_conv(a, p["c2.W"], p["c2.b"], (2, 2), [(0, 0)] * 2, (1, 1))
    np.testing.assert_allclose(m.predict(theta, X), np_out(p), rtol=1e-12, atol=1e-13)
    np_loss = lambda th: np.mean((np_out(m.unflatten(th)) - T) ** 2)   # noqa: E731
    np.testing.assert_allclose(m.value_and_grad(theta, X, T)[1], central(np_loss, theta), rtol=1e-6, atol=1e-9)
    v = RNG.normal(size=m.n_params)
    grad = lambda th: m.value_and_grad(th, X, T)[1]   # noqa: E731
    np.testing.assert_allclose(m.hvp(theta, v, X, T), (grad(theta + 1e-5 * v) - grad(theta - 1e-5 * v)) / 2e-5,
                               rtol=1e-5, atol=1e-8)
