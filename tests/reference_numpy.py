"""Hand-written NumPy forward + backprop reference for dense/activation/loss stacks.

Independent of symgrad: every derivative below is written out by hand (no
autodiff, no SymPy).  Backprop follows the course notes' error-term rule
(notes 000, eqs. 22-25):

    delta^(L) = J_sigma(z^(L))^T dL/da^(L)          (= dL/da (.) sigma'(z) elementwise)
    delta^(l) = (W^(l+1))^T delta^(l+1) (.) sigma'(z^(l))
    dL/dW^(l) = delta^(l) (a^(l-1))^T,   dL/db^(l) = delta^(l)

Batched: arrays are ``(N, features)``, row = sample, so ``z = a @ W.T + b``.
The objective is the MEAN over the N samples of the per-sample loss, plus
parameter-only penalties that the mean leaves unchanged (issue 2 conventions).
Loss conventions are PyTorch's (mean reduction over features where stated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import numpy as np
from scipy.special import erf, expit

Array = np.ndarray
ActSpec = Union[str, tuple[str, Any]]  # a name, or (name, kwargs as a dict or (key, value) pairs)
Layer = tuple[Array, Union[Array, None], ActSpec]  # (W (out, in), b (out,) or None, activation)

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# ---------------------------------------------------------------- activations
# Each entry: (f(z, **kw), f'(z, **kw)) for elementwise activations.


def _sigmoid(z: Array) -> Array:
    return expit(z)


def _dsigmoid(z: Array) -> Array:
    s = expit(z)
    return s * (1.0 - s)


def _tanh(z: Array) -> Array:
    return np.tanh(z)


def _dtanh(z: Array) -> Array:
    t = np.tanh(z)
    return 1.0 - t * t


def _relu(z: Array) -> Array:
    return np.where(z > 0, z, 0.0)


def _drelu(z: Array) -> Array:
    return np.where(z > 0, 1.0, 0.0)


def _leaky_relu(z: Array, alpha: float = 0.01) -> Array:
    return np.where(z > 0, z, alpha * z)


def _dleaky_relu(z: Array, alpha: float = 0.01) -> Array:
    return np.where(z > 0, 1.0, alpha)


def _elu(z: Array, alpha: float = 1.0) -> Array:
    return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))


def _delu(z: Array, alpha: float = 1.0) -> Array:
    return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))


def _softplus(z: Array) -> Array:
    return np.logaddexp(0.0, z)


def _dsoftplus(z: Array) -> Array:
    return expit(z)


def _gelu(z: Array) -> Array:
    return 0.5 * z * (1.0 + erf(z / _SQRT2))


def _dgelu(z: Array) -> Array:
    # d/dz [z Phi(z)] = Phi(z) + z phi(z)
    return 0.5 * (1.0 + erf(z / _SQRT2)) + z * _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _silu(z: Array) -> Array:
    return z * expit(z)


def _dsilu(z: Array) -> Array:
    s = expit(z)
    return s + z * s * (1.0 - s)


def _identity(z: Array) -> Array:
    return np.array(z, dtype=np.float64, copy=True)


def _didentity(z: Array) -> Array:
    return np.ones_like(z, dtype=np.float64)


ACTIVATIONS: dict[str, tuple[Callable[..., Array], Callable[..., Array]]] = {
    "sigmoid": (_sigmoid, _dsigmoid),
    "tanh": (_tanh, _dtanh),
    "relu": (_relu, _drelu),
    "leaky_relu": (_leaky_relu, _dleaky_relu),
    "elu": (_elu, _delu),
    "softplus": (_softplus, _dsoftplus),
    "gelu": (_gelu, _dgelu),
    "silu": (_silu, _dsilu),
    "swish": (_silu, _dsilu),
    "identity": (_identity, _didentity),
}

#: Activations with a kink (non-differentiable point) at z = 0.
KINKED_ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu"})

#: Row-wise (vector) activations; their backward pass is a VJP, not a product with sigma'.
VECTOR_ACTIVATIONS = frozenset({"softmax", "log_softmax"})


def log_softmax(z: Array) -> Array:
    """Row-wise log-softmax, stable (max-shifted log-sum-exp)."""
    m = z.max(axis=-1, keepdims=True)
    s = z - m
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def softmax(z: Array) -> Array:
    """Row-wise softmax."""
    return np.exp(log_softmax(z))


def split_act(act: ActSpec) -> tuple[str, dict[str, float]]:
    """(name, kwargs) of an activation spec given as a name or (name, kwargs)."""
    if isinstance(act, str):
        return act, {}
    name, kw = act
    return name, dict(kw)


def activate(act: ActSpec, z: Array) -> Array:
    """Apply activation ``act`` (name or (name, kwargs)) to pre-activations ``z`` (N, k)."""
    name, kw = split_act(act)
    if name == "softmax":
        return softmax(z)
    if name == "log_softmax":
        return log_softmax(z)
    return ACTIVATIONS[name][0](z, **kw)


def activation_derivative(act: ActSpec, z: Array) -> Array:
    """Elementwise derivative sigma'(z) of an elementwise activation."""
    name, kw = split_act(act)
    return ACTIVATIONS[name][1](z, **kw)


def activation_vjp(act: ActSpec, z: Array, a: Array, v: Array) -> Array:
    """delta = J_sigma(z)^T v per row; ``a`` = sigma(z).  Elementwise case: v * sigma'(z)."""
    name, _ = split_act(act)
    if name == "softmax":  # J = diag(s) - s s^T
        return a * (v - (v * a).sum(axis=-1, keepdims=True))
    if name == "log_softmax":  # J = I - 1 s^T
        return v - np.exp(a) * v.sum(axis=-1, keepdims=True)
    return v * activation_derivative(act, z)


# --------------------------------------------------------------------- losses
# Each per-sample loss returns (values (N,), dL_i/do_i (N, k)).  Targets are
# (N, k) reals, or (N,) integer labels for the classification losses.


def _onehot(y: Array, k: int) -> Array:
    y = np.asarray(y).astype(np.int64).reshape(-1)
    out = np.zeros((y.shape[0], k))
    out[np.arange(y.shape[0]), y] = 1.0
    return out


def _mse(o: Array, t: Array) -> tuple[Array, Array]:
    d = o - t
    k = o.shape[1]
    return (d * d).mean(axis=1), 2.0 * d / k


def _l1(o: Array, t: Array) -> tuple[Array, Array]:
    d = o - t
    k = o.shape[1]
    return np.abs(d).mean(axis=1), np.sign(d) / k


def _huber(o: Array, t: Array, delta: float = 1.0) -> tuple[Array, Array]:
    d = o - t
    ad = np.abs(d)
    k = o.shape[1]
    small = ad <= delta  # PyTorch HuberLoss: 0.5 d^2 if |d| <= delta else delta (|d| - delta/2)
    val = np.where(small, 0.5 * d * d, delta * (ad - 0.5 * delta))
    grad = np.where(small, d, delta * np.sign(d))
    return val.mean(axis=1), grad / k


def _softmax_ce(o: Array, y: Array) -> tuple[Array, Array]:
    lp = log_softmax(o)
    oh = _onehot(y, o.shape[1])
    return -(lp * oh).sum(axis=1), softmax(o) - oh


def _nll(logp: Array, y: Array) -> tuple[Array, Array]:
    oh = _onehot(y, logp.shape[1])
    return -(logp * oh).sum(axis=1), -oh


def _bce(p: Array, t: Array) -> tuple[Array, Array]:
    # PyTorch BCELoss clamps each log at -100; the clamped branch has zero slope.
    k = p.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.log(p)
        l1p = np.log1p(-p)
        glp = np.where(lp > -100.0, 1.0 / p, 0.0)
        gl1p = np.where(l1p > -100.0, -1.0 / (1.0 - p), 0.0)
    val = -(t * np.maximum(lp, -100.0) + (1.0 - t) * np.maximum(l1p, -100.0))
    grad = -(t * glp + (1.0 - t) * gl1p)
    return val.mean(axis=1), grad / k


def _bce_logits(o: Array, t: Array) -> tuple[Array, Array]:
    # softplus(o) - t o, written stably: max(o, 0) - t o + log1p(exp(-|o|))
    k = o.shape[1]
    val = np.maximum(o, 0.0) - t * o + np.log1p(np.exp(-np.abs(o)))
    return val.mean(axis=1), (expit(o) - t) / k


def _hinge(o: Array, t: Array) -> tuple[Array, Array]:
    k = o.shape[1]
    m = 1.0 - t * o
    return np.maximum(m, 0.0).mean(axis=1), np.where(m > 0, -t, 0.0) / k


def _multiclass_hinge(o: Array, y: Array) -> tuple[Array, Array]:
    n, c = o.shape
    yi = np.asarray(y).astype(np.int64).reshape(-1)
    rows = np.arange(n)
    m = 1.0 + o - o[rows, yi][:, None]
    m[rows, yi] = 0.0  # j == y excluded
    active = (m > 0).astype(np.float64)
    grad = active.copy()
    grad[rows, yi] = -active.sum(axis=1)
    return np.maximum(m, 0.0).sum(axis=1), grad


def _kl_div(o: Array, p: Array) -> tuple[Array, Array]:
    # sum_j p_j (log p_j - log_softmax(o)_j); d/do = softmax(o) * sum(p) - p
    lp = log_softmax(o)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    val = (plogp - p * lp).sum(axis=1)
    grad = softmax(o) * p.sum(axis=1, keepdims=True) - p
    return val, grad


LOSSES: dict[str, Callable[..., tuple[Array, Array]]] = {
    "mse": _mse,
    "l1_loss": _l1,
    "huber": _huber,
    "softmax_cross_entropy": _softmax_ce,
    "nll": _nll,
    "bce": _bce,
    "bce_with_logits": _bce_logits,
    "hinge": _hinge,
    "multiclass_hinge": _multiclass_hinge,
    "kl_div": _kl_div,
}

#: Losses whose target is an integer label vector of shape (N,).
LABEL_LOSSES = frozenset({"softmax_cross_entropy", "nll", "multiclass_hinge"})


def loss_value_and_grad(name: str, o: Array, target: Array, **kw: float) -> tuple[Array, Array]:
    """Per-sample loss values (N,) and dL_i/do_i (N, k), written by hand."""
    return LOSSES[name](np.asarray(o, np.float64), np.asarray(target), **kw)


def loss_kink_distance(name: str, o: Array, target: Array, **kw: float) -> float:
    """Smallest distance of the loss argument to a non-differentiable point (inf if none)."""
    o = np.asarray(o, np.float64)
    if name == "l1_loss":
        return float(np.abs(o - target).min())
    if name == "huber":  # C1 there, but its second derivative jumps: keep away anyway
        return float(np.abs(np.abs(o - target) - kw.get("delta", 1.0)).min())
    if name == "hinge":
        return float(np.abs(1.0 - target * o).min())
    if name == "multiclass_hinge":
        yi = np.asarray(target).astype(np.int64).reshape(-1)
        rows = np.arange(o.shape[0])
        m = 1.0 + o - o[rows, yi][:, None]
        m[rows, yi] = np.inf
        return float(np.abs(m).min())
    if name == "bce":  # distance (in log space) from the -100 clamp
        return float(np.minimum(np.log(o) + 100.0, np.log1p(-o) + 100.0).min())
    return math.inf


# ------------------------------------------------------------------ penalties


def penalty_value_and_grad(kind: str, W: Array, coeff: float = 1.0) -> tuple[float, Array]:
    """coeff * sum(W^2) ('l2', no 1/2) or coeff * sum|W| ('l1'), and its gradient."""
    W = np.asarray(W, np.float64)
    if kind == "l2":
        return coeff * float((W * W).sum()), 2.0 * coeff * W
    if kind == "l1":
        return coeff * float(np.abs(W).sum()), coeff * np.sign(W)
    raise ValueError(f"unknown penalty {kind!r}")


# ------------------------------------------------------------------------ MLP


@dataclass
class Cache:
    """Forward-pass record: inputs a^(0..L) and pre-activations z^(1..L)."""

    a: list[Array] = field(default_factory=list)
    z: list[Array] = field(default_factory=list)

    @property
    def out(self) -> Array:
        return self.a[-1]


def mlp_forward(layers: Sequence[Layer], X: Array) -> Cache:
    """z^(l) = a^(l-1) W^T + b, a^(l) = sigma(z^(l)), batched over rows."""
    c = Cache(a=[np.asarray(X, np.float64)])
    for W, b, act in layers:
        z = c.a[-1] @ np.asarray(W, np.float64).T
        if b is not None:
            z = z + np.asarray(b, np.float64)
        c.z.append(z)
        c.a.append(activate(act, z))
    return c


def mlp_backward(
    layers: Sequence[Layer], cache: Cache, dout: Array
) -> tuple[list[tuple[Array, Array | None]], Array]:
    """Delta-rule backprop of ``dout`` = dJ/da^(L) (N, k).

    Returns per-layer (dJ/dW, dJ/db) and dJ/da^(0) (the input's gradient).
    """
    grads: list[tuple[Array, Array | None]] = [None] * len(layers)  # type: ignore[list-item]
    da = dout
    for l in range(len(layers) - 1, -1, -1):
        W, b, act = layers[l]
        delta = activation_vjp(act, cache.z[l], cache.a[l + 1], da)  # error term delta^(l)
        gW = delta.T @ cache.a[l]  # sum_i delta_i a_i^T
        gb = delta.sum(axis=0) if b is not None else None
        grads[l] = (gW, gb)
        da = delta @ np.asarray(W, np.float64)  # (W^(l))^T delta^(l), row form
    return grads, da


def min_kink_distance(layers: Sequence[Layer], cache: Cache) -> float:
    """Smallest |z| over layers whose activation has a kink at 0 (inf if none)."""
    d = math.inf
    for (_, _, act), z in zip(layers, cache.z):
        if split_act(act)[0] in KINKED_ACTIVATIONS:
            d = min(d, float(np.abs(z).min()))
    return d


def value_and_grad(
    layers: Sequence[Layer],
    loss: str,
    X: Array,
    target: Array,
    *,
    loss_kwargs: dict[str, float] | None = None,
    penalties: Sequence[tuple[str, float, int]] = (),
) -> tuple[float, list[tuple[Array, Array | None]]]:
    """J = mean_i loss(mlp(x_i), target_i) + sum coeff * penalty(W^(layer)), and its gradient.

    ``penalties`` entries are (kind, coeff, layer index) acting on that layer's W.
    Returns (J, [(dJ/dW, dJ/db) per layer]).
    """
    cache = mlp_forward(layers, X)
    n = cache.out.shape[0]
    vals, dout = loss_value_and_grad(loss, cache.out, target, **(loss_kwargs or {}))
    J = float(vals.mean())
    grads, _ = mlp_backward(layers, cache, dout / n)
    grads = [(gW.copy(), None if gb is None else gb.copy()) for gW, gb in grads]
    for kind, coeff, li in penalties:
        pv, pg = penalty_value_and_grad(kind, layers[li][0], coeff)
        J += pv
        grads[li][0][...] += pg
    return J, grads


@dataclass
class Head:
    """One output head on top of a shared trunk: its layers, loss and target."""

    layers: Sequence[Layer]
    loss: str
    target: Array
    loss_kwargs: dict[str, float] = field(default_factory=dict)
    weight: float = 1.0


def multihead_value_and_grad(
    trunk: Sequence[Layer], heads: Sequence[Head], X: Array
) -> tuple[float, list[tuple[Array, Array | None]], list[list[tuple[Array, Array | None]]]]:
    """J = mean_i sum_h weight_h * loss_h(head_h(trunk(x_i))).

    The trunk's top activation feeds every head, so its adjoint is the sum of the
    heads' input gradients (a fan-out node).  Returns (J, trunk grads, per-head grads).
    """
    tc = mlp_forward(trunk, X)
    n = tc.out.shape[0]
    J = 0.0
    dtop = np.zeros_like(tc.out)
    head_grads = []
    for h in heads:
        hc = mlp_forward(h.layers, tc.out)
        vals, dout = loss_value_and_grad(h.loss, hc.out, h.target, **h.loss_kwargs)
        J += h.weight * float(vals.mean())
        g, dx = mlp_backward(h.layers, hc, h.weight * dout / n)
        head_grads.append(g)
        dtop += dx
    trunk_grads, _ = mlp_backward(trunk, tc, dtop)
    return J, trunk_grads, head_grads


def multihead_kink_distance(trunk: Sequence[Layer], heads: Sequence[Head], X: Array) -> float:
    """Smallest distance to any kink in a trunk+heads network (activations and losses)."""
    tc = mlp_forward(trunk, X)
    d = min_kink_distance(trunk, tc)
    for h in heads:
        hc = mlp_forward(h.layers, tc.out)
        d = min(d, min_kink_distance(h.layers, hc))
        d = min(d, loss_kink_distance(h.loss, hc.out, h.target, **h.loss_kwargs))
    return d


# ----------------------------------------------------------- special graphs


def two_input_value_and_grad(
    W1: Array, W2: Array, b: Array, act: ActSpec, head: Sequence[Layer],
    loss: str, X1: Array, X2: Array, target: Array,
) -> tuple[float, dict[str, Array], list[tuple[Array, Array | None]]]:
    """h = act(W1 x1 + W2 x2 + b); out = head(h); J = mean loss(out, target).

    Returns (J, {'W1','W2','b'} grads, head grads).  The two inputs meet in one
    pre-activation, so delta is shared: dW1 = delta x1^T, dW2 = delta x2^T.
    """
    z = X1 @ W1.T + X2 @ W2.T + b
    h = activate(act, z)
    hc = mlp_forward(head, h)
    n = X1.shape[0]
    vals, dout = loss_value_and_grad(loss, hc.out, target)
    hg, dh = mlp_backward(head, hc, dout / n)
    delta = activation_vjp(act, z, h, dh)
    return float(vals.mean()), {"W1": delta.T @ X1, "W2": delta.T @ X2, "b": delta.sum(0)}, hg


def shared_weight_value_and_grad(
    W: Array, b1: Array, b2: Array, act: ActSpec, head: Sequence[Layer],
    loss: str, X: Array, target: Array, *, l2: float = 0.0,
) -> tuple[float, dict[str, Array], list[tuple[Array, Array | None]]]:
    """h1 = act(W x + b1); h2 = act(W h1 + b2) (W square, used twice); out = head(h2).

    J = mean loss(out, target) + l2 * sum(W^2).  dJ/dW is the sum of both uses'
    delta a^T plus the penalty's 2 l2 W.  Returns (J, {'W','b1','b2'}, head grads).
    """
    layers: list[Layer] = [(W, b1, act), (W, b2, act), *head]
    J, g = value_and_grad(layers, loss, X, target)
    gW = g[0][0] + g[1][0]
    if l2:
        pv, pg = penalty_value_and_grad("l2", W, l2)
        J += pv
        gW = gW + pg
    return J, {"W": gW, "b1": g[0][1], "b2": g[1][1]}, g[2:]


def activity_penalty_value_and_grad(
    layers: Sequence[Layer], loss: str, X: Array, target: Array, *,
    out_l2: float, penalties: Sequence[tuple[str, float, int]] = (),
) -> tuple[float, list[tuple[Array, Array | None]]]:
    """J = mean_i [loss(o_i, t_i) + out_l2 * sum(o_i^2)] + parameter penalties.

    The output o feeds both the loss and the (per-sample) activity penalty, so
    dJ/do = (dloss/do + 2 out_l2 o) / N.
    """
    cache = mlp_forward(layers, X)
    o = cache.out
    n = o.shape[0]
    vals, dout = loss_value_and_grad(loss, o, target)
    J = float(vals.mean()) + out_l2 * float((o * o).sum(axis=1).mean())
    grads, _ = mlp_backward(layers, cache, (dout + 2.0 * out_l2 * o) / n)
    grads = [(gW.copy(), None if gb is None else gb.copy()) for gW, gb in grads]
    for kind, coeff, li in penalties:
        pv, pg = penalty_value_and_grad(kind, layers[li][0], coeff)
        J += pv
        grads[li][0][...] += pg
    return J, grads


# ---------------------------------------------------- finite-difference check


def central_diff_grad(f: Callable[[], float], arrays: Sequence[Array], h: float = 1e-6) -> list[Array]:
    """Central differences of ``f()`` wrt every entry of each array (perturbed in place)."""
    out = []
    for A in arrays:
        G = np.zeros_like(A, dtype=np.float64)
        it = np.nditer(A, flags=["multi_index"])
        for _ in it:
            i = it.multi_index
            old = A[i]
            A[i] = old + h
            fp = f()
            A[i] = old - h
            fm = f()
            A[i] = old
            G[i] = (fp - fm) / (2.0 * h)
        out.append(G)
    return out
