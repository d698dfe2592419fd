"""Indexing and shape ops (symgrad.indexing) compiled: values against NumPy, the gradient against
central differences, the HVP against differences of the gradient, and every bad argument."""
from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg

try:
    from .reference_conv import central   # type: ignore[attr-defined]
except ImportError:   # pragma: no cover - run from the tests folder
    from reference_conv import central   # type: ignore[no-redef]

RNG = np.random.default_rng(5)


def test_indexing_and_shapes_through_the_kernels() -> None:
    x, t = sg.input("x", (3, 4, 5)), sg.target("t", 13)
    y = sg.tanh(x * sg.param("w", (3, 4, 5), init="uniform"))
    a, b, c = y[1], y[:, ::2, -1], y[None, ..., 1:4]            # (4, 5), (3, 2), (1, 3, 4, 3)
    d = sg.transpose(y, (2, 0, 1))                               # (5, 3, 4)
    e = sg.pad(a, ((1, 0), (2, 1)), value=0.5)                   # (5, 8)
    f = sg.concat([a[0], b[0], c[0, 0, 0]])                      # (10,)
    g = sg.stack([b[0], b[1]], axis=1)                           # (2, 2)
    h = y.reshape(12, 5)[3:6].T                                  # (5, 3)
    out = sg.concat([f, sg.sum(d, axis=(1, 2))[:3]])             # (13,)
    loss = sg.mse(out, t) + 0.01 * sg.sum(e) + sg.sum(g * g) + sg.sum(sg.flatten(h) ** 2) + sg.sum(c)
    m = sg.compile(loss, output=out)
    X, T = RNG.normal(size=(6, 3, 4, 5)), RNG.normal(size=(6, 13))
    theta = RNG.normal(size=m.n_params)
    Y = np.tanh(X * m.unflatten(theta)["w"])
    ref = np.concatenate([Y[:, 1, 0], Y[:, :, ::2, -1][:, 0], Y[:, None, ..., 1:4][:, 0, 0, 0],
                          np.transpose(Y, (0, 3, 1, 2)).sum(axis=(2, 3))[:, :3]], axis=1)
    np.testing.assert_allclose(m.predict(theta, X), ref, rtol=1e-13, atol=1e-15)

    def np_loss(th):
        Y = np.tanh(X * m.unflatten(th)["w"])
        o = np.concatenate([Y[:, 1, 0], Y[:, 0, ::2, -1], Y[:, 0, 0, 1:4],
                            Y.sum(axis=(1, 2))[:, :3]], axis=1)
        e = np.pad(Y[:, 1], ((0, 0), (1, 0), (2, 1)), constant_values=0.5)
        g = np.stack([Y[:, 0, ::2, -1], Y[:, 1, ::2, -1]], axis=2)
        h = Y.reshape(6, 12, 5)[:, 3:6]
        return np.mean(np.mean((o - T) ** 2, axis=1) + 0.01 * e.sum(axis=(1, 2)) + (g * g).sum(axis=(1, 2))
                       + (h ** 2).sum(axis=(1, 2)) + Y[:, :, :, 1:4].sum(axis=(1, 2, 3)))
    assert m.loss(theta, X, T) == pytest.approx(np_loss(theta), rel=1e-12)
    np.testing.assert_allclose(m.value_and_grad(theta, X, T)[1], central(np_loss, theta), rtol=1e-6, atol=1e-9)
    v = RNG.normal(size=m.n_params)
    grad = lambda th: m.value_and_grad(th, X, T)[1]   # noqa: E731
    np.testing.assert_allclose(m.hvp(theta, v, X, T), (grad(theta + 1e-5 * v) - grad(theta - 1e-5 * v)) / 2e-5,
                               rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("build, message", [
    (lambda x: x[3], "index 3 is out of range for axis 0"),
    (lambda x: x[:, ::-1], "only positive steps"),
    (lambda x: x[:, 5:], "is empty"),
    (lambda x: x[0, 0, 0, 0], "too many indices"),
    (lambda x: x[..., ...], "only one Ellipsis"),
    (lambda x: x[[0, 1]], "basic indexing only"),
    (lambda x: x.reshape(7, 9), "cannot become \\(7, 9\\)"),
    (lambda x: sg.reshape(x, (-1, -1)), "at most one -1"),
    (lambda x: sg.transpose(x, (0, 0, 1)), "not a permutation"),
    (lambda x: sg.pad(x, -1), "negative padding"),
    (lambda x: sg.pad(x, ((1, 1),) * 2), "pad_width"),
    (lambda x: sg.concat([x, x[:, :2, :2]], axis=1), "does not match"),
    (lambda x: sg.concat([x, x], axis=3), "axis 3 is out of range"),
    (lambda x: sg.stack([x, x[0]]), "differ"),
    (lambda x: sg.concat([]), "non-empty list"),
])
def test_bad_indexing_and_shapes_are_graph_errors(build, message: str) -> None:
    with pytest.raises(sg.GraphError, match=message):
        build(sg.input("x", (3, 4, 5)))
