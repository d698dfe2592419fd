"""symgrad's value_and_grad against an independent hand-written NumPy backprop.

The reference (``reference_numpy.py``) is itself checked against central finite
differences first (pure NumPy, no symgrad), so a disagreement below is a
symgrad bug, not a reference bug.

Tolerances (relative to the magnitude of what is compared):

* float64: |got - ref| <= 1e-10 |ref| + 1e-12 * scale, where ``scale`` is the
  largest |gradient entry| of the model (or |J| for the objective).  Both sides
  compute the same sums in a different order with different but equivalent
  stable formulas, so only a few ulps times a modest condition number may differ
  (observed: <= 1e-13 relative per entry, ~1e-4 of the allowance).
* float32: |got - ref| <= 1e-4 |ref| + 1e-5 * scale against a float64 reference
  evaluated on the same float32-rounded parameters and data: float32 has
  eps ~ 1.2e-7 and each entry accumulates ~10-100 rounded operations
  (observed: <= 6e-6 relative per entry, < 1% of the allowance).

Non-differentiable points (relu/leaky_relu/elu at 0, |o - t| for l1, |o - t| =
delta for huber, hinge margins) are kept >= 1e-6 (float64) / 1e-3 (float32)
away from every pre-activation/loss argument by redrawing the data.

Compiled models are few and tiny (9 value_and_grad kernels, plus one loss and
one predict kernel; Numba compile time dominates the file): one model
holds several independent branches (one per activation) or several heads on a
shared trunk (one per loss); the loss is their sum, so each branch's or head's
own parameters isolate that activation's or loss's gradient, and a separate
test per model checks the objective and the shared trunk.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

import symgrad as sg

try:
    from . import reference_numpy as R
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    import reference_numpy as R

N = 13  # batch size: odd, so batch chunks are uneven

F64 = {"rtol": 1e-10, "atol": 1e-12, "margin": 1e-6}
F32 = {"rtol": 1e-4, "atol": 1e-5, "margin": 1e-3}
TOL = {np.float64: F64, np.float32: F32}

ACTS: list[R.ActSpec] = [
    "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu", "silu", "swish", "identity",
    ("leaky_relu", (("alpha", 0.2),)), ("elu", (("alpha", 0.5),)),  # hashable: specs key a cache
]


def act_id(a: R.ActSpec) -> str:
    name, kw = R.split_act(a)
    return name + "".join(f"-{k}{v}" for k, v in kw.items())


def sg_act(a: R.ActSpec) -> Callable[[Any], Any]:
    """The symgrad activation for a reference spec (defaults left to symgrad)."""
    name, kw = R.split_act(a)
    fn = getattr(sg, name)
    return (lambda z: fn(z, **kw)) if kw else fn


# ----------------------------------------------------------------- comparison


class Mismatches:
    """Collects every mismatch of a test so one failure reports all of them."""

    def __init__(self, tol: dict[str, float]) -> None:
        self.tol = tol
        self.errors: list[str] = []
        self.compared = 0

    def check(self, what: str, got: Any, ref: Any, scale: float) -> None:
        got = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        self.compared += ref.size
        if got.shape != ref.shape:
            self.errors.append(f"{what}: shape {got.shape} != reference {ref.shape}")
            return
        err = np.abs(got - ref)
        bad = ~(err <= self.tol["rtol"] * np.abs(ref) + self.tol["atol"] * scale)  # NaN counts as bad
        if bad.any():
            i = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -1.0))), ref.shape)
            self.errors.append(
                f"{what}: {int(bad.sum())}/{ref.size} entries off; worst at {tuple(map(int, i))}: "
                f"got {float(got[i])!r}, reference {float(ref[i])!r} (abs err {err[i]:.3e}, scale {scale:.3e})")

    def done(self) -> None:
        assert self.compared > 0, "nothing was compared"
        assert not self.errors, "symgrad disagrees with the NumPy reference:\n" + "\n".join(self.errors)


def grad_scale(grads: dict[str, np.ndarray]) -> float:
    s = max(float(np.abs(g).max()) for g in grads.values())
    assert s > 1e-3, f"degenerate test: largest reference gradient entry is only {s:.2e}"
    return s


# ------------------------------------------------------------ network specs


@dataclass(frozen=True)
class HeadSpec:
    """A dense output head: ``loss(dense(h, n, act, name=name), <tname>)``.

    Two HeadSpecs of one branch with the same ``name`` share the dense layer:
    its output then feeds both losses.
    """

    name: str
    n: int
    act: R.ActSpec
    loss: str
    target: str  # kind of target data: real | prob | pm1 | simplex | labels
    tname: str  # the sg.target / sg.labels leaf it reads (heads may share one)
    loss_kwargs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Branch:
    """x -> named dense trunk layers -> several heads (a fan-out: the trunk's adjoint sums)."""

    trunk: tuple[tuple[str, int, R.ActSpec], ...]
    heads: tuple[HeadSpec, ...]

    @property
    def param_names(self) -> list[str]:
        layers = dict.fromkeys([t[0] for t in self.trunk] + [h.name for h in self.heads])
        return [f"{nm}.{p}" for nm in layers for p in ("W", "b")]


@dataclass(frozen=True)
class NetSpec:
    """Independent branches reading the same input x; the loss is the sum of all heads' losses.

    The gradient of a branch's parameters depends on that branch only, so one
    compiled model checks several activations/losses with per-branch diagnostics.
    """

    in_dim: int
    branches: tuple[Branch, ...]


def build_model(spec: NetSpec, dtype: type) -> Any:
    """Build ``spec`` with the symgrad DSL (explicitly named sg.dense layers) and compile it."""
    x = sg.input("x", spec.in_dim)
    leaves: dict[str, Any] = {}
    for br in spec.branches:
        for h in br.heads:
            if h.tname not in leaves:
                leaves[h.tname] = sg.labels(h.tname, h.n) if h.target == "labels" else sg.target(h.tname, h.n)
    loss = first_out = None
    for br in spec.branches:
        a = x
        for name, n, act in br.trunk:
            a = sg.dense(a, n, activation=sg_act(act), name=name)
        outs: dict[str, Any] = {}
        for h in br.heads:
            if h.name not in outs:
                outs[h.name] = sg.dense(a, h.n, activation=sg_act(h.act), name=h.name)
            out = outs[h.name]
            first_out = out if first_out is None else first_out
            term = getattr(sg, h.loss)(out, leaves[h.tname], **dict(h.loss_kwargs))
            loss = term if loss is None else loss + term
    return sg.compile(loss, output=first_out, dtype=dtype)


def draw_target(kind: str, n: int, rng: np.random.Generator, rows: int = N) -> np.ndarray:
    if kind == "real":
        return rng.normal(0.0, 1.5, (rows, n))
    if kind == "prob":
        return rng.uniform(0.0, 1.0, (rows, n))
    if kind == "pm1":
        return rng.choice([-1.0, 1.0], (rows, n))
    if kind == "simplex":
        p = rng.uniform(0.05, 1.0, (rows, n))
        return p / p.sum(axis=1, keepdims=True)
    if kind == "labels":
        return rng.integers(0, n, rows)
    raise ValueError(kind)


def set_params(model: Any, dtype: type, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """model.init, then random nonzero biases written through unflatten's views.

    Zero biases would hide bias bugs and put dead relu units exactly on the kink.
    Returns theta and float64 copies of the parameters for the reference.
    """
    theta = model.init(seed=seed)
    assert isinstance(theta, np.ndarray) and theta.dtype == dtype and theta.ndim == 1
    P = model.unflatten(theta)
    rng = np.random.default_rng(1000 + seed)
    for v in P.values():
        if v.ndim == 1:
            v[...] = rng.normal(0.0, 0.5, v.shape)
    P2 = model.unflatten(theta)
    for name, v in P.items():
        assert np.array_equal(P2[name], v), f"unflatten(theta)[{name!r}] is not a view of theta"
    return theta, {k: np.array(v, dtype=np.float64) for k, v in P2.items()}


def reference_branches(spec: NetSpec, P: dict[str, np.ndarray], data: dict[str, np.ndarray]
                       ) -> list[tuple[list[R.Layer], list[R.Head]]]:
    out = []
    for br in spec.branches:
        trunk = [(P[f"{nm}.W"], P[f"{nm}.b"], act) for nm, _, act in br.trunk]
        heads = [R.Head([(P[f"{h.name}.W"], P[f"{h.name}.b"], h.act)], h.loss,
                        np.asarray(data[h.tname]) if h.target == "labels" else np.asarray(data[h.tname], np.float64),
                        dict(h.loss_kwargs)) for h in br.heads]
        out.append((trunk, heads))
    return out


def draw_data(spec: NetSpec, P: dict[str, np.ndarray], dtype: type, margin: float, seed: int
              ) -> dict[str, np.ndarray]:
    """Data (reals cast to ``dtype``) with every kink argument >= ``margin`` from its kink."""
    for attempt in range(100):
        rng = np.random.default_rng(seed * 1000 + attempt)
        data: dict[str, np.ndarray] = {"x": rng.normal(0.0, 1.5, (N, spec.in_dim)).astype(dtype)}
        for br in spec.branches:
            for h in br.heads:
                if h.tname not in data:
                    t = draw_target(h.target, h.n, rng)
                    data[h.tname] = t if h.target == "labels" else t.astype(dtype)
        X = data["x"].astype(np.float64)
        if all(R.multihead_kink_distance(trunk, heads, X) >= margin
               for trunk, heads in reference_branches(spec, P, data)):
            return data
    raise AssertionError("could not draw data away from the kinks")


@dataclass
class Run:
    """One compiled model, its value_and_grad on drawn data, and the reference's answer."""

    spec: NetSpec
    dtype: type
    model: Any
    theta: np.ndarray
    data: dict[str, np.ndarray]
    J: float
    G: dict[str, np.ndarray]
    Jr: float
    ref: dict[str, np.ndarray]
    scale: float
    nets: list[tuple[list[R.Layer], list[R.Head]]]


def _run(spec: NetSpec, dtype: type, seed: int) -> Run:
    model = build_model(spec, dtype)
    theta, P = set_params(model, dtype, seed)
    data = draw_data(spec, P, dtype, TOL[dtype]["margin"], seed)
    J, g = model.value_and_grad(theta, **data)
    g = np.asarray(g)
    assert g.shape == theta.shape and g.dtype == dtype, f"grad {g.shape} {g.dtype} vs theta {theta.shape} {dtype}"
    nets = reference_branches(spec, P, data)
    X = data["x"].astype(np.float64)
    Jr, ref = 0.0, {}
    for br, (trunk, heads) in zip(spec.branches, nets):
        Jb, tg, hg = R.multihead_value_and_grad(trunk, heads, X)
        Jr += Jb
        for (nm, _, _), (gW, gb) in zip(br.trunk, tg):
            ref[f"{nm}.W"], ref[f"{nm}.b"] = gW, gb
        for h, gh in zip(br.heads, hg):  # a layer feeding two losses gets both adjoints
            for key, gv in zip((f"{h.name}.W", f"{h.name}.b"), gh[0]):
                ref[key] = ref[key] + gv if key in ref else gv
    assert sorted(model.param_names) == sorted(ref), (model.param_names, sorted(ref))
    G = {k: np.array(v, dtype=np.float64) for k, v in model.unflatten(g).items()}
    return Run(spec, dtype, model, theta, data, float(J), G, Jr, ref, grad_scale(ref), nets)


_RUNS: dict[tuple[NetSpec, type, int], Run | BaseException] = {}


def run_net(spec: NetSpec, dtype: type = np.float64, seed: int = 0) -> Run:
    """Compile + run once per (spec, dtype, seed); several tests share it (a failure too)."""
    key = (spec, dtype, seed)
    if key not in _RUNS:
        try:
            _RUNS[key] = _run(spec, dtype, seed)
        except Exception as e:  # noqa: BLE001 - re-raised to every test that shares the model
            _RUNS[key] = e
    r = _RUNS[key]
    if isinstance(r, BaseException):
        raise r
    return r


def compare(run: Run, names: list[str], *, objective: bool) -> None:
    """J (if ``objective``) and the gradients of ``names`` against the reference."""
    m = Mismatches(TOL[run.dtype])
    if objective:
        m.check("J", run.J, run.Jr, abs(run.Jr))
    for name in names:
        m.check(f"dJ/d[{name}]", run.G[name], run.ref[name], run.scale)
    m.done()


# ------------------------------------------------------- reference self-checks


def _fd_check(f: Callable[[], float], arrays: list[np.ndarray], analytic: list[np.ndarray]) -> None:
    fd = R.central_diff_grad(f, arrays, h=1e-6)
    scale = max(float(np.abs(a).max()) for a in fd)
    assert scale > 1e-3
    for k, (a, d) in enumerate(zip(analytic, fd)):
        np.testing.assert_allclose(a, d, rtol=1e-6, atol=1e-7 * scale, err_msg=f"array {k}")


def _rand_layers(rng: np.random.Generator, dims: list[int], acts: list[R.ActSpec]) -> list[R.Layer]:
    return [(rng.normal(0.0, 0.7, (o, i)), rng.normal(0.0, 0.5, o), a)
            for i, o, a in zip(dims[:-1], dims[1:], acts)]


@pytest.mark.parametrize("act", ACTS, ids=act_id)
def test_reference_activation_backprop_matches_finite_differences(act: R.ActSpec) -> None:
    rng = np.random.default_rng(1)
    layers = _rand_layers(rng, [3, 4, 4, 2], [act, act, "identity"])
    X, T = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    assert R.min_kink_distance(layers, R.mlp_forward(layers, X)) > 1e-4
    pen = [("l2", 0.03, 0), ("l1", 0.02, 1)]
    _, g = R.value_and_grad(layers, "mse", X, T, penalties=pen)
    arrays = [a for W, b, _ in layers for a in (W, b)]
    _fd_check(lambda: R.value_and_grad(layers, "mse", X, T, penalties=pen)[0], arrays,
              [a for gW, gb in g for a in (gW, gb)])
    z = np.linspace(-3.0, 3.0, 61) + 0.013  # off the kink at 0
    d = (R.activate(act, z + 1e-6) - R.activate(act, z - 1e-6)) / 2e-6
    np.testing.assert_allclose(R.activation_derivative(act, z), d, rtol=1e-7, atol=1e-9)


LOSS_CASES: list[tuple[str, R.ActSpec, str, dict[str, float]]] = [
    ("mse", "identity", "real", {}), ("l1_loss", "identity", "real", {}),
    ("huber", "identity", "real", {}), ("huber", "identity", "real", {"delta": 0.5}),
    ("bce", "sigmoid", "prob", {}), ("bce_with_logits", "identity", "prob", {}),
    ("hinge", "identity", "pm1", {}), ("softmax_cross_entropy", "identity", "labels", {}),
    ("nll", "log_softmax", "labels", {}), ("multiclass_hinge", "identity", "labels", {}),
    ("kl_div", "identity", "simplex", {}), ("mse", "softmax", "real", {}),
]


@pytest.mark.parametrize("loss,out_act,tkind,kw", LOSS_CASES,
                         ids=[f"{c[0]}-{act_id(c[1])}{'-' + str(c[3]) if c[3] else ''}" for c in LOSS_CASES])
def test_reference_loss_backprop_matches_finite_differences(
        loss: str, out_act: R.ActSpec, tkind: str, kw: dict[str, float]) -> None:
    rng = np.random.default_rng(2)
    layers = _rand_layers(rng, [3, 4, 3], ["tanh", out_act])
    X = rng.normal(0.0, 1.5, size=(7, 3))
    T = draw_target(tkind, 3, rng, rows=7)
    c = R.mlp_forward(layers, X)
    assert R.loss_kink_distance(loss, c.out, T, **kw) > 1e-4
    _, g = R.value_and_grad(layers, loss, X, T, loss_kwargs=kw)
    arrays = [a for W, b, _ in layers for a in (W, b)]
    _fd_check(lambda: R.value_and_grad(layers, loss, X, T, loss_kwargs=kw)[0], arrays,
              [a for gW, gb in g for a in (gW, gb)])


def test_reference_special_graphs_match_finite_differences() -> None:
    rng = np.random.default_rng(3)
    head = _rand_layers(rng, [4, 2], ["identity"])
    T = rng.normal(size=(6, 2))
    W1, W2, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 2)), rng.normal(size=4)
    X1, X2 = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    _, g, hg = R.two_input_value_and_grad(W1, W2, b, "silu", head, "mse", X1, X2, T)
    _fd_check(lambda: R.two_input_value_and_grad(W1, W2, b, "silu", head, "mse", X1, X2, T)[0],
              [W1, W2, b, head[0][0], head[0][1]], [g["W1"], g["W2"], g["b"], *hg[0]])
    W, b1, b2, X = 0.6 * rng.normal(size=(4, 4)), rng.normal(size=4), rng.normal(size=4), rng.normal(size=(6, 4))
    _, g, hg = R.shared_weight_value_and_grad(W, b1, b2, "tanh", head, "mse", X, T, l2=0.05)
    _fd_check(lambda: R.shared_weight_value_and_grad(W, b1, b2, "tanh", head, "mse", X, T, l2=0.05)[0],
              [W, b1, b2, head[0][0], head[0][1]], [g["W"], g["b1"], g["b2"], *hg[0]])
    layers = _rand_layers(rng, [3, 4, 2], ["tanh", "identity"])
    X = rng.normal(size=(6, 3))
    pen = [("l2", 0.01, 1), ("l1", 0.02, 0)]
    _, g = R.activity_penalty_value_and_grad(layers, "mse", X, T, out_l2=0.1, penalties=pen)
    _fd_check(lambda: R.activity_penalty_value_and_grad(layers, "mse", X, T, out_l2=0.1, penalties=pen)[0],
              [a for W, b, _ in layers for a in (W, b)], [a for gW, gb in g for a in (gW, gb)])
    trunk = _rand_layers(rng, [3, 4], ["gelu"])
    heads = [R.Head(_rand_layers(rng, [4, 2], ["identity"]), "mse", T),
             R.Head(_rand_layers(rng, [4, 3], ["log_softmax"]), "nll", rng.integers(0, 3, 6), weight=0.7)]
    _, tg, hgs = R.multihead_value_and_grad(trunk, heads, X)
    arrays = [a for L in [trunk, *(h.layers for h in heads)] for W, b, _ in L for a in (W, b)]
    analytic = [a for G in [tg, *hgs] for gW, gb in G for a in (gW, gb)]
    _fd_check(lambda: R.multihead_value_and_grad(trunk, heads, X)[0], arrays, analytic)


def test_reference_loss_values_follow_the_conventions() -> None:
    """Hand-computed values pin the PyTorch conventions (means over features, no 1/2 in l2)."""
    o, t = np.array([[1.0, -2.0]]), np.array([[0.0, 0.5]])
    val = lambda name, o, t, **kw: float(R.loss_value_and_grad(name, o, t, **kw)[0][0])  # noqa: E731
    assert val("mse", o, t) == pytest.approx((1.0 + 6.25) / 2)
    assert val("l1_loss", o, t) == pytest.approx((1.0 + 2.5) / 2)
    assert val("huber", o, t) == pytest.approx((0.5 + (2.5 - 0.5)) / 2)
    assert val("huber", o, t, delta=2.0) == pytest.approx((0.5 + 2.0 * (2.5 - 1.0)) / 2)
    assert val("hinge", o, np.array([[1.0, -1.0]])) == pytest.approx((0.0 + 0.0) / 2 + 0.0)
    assert val("hinge", np.array([[0.25, 0.5]]), np.array([[1.0, -1.0]])) == pytest.approx((0.75 + 1.5) / 2)
    z = np.array([[1.0, 2.0, 0.5]])
    lse = math.log(math.e + math.e ** 2 + math.e ** 0.5)
    assert val("softmax_cross_entropy", z, np.array([2])) == pytest.approx(lse - 0.5)
    assert val("nll", R.log_softmax(z), np.array([0])) == pytest.approx(lse - 1.0)
    assert val("multiclass_hinge", z, np.array([0])) == pytest.approx(max(0, 1 + 2 - 1) + max(0, 1 + 0.5 - 1))
    p = np.array([[0.2, 0.5, 0.3]])
    kl = sum(pj * (math.log(pj) - (zj - lse)) for pj, zj in zip(p[0], z[0]))
    assert val("kl_div", z, p) == pytest.approx(kl)
    q, tt = np.array([[0.9, 0.2]]), np.array([[1.0, 0.0]])
    assert val("bce", q, tt) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert val("bce", np.array([[0.0]]), np.array([[1.0]])) == pytest.approx(100.0)  # log clamped at -100
    assert val("bce_with_logits", np.array([[0.3]]), np.array([[0.25]])) == pytest.approx(
        -(0.25 * math.log(1 / (1 + math.exp(-0.3))) + 0.75 * math.log(1 - 1 / (1 + math.exp(-0.3)))))
    assert R.penalty_value_and_grad("l2", np.array([[1.0, -2.0]]), 0.5)[0] == pytest.approx(2.5)
    assert R.penalty_value_and_grad("l1", np.array([[1.0, -2.0]]), 0.5)[0] == pytest.approx(1.5)
    assert float(R.activate("leaky_relu", np.array(-1.0))) == pytest.approx(-0.01)
    assert float(R.activate("elu", np.array(-1.0))) == pytest.approx(math.exp(-1.0) - 1.0)
    assert float(R.activate("gelu", np.array(1.0))) == pytest.approx(0.8413447460685429)


# --------------------------------------------------------- symgrad vs reference


def _ident(a: R.ActSpec) -> str:
    return re.sub(r"\W", "_", act_id(a))


def act_branch(a: R.ActSpec) -> Branch:
    """x(3) -> 4 act -> 4 act -> o(3) feeding mse(o, t) + softmax_cross_entropy(o, y).

    Two hidden layers of the activation, so sigma' enters the delta rule twice.
    """
    p = _ident(a)
    return Branch(((f"{p}_h1", 4, a), (f"{p}_h2", 4, a)),
                  (HeadSpec(f"{p}_out", 3, "identity", "mse", "real", "t"),
                   HeadSpec(f"{p}_out", 3, "identity", "softmax_cross_entropy", "labels", "y")))


#: Activations sharing one compiled model (one branch each); kinked ones together.
ACT_GROUPS: dict[str, tuple[R.ActSpec, ...]] = {
    "smooth": ("sigmoid", "tanh", "softplus"),
    "kinked": ("relu", "leaky_relu", "elu", ("leaky_relu", (("alpha", 0.2),)), ("elu", (("alpha", 0.5),))),
    "gated": ("gelu", "silu", "swish", "identity"),
}
ACT_SPECS = {g: NetSpec(3, tuple(act_branch(a) for a in acts)) for g, acts in ACT_GROUPS.items()}
ACT_GROUP_OF = {act_id(a): g for g, acts in ACT_GROUPS.items() for a in acts}
assert sorted(ACT_GROUP_OF) == sorted(map(act_id, ACTS))


@pytest.mark.parametrize("act", ACTS, ids=act_id)
def test_activation_gradients_match_reference(act: R.ActSpec) -> None:
    """Every activation x (mse, softmax_cross_entropy): its branch's W/b gradients."""
    spec = ACT_SPECS[ACT_GROUP_OF[act_id(act)]]
    run = run_net(spec)
    br = spec.branches[[b.trunk[0][2] for b in spec.branches].index(act)]
    compare(run, br.param_names, objective=False)
    if R.split_act(act)[0] in R.KINKED_ACTIVATIONS:  # both sides of the kink must be exercised
        trunk, _ = run.nets[spec.branches.index(br)]
        c = R.mlp_forward(trunk, run.data["x"].astype(np.float64))
        assert all((z > 0).any() and (z < 0).any() for z in c.z), "data never crosses the kink"


@pytest.mark.parametrize("group", list(ACT_GROUPS))
def test_activation_models_objective_matches_reference(group: str) -> None:
    """The objective (mean over samples of the summed losses) and every gradient of the group's model."""
    run = run_net(ACT_SPECS[group])
    compare(run, list(run.model.param_names), objective=True)


LOSS_HEADS: tuple[HeadSpec, ...] = (
    HeadSpec("mse", 2, "identity", "mse", "real", "t_mse"),
    HeadSpec("l1", 2, "identity", "l1_loss", "real", "t_l1"),
    HeadSpec("huber", 2, "identity", "huber", "real", "t_huber"),
    HeadSpec("huber_half", 2, "identity", "huber", "real", "t_huber_half", (("delta", 0.5),)),
    HeadSpec("bce", 3, "sigmoid", "bce", "prob", "t_bce"),
    HeadSpec("bcel", 3, "identity", "bce_with_logits", "prob", "t_bcel"),
    HeadSpec("hinge", 3, "identity", "hinge", "pm1", "t_hinge"),
    HeadSpec("ce", 3, "identity", "softmax_cross_entropy", "labels", "y"),
    HeadSpec("nll", 3, "log_softmax", "nll", "labels", "y"),
    HeadSpec("svm", 3, "identity", "multiclass_hinge", "labels", "y"),
    HeadSpec("kl", 3, "identity", "kl_div", "simplex", "t_kl"),
)
#: Every loss with a suitable output activation, as heads on one shared tanh trunk.
LOSS_SPEC = NetSpec(3, (Branch((("trunk", 5, "tanh"),), LOSS_HEADS),))


@pytest.mark.parametrize("head", LOSS_HEADS, ids=lambda h: h.name)
def test_loss_gradients_match_reference(head: HeadSpec) -> None:
    """Each loss's head gradients (they depend on that loss only) on the shared-trunk model."""
    run = run_net(LOSS_SPEC)
    compare(run, [f"{head.name}.W", f"{head.name}.b"], objective=False)
    # the data must exercise both branches of each piecewise loss
    (trunk, heads), = run.nets
    h = heads[LOSS_HEADS.index(head)]
    o = R.mlp_forward(h.layers, R.mlp_forward(trunk, run.data["x"].astype(np.float64)).out).out
    if h.loss == "huber":
        d = np.abs(o - h.target)
        delta = h.loss_kwargs.get("delta", 1.0)
        assert (d < delta).any() and (d > delta).any()
    elif h.loss == "hinge":
        assert ((1 - h.target * o) > 0).any() and ((1 - h.target * o) < 0).any()
    elif h.loss == "multiclass_hinge":
        m = 1 + o - o[np.arange(N), h.target][:, None]
        m[np.arange(N), h.target] = 0.5
        assert (m > 0.5).any() and (m < 0).any()


def test_losses_objective_matches_reference() -> None:
    """The summed objective and the shared trunk's gradient (adjoints of all eleven heads summed)."""
    run = run_net(LOSS_SPEC)
    compare(run, list(run.model.param_names), objective=True)


#: float32: one chain through every distinct activation (swish is silu; alphas are checked in float64).
F32_CHAIN = Branch(tuple((f"c{i}", 4, a) for i, a in enumerate(
    ["tanh", "relu", "sigmoid", "leaky_relu", "softplus", "elu", "gelu", "silu", "identity"])),
    (HeadSpec("out", 3, "identity", "mse", "real", "t"),
     HeadSpec("out", 3, "identity", "softmax_cross_entropy", "labels", "y")))
F32_SPECS = {"activations": NetSpec(3, (F32_CHAIN,)), "losses": LOSS_SPEC}


@pytest.mark.slow   # 26 s of compiling; float32 is checked by default in test_model and test_derived
@pytest.mark.parametrize("which", list(F32_SPECS))
def test_float32_matches_reference(which: str) -> None:
    """float32 kernels vs the float64 reference on the same rounded inputs (rtol 1e-4, atol 1e-5*scale)."""
    run = run_net(F32_SPECS[which], np.float32, seed=1)
    compare(run, list(run.model.param_names), objective=True)


def test_two_input_graph_matches_reference() -> None:
    """h = silu(W1 x1 + W2 x2 + b); out = dense(h, 2); mse.  Data by name and by position."""
    x1 = sg.input("x1", 3)
    t = sg.target("t", 2)  # declared between the inputs: data_names still lists inputs first
    x2 = sg.input("x2", 2)
    W1, W2 = sg.param("W1", (4, 3), init="glorot_uniform"), sg.param("W2", (4, 2), init="glorot_uniform")
    b = sg.param("b", 4, init="zeros")
    h = sg.silu(W1 @ x1 + W2 @ x2 + b)
    out = sg.dense(h, 2, activation=sg.identity, name="out")
    model = sg.compile(sg.mse(out, t), output=out)
    assert tuple(model.data_names) == ("x1", "x2", "t")
    theta, P = set_params(model, np.float64, seed=0)
    rng = np.random.default_rng(5)
    X1, X2, T = rng.normal(size=(N, 3)), rng.normal(size=(N, 2)), rng.normal(size=(N, 2))
    J, g = model.value_and_grad(theta, x1=X1, x2=X2, t=T)
    head = [(P["out.W"], P["out.b"], "identity")]
    Jr, gr, hg = R.two_input_value_and_grad(P["W1"], P["W2"], P["b"], "silu", head, "mse", X1, X2, T)
    ref = {**gr, "out.W": hg[0][0], "out.b": hg[0][1]}
    G = model.unflatten(np.asarray(g))
    m = Mismatches(F64)
    m.check("J", J, Jr, abs(Jr))
    scale = grad_scale(ref)
    for name in model.param_names:
        m.check(f"dJ/d[{name}]", G[name], ref[name], scale)
    J2, g2 = model.value_and_grad(theta, X1, X2, T)
    m.check("J (positional data)", J2, Jr, abs(Jr))
    m.check("grad (positional data)", g2, g, grad_scale(ref))
    m.done()


def test_weight_sharing_matches_reference() -> None:
    """The same W (4, 4) in two layers and in an L2 penalty: its gradient sums all three uses."""
    x, t = sg.input("x", 4), sg.target("t", 2)
    W = sg.param("W", (4, 4), init="glorot_uniform")
    b1, b2 = sg.param("b1", 4), sg.param("b2", 4)
    h2 = sg.tanh(W @ sg.tanh(W @ x + b1) + b2)
    out = sg.dense(h2, 2, activation=sg.identity, name="out")
    model = sg.compile(sg.mse(out, t) + 0.05 * sg.l2(W), output=out)
    assert tuple(model.param_names) == ("W", "b1", "b2", "out.W", "out.b")
    theta, P = set_params(model, np.float64, seed=0)
    rng = np.random.default_rng(6)
    X, T = rng.normal(size=(N, 4)), rng.normal(size=(N, 2))
    J, g = model.value_and_grad(theta, x=X, t=T)
    head = [(P["out.W"], P["out.b"], "identity")]
    Jr, gr, hg = R.shared_weight_value_and_grad(P["W"], P["b1"], P["b2"], "tanh", head, "mse", X, T, l2=0.05)
    ref = {**gr, "out.W": hg[0][0], "out.b": hg[0][1]}
    G = model.unflatten(np.asarray(g))
    m = Mismatches(F64)
    m.check("J", J, Jr, abs(Jr))
    scale = grad_scale(ref)
    for name in model.param_names:
        m.check(f"dJ/d[{name}]", G[name], ref[name], scale)
    m.done()


def test_output_feeding_loss_and_penalty_matches_reference() -> None:
    """o feeds mse and an activity penalty 0.1*l2(o); plus l2(W2) and l1(W1) parameter penalties.

    Also checks loss/grad/predict against the same reference.
    """
    x, t = sg.input("x", 3), sg.target("t", 2)
    W1, b1 = sg.param("W1", (4, 3), init="glorot_uniform"), sg.param("b1", 4, init="zeros")
    W2, b2 = sg.param("W2", (2, 4), init="glorot_uniform"), sg.param("b2", 2, init="zeros")
    o = W2 @ sg.relu(W1 @ x + b1) + b2
    loss = sg.mse(o, t) + 0.1 * sg.l2(o) + 0.01 * sg.l2(W2) + 0.02 * sg.l1(W1)
    model = sg.compile(loss, output=o)
    theta, P = set_params(model, np.float64, seed=0)
    layers = [(P["W1"], P["b1"], "relu"), (P["W2"], P["b2"], "identity")]
    for attempt in range(100):
        rng = np.random.default_rng(700 + attempt)
        X, T = rng.normal(0.0, 1.5, size=(N, 3)), rng.normal(size=(N, 2))
        if R.min_kink_distance(layers, R.mlp_forward(layers, X)) > F64["margin"]:
            break
    else:
        raise AssertionError("could not draw data away from the relu kink")
    assert np.abs(P["W1"]).min() > F64["margin"]  # l1's kink
    pen = [("l2", 0.01, 1), ("l1", 0.02, 0)]
    Jr, gr = R.activity_penalty_value_and_grad(layers, "mse", X, T, out_l2=0.1, penalties=pen)
    ref = {"W1": gr[0][0], "b1": gr[0][1], "W2": gr[1][0], "b2": gr[1][1]}
    m = Mismatches(F64)
    scale = grad_scale(ref)
    J, g = model.value_and_grad(theta, X, T)
    G = model.unflatten(np.asarray(g))
    m.check("J", J, Jr, abs(Jr))
    for name in model.param_names:
        m.check(f"dJ/d[{name}]", G[name], ref[name], scale)
    m.check("model.loss", model.loss(theta, X, T), Jr, abs(Jr))
    m.check("model.grad", model.grad(theta, X, T), g, scale)
    m.check("model.predict", model.predict(theta, X), R.mlp_forward(layers, X).out, 1.0)
    m.done()
