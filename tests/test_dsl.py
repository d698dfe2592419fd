"""The DSL's tensors of any rank: NumPy broadcasting in arithmetic, reductions over axes, and the
errors for shapes that do not fit. Values against NumPy, derivatives against central differences
and a hand-written NumPy gradient, through every model method."""
from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg

try:
    from .reference_conv import central   # type: ignore[attr-defined]
except ImportError:   # pragma: no cover - run from the tests folder
    from reference_conv import central   # type: ignore[no-redef]

RNG = np.random.default_rng(7)
X = RNG.normal(size=(9, 2, 3, 4))
T = RNG.normal(size=(9, 2, 3, 4))


@pytest.fixture(scope="module")
def broadcast_model() -> sg.Model:
    """h = tanh(x * c + b) - d with x (2, 3, 4), c (4,), b (2, 1, 1), d (3, 1): every kind of repeat."""
    x, t = sg.input("x", (2, 3, 4)), sg.target("t", (2, 3, 4))
    c, b, d = sg.param("c", 4), sg.param("b", (2, 1, 1)), sg.param("d", (3, 1))
    h = sg.tanh(x * c + b) - d
    return sg.compile(sg.mse(h, t), output=h)


def _numpy_forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.tanh(x * p["c"] + p["b"])
    return a, a - p["d"]


def _numpy_grad(p: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """The gradient of mean over samples of mean over elements of (h - t)^2, by hand."""
    a, h = _numpy_forward(p, x)
    g_h = 2 * (h - t) / (x.shape[0] * h[0].size)
    g_z = g_h * (1 - a ** 2)
    return {"c": (g_z * x).sum(axis=(0, 1, 2)), "b": g_z.sum(axis=(0, 2, 3)).reshape(2, 1, 1),
            "d": -g_h.sum(axis=(0, 1, 3)).reshape(3, 1)}


def test_rank_3_data_and_broadcasting_match_numpy(broadcast_model: sg.Model) -> None:
    m = broadcast_model
    theta = RNG.normal(size=m.n_params)
    p = m.unflatten(theta)
    assert {k: v.shape for k, v in p.items()} == {"c": (4,), "b": (2, 1, 1), "d": (3, 1)}
    np.testing.assert_allclose(m.predict(theta, X), _numpy_forward(p, X)[1], rtol=1e-13, atol=1e-13)
    f, g = m.value_and_grad(theta, X, T)
    np.testing.assert_allclose(f, np.mean((_numpy_forward(p, X)[1] - T) ** 2), rtol=1e-13)
    ref = _numpy_grad(p, X, T)
    np.testing.assert_allclose(g, np.concatenate([ref[k].ravel() for k in p]), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(g, central(lambda th: m.loss(th, X, T), theta), rtol=1e-6, atol=1e-9)


def test_rank_3_curvature_and_jacobian(broadcast_model: sg.Model) -> None:
    m = broadcast_model
    theta, u, v = (RNG.normal(size=m.n_params) for _ in range(3))
    grad = lambda th: m.value_and_grad(th, X, T)[1]   # noqa: E731
    hv = m.hvp(theta, v, X, T)
    np.testing.assert_allclose(hv, central(grad, theta) @ v, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(u @ hv, v @ m.hvp(theta, u, X, T), rtol=1e-10)
    gn = m.gnvp(theta, v, X, T)
    assert v @ gn >= 0 and np.isclose(u @ gn, v @ m.gnvp(theta, u, X, T), rtol=1e-10)
    jac = m.jacobian(theta, X)
    assert jac.shape == (9, 2, 3, 4, m.n_params)
    fd = central(lambda th: m.predict(th, X), theta)
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-9)


def test_sum_and_mean_over_axes() -> None:
    x = sg.input("x", (2, 3, 4))
    y = x * sg.param("w", (2, 3, 4), init="uniform")
    over_02 = sg.sum(y, axis=(0, 2))
    last = sg.sum(sg.mean(y, axis=-1), 0)
    middle = sg.sum(sg.sum(y, 1), (0, 1))
    assert (over_02.shape, last.shape, middle.shape, sg.mean(y).shape) == ((3,), (3,), (), ())
    assert sg.sum(y, ()) is y
    out = over_02 * last + middle + sg.mean(y)
    m = sg.compile(sg.sum(sg.square(out)), output=out)
    theta = RNG.normal(size=m.n_params)
    Y = X * m.unflatten(theta)["w"]
    ref = Y.sum(axis=(1, 3)) * Y.mean(axis=-1).sum(axis=1) + (Y.sum(axis=2).sum(axis=(1, 2)) + Y.mean(axis=(1, 2, 3)))[:, None]
    np.testing.assert_allclose(m.predict(theta, X), ref, rtol=1e-12)
    np.testing.assert_allclose(m.value_and_grad(theta, X)[1], central(lambda th: m.loss(th, X), theta),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("build, message", [
    (lambda x: x + sg.param("q", (3,)), "do not broadcast"),
    (lambda x: x * sg.param("q", (2, 2, 1)), "do not broadcast"),
    (lambda x: sg.sum(x, axis=3), "axis 3 is out of range"),
    (lambda x: sg.mean(x, axis=(0, -3)), "repeats an axis"),
    (lambda x: sg.sum(x, axis=1.0), "axis must be None, an int or a tuple"),
    (lambda x: sg.input("bad", (2, 0)), "positive ints"),
])
def test_shapes_that_do_not_fit_are_graph_errors(build, message: str) -> None:
    with pytest.raises(sg.GraphError, match=message):
        build(sg.input("x", (2, 3, 4)))


def test_constants_numpy_arrays_zeros_and_ones() -> None:
    x, t = sg.input("x", (3, 4)), sg.target("t", (3, 4))
    w = sg.param("w", (3, 4), init="uniform")
    C = np.arange(12.0).reshape(3, 4) / 10
    h = sg.tanh(C * x * w + sg.ones((3, 4)) + sg.constant([1.0, 2.0, 3.0, 4.0])) + sg.zeros(4)
    assert sg.constant(2.5).shape == () and sg.zeros((2, 3)).shape == (2, 3)
    m = sg.compile(sg.mse(h, t), output=h)
    X, Tt = RNG.normal(size=(6, 3, 4)), RNG.normal(size=(6, 3, 4))
    theta = RNG.normal(size=m.n_params)
    assert m.n_params == 12   # constants are not parameters
    W = m.unflatten(theta)["w"]
    np.testing.assert_allclose(m.predict(theta, X), np.tanh(C * X * W + 1 + np.arange(1.0, 5.0)), rtol=1e-13)
    np.testing.assert_allclose(m.value_and_grad(theta, X, Tt)[1], central(lambda th: m.loss(th, X, Tt), theta),
                               rtol=1e-6, atol=1e-9)
    assert "CONST_constant = np.array(" in m.source("module")   # one module-level array, read by name
    m32 = sg.compile(sg.mse(h, t), output=h, dtype=np.float32)
    np.testing.assert_allclose(m32.predict(theta.astype(np.float32), X.astype(np.float32)), m.predict(theta, X),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value, message", [
    ([1.0, np.nan], "must be finite"), ("abc", "not an array of numbers"), (np.zeros((0, 2)), "empty array"),
])
def test_bad_constants_are_graph_errors(value, message: str) -> None:
    with pytest.raises(sg.GraphError, match=message):
        sg.constant(value)
