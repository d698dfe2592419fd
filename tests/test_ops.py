"""Every activation's and loss's value, gradient and Hessian-vector product: against central
finite differences and against an independent whole-expression SymPy derivative
(tests/sympy_reference.py)."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from sympy_reference import reference_curvature, reference_value_and_grad

ACTS = [sg.sigmoid, sg.tanh, sg.relu, lambda z: sg.leaky_relu(z, 0.1), lambda z: sg.elu(z, 0.7),
        sg.softplus, sg.gelu, sg.silu, sg.identity,
        sg.elementwise("mish", lambda z: z * sp.tanh(sp.log(1 + sp.exp(z))))]


def central_grad(model, theta, *data, h=1e-6):
    g = np.empty_like(theta)
    for i in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += h
        tm[i] -= h
        g[i] = (model.loss(tp, *data) - model.loss(tm, *data)) / (2 * h)
    return g


def rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@pytest.fixture(scope="module")
def act_case():
    """One model with a branch per activation, so one compile covers all of them."""
    x = sg.input("x", 3)
    t = sg.target("t", 2)
    out = None
    for k, act in enumerate(ACTS):
        h = sg.dense(x, 2, activation=act, name=f"a{k}")
        term = sg.param(f"v{k}", (2, 2), init="glorot_uniform") @ h
        out = term if out is None else out + term
    loss = sg.mse(out, t)
    model = sg.compile(loss, output=out)
    rng = np.random.default_rng(3)
    theta = model.init(seed=1) + 0.1 * rng.normal(size=model.n_params)
    X = rng.normal(size=(3, 3)) * 1.5
    T = rng.normal(size=(3, 2))
    return model, loss, theta, X, T


def test_activations_match_finite_differences(act_case):
    model, _, theta, X, T = act_case
    _, g = model.value_and_grad(theta, X, T)
    assert rel(g, central_grad(model, theta, X, T)) < 1e-6


def check_hvp(model, theta, args, rng, fused=True):
    """HVP against central differences of the gradient, against the dense Hessian, and the
    symmetry u.Hv = v.Hu; value_grad_hvp against the separate kernels (if ``fused``)."""
    v, u = rng.normal(size=(2, model.n_params))
    hv = model.hvp(theta, v, *args)
    h = 1e-5
    fd = (model.grad(theta + h * v, *args) - model.grad(theta - h * v, *args)) / (2 * h)
    assert rel(hv, fd) < 1e-6
    H = model.hessian(theta, *args)
    assert rel(H @ v, hv) < 1e-10
    hu = model.hvp(theta, u, *args)
    assert abs(u @ hv - v @ hu) <= 1e-10 * max(abs(u @ hv), 1e-300)
    if fused:
        f, g, hv2 = model.value_grad_hvp(theta, v, *args)
        f1, g1 = model.value_and_grad(theta, *args)
        assert f == pytest.approx(f1, rel=1e-13) and rel(g, g1) < 1e-13 and rel(hv2, hv) < 1e-13


def test_activations_hvp(act_case):
    model, _, theta, X, T = act_case
    check_hvp(model, theta, (X, T), np.random.default_rng(7), fused=False)  # fused: test_losses_hvp


def test_activations_hvp_match_sympy_whole_expression(act_case):
    model, loss, theta, X, T = act_case
    u, v = np.random.default_rng(10).normal(size=(2, model.n_params))
    uhv = u @ model.hvp(theta, v, X, T)
    assert uhv == pytest.approx(reference_curvature(model, loss, theta, {"x": X, "t": T}, u, v), rel=1e-10)


def test_activations_match_sympy_whole_expression():
    x = sg.input("x", 2)
    t = sg.target("t", 1)
    out = None
    for k, act in enumerate(ACTS):
        term = sg.dense(sg.dense(x, 1, activation=act, name=f"a{k}"), 1, name=f"o{k}", bias=False)
        out = term if out is None else out + term
    loss = sg.mse(out, t)
    model = sg.compile(loss)
    rng = np.random.default_rng(4)
    theta = model.init(seed=1) + 0.1 * rng.normal(size=model.n_params)
    X = rng.normal(size=(2, 2))
    T = rng.normal(size=(2, 1))
    J, g = model.value_and_grad(theta, X, T)
    Jr, gr = reference_value_and_grad(model, loss, theta, {"x": X, "t": T})
    assert J == pytest.approx(Jr, rel=1e-12)
    assert rel(g, gr) < 1e-10


@pytest.fixture(scope="module")
def loss_case():
    """One model whose loss is a weighted sum of every loss of the DSL."""
    x = sg.input("x", 3)
    t = sg.target("t", 4)      # real targets
    s = sg.target("s", 4)      # +-1 targets for hinge
    p = sg.target("p", 4)      # probabilities for bce / kl_div
    y = sg.labels("y", 4)
    W = sg.param("W", (4, 3))
    b = sg.param("b", 4, init=("normal", 0.3))
    o = W @ x + b
    terms = [sg.mse(o, t), sg.l1_loss(o, t), sg.huber(o, t, 0.5), sg.softmax_cross_entropy(o, y),
             sg.nll(sg.log_softmax(o), y), sg.bce(sg.sigmoid(o), p), sg.bce_with_logits(o, p),
             sg.hinge(o, s), sg.multiclass_hinge(o, y), sg.kl_div(o, p), sg.max(o), sg.logsumexp(o),
             sg.sum(sg.softmax(o) * t), 0.01 * sg.l2(W), 0.02 * sg.l1(W)]
    loss = terms[0]
    for k, term in enumerate(terms[1:], start=2):
        loss = loss + (1.0 / k) * term
    model = sg.compile(loss, output=o)
    rng = np.random.default_rng(5)
    theta = model.init(seed=2)
    n = 4
    data = {"x": rng.normal(size=(n, 3)), "t": rng.normal(size=(n, 4)),
            "s": rng.choice([-1.0, 1.0], size=(n, 4)), "p": rng.dirichlet(np.ones(4), size=n),
            "y": rng.integers(0, 4, size=n)}
    return model, loss, theta, data


def test_losses_match_finite_differences(loss_case):
    model, _, theta, data = loss_case
    args = [data[n] for n in model.data_names]
    _, g = model.value_and_grad(theta, *args)
    assert rel(g, central_grad(model, theta, *args)) < 1e-6


def test_losses_match_sympy_whole_expression(loss_case):
    model, loss, theta, data = loss_case
    J, g = model.value_and_grad(theta, *[data[n] for n in model.data_names])
    Jr, gr = reference_value_and_grad(model, loss, theta, data)
    assert J == pytest.approx(Jr, rel=1e-12)
    assert rel(g, gr) < 1e-10


def test_losses_hvp(loss_case):
    model, _, theta, data = loss_case
    check_hvp(model, theta, [data[n] for n in model.data_names], np.random.default_rng(8))


def test_losses_hvp_match_sympy_whole_expression(loss_case):
    model, loss, theta, data = loss_case
    rng = np.random.default_rng(9)
    u, v = rng.normal(size=(2, model.n_params))
    uhv = u @ model.hvp(theta, v, *[data[n] for n in model.data_names])
    assert uhv == pytest.approx(reference_curvature(model, loss, theta, data, u, v), rel=1e-10)


def test_loss_values_follow_pytorch_conventions():
    """Each loss on its own against a NumPy formula of PyTorch's convention (mean reduction)."""
    rng = np.random.default_rng(0)
    o_np = rng.normal(size=(5, 4)) * 2
    t_np = rng.normal(size=(5, 4))
    p_np = rng.dirichlet(np.ones(4), size=5)
    y_np = rng.integers(0, 4, size=5)
    s_np = rng.choice([-1.0, 1.0], size=(5, 4))
    o = sg.input("o", 4)
    t = sg.target("t", 4)
    y = sg.labels("y", 4)
    lse = np.log(np.exp(o_np).sum(1))
    logp = o_np - lse[:, None]
    d = o_np - t_np
    sig = 1 / (1 + np.exp(-o_np))
    cases = [
        (sg.mse(o, t), (o_np, t_np), np.mean(d ** 2)),
        (sg.l1_loss(o, t), (o_np, t_np), np.mean(np.abs(d))),
        (sg.huber(o, t, 0.7), (o_np, t_np),
         np.mean(np.where(np.abs(d) < 0.7, 0.5 * d ** 2, 0.7 * (np.abs(d) - 0.35)))),
        (sg.softmax_cross_entropy(o, y), (o_np, y_np), np.mean(-logp[np.arange(5), y_np])),
        (sg.bce(sg.sigmoid(o), t), (o_np, p_np),
         np.mean(-(p_np * np.log(sig) + (1 - p_np) * np.log(1 - sig)))),
        (sg.bce_with_logits(o, t), (o_np, p_np),
         np.mean(-(p_np * np.log(sig) + (1 - p_np) * np.log(1 - sig)))),
        (sg.hinge(o, t), (o_np, s_np), np.mean(np.maximum(0, 1 - s_np * o_np))),
        (sg.kl_div(o, t), (o_np, p_np), np.mean((p_np * (np.log(p_np) - logp)).sum(1))),
    ]
    margins = np.maximum(0, 1 + o_np - o_np[np.arange(5), y_np][:, None])
    margins[np.arange(5), y_np] = 0
    cases.append((sg.multiclass_hinge(o, y), (o_np, y_np), np.mean(margins.sum(1))))
    for k, (expr, (a, b), want) in enumerate(cases):
        model = sg.compile(expr)
        args = {"o": a, "t": b, "y": b}
        got = model.loss(model.init(0), *[args[n] for n in model.data_names])
        assert got == pytest.approx(want, rel=1e-12), f"case {k}: {expr.name}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stable_at_extreme_inputs(dtype):
    """No nan/inf in value or gradient for pre-activations in [-800, 800]."""
    x = sg.input("x", 1)
    a = sg.param("a", 1, init="ones")
    z = a * x
    acts = [sg.sigmoid(z), sg.tanh(z), sg.relu(z), sg.leaky_relu(z), sg.elu(z), sg.softplus(z),
            sg.gelu(z), sg.silu(z)]
    loss = sg.sum(acts[0])
    for h in acts[1:]:
        loss = loss + sg.sum(h) * 1e-3
    t = sg.target("t", 1)
    loss = loss + sg.bce_with_logits(z, t) + sg.softmax_cross_entropy(z * 3 + 0, sg.labels("y", 1))
    model = sg.compile(loss, dtype=dtype)
    X = np.array([[-800.0], [-50.0], [0.0], [50.0], [800.0]])
    T = np.array([[0.0], [1.0], [0.0], [1.0], [0.0]])
    J, g = model.value_and_grad(model.init(0), X, T, np.zeros(5, dtype=int))
    assert np.isfinite(J) and np.all(np.isfinite(g))
