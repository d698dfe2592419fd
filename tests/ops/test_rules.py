"""Each op family's rules on tiny programs, with no Numba: the NumPy interpreter
(symgrad.interpret) evaluates the forward program, the gradient program (vjp rules), the tangents
(jvp rules) and the Hessian-vector product (jvp over vjp), and central differences of the forward
program check them."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad.autodiff import jvp
from symgrad.derived import curvature, gradient, linearity
from symgrad.interpret import run
from symgrad.ir import Builder, IRError
from symgrad.ops import Einsum, Elementwise, ScalarFn, einsum, elementwise, leaf
from symgrad.program import build_forward


def _args(fwd, theta, data):
    out = dict(data)
    for name, shape, off, _ in fwd.signature.params:
        size = int(np.prod(shape)) if shape else 1
        out[name] = theta[off:off + size].reshape(shape)
    return out


def _flat(fwd, res, prefix):
    return np.concatenate([np.ravel(res[f"{prefix}:{name}"] * np.ones(shape))
                           for name, shape, _, _ in fwd.signature.params])


def check_rules(loss, data, n, seed=0):
    """Gradient, tangent and HVP of ``loss``'s objective against central differences."""
    fwd = build_forward(loss)
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=fwd.signature.size)
    v = rng.normal(size=theta.size)
    f = lambda t: float(run(fwd.program, _args(fwd, t, data), n)["objective"])   # noqa: E731
    adj = gradient(fwd.program)
    g = _flat(fwd, run(adj.program, _args(fwd, theta, data), n), "grad")
    h = 1e-6
    fd = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(theta.size)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    # jvp of the forward program: the objective's tangent is g . v (a tangent leaf has its
    # parameter's label, so it gets v's values under that label)
    b = Builder()
    for a in fwd.program.body:
        b.adopt(a)
    dot = jvp(fwd.program.body, b)
    primal, tangent = _args(fwd, theta, data), _args(fwd, v, {})
    tangent_prog = b.program((("t", dot[fwd.program.output("objective").name]),))
    assert float(run(tangent_prog, primal, n, tangent)["t"]) == pytest.approx(g @ v, rel=1e-9, abs=1e-12)
    # forward over reverse: Hv against differences of the gradient
    cur = curvature(fwd.program, adj).program
    hv = _flat(fwd, run(cur, primal, n, tangent), "hv")
    gp = _flat(fwd, run(adj.program, _args(fwd, theta + h * v, data), n), "grad")
    gm = _flat(fwd, run(adj.program, _args(fwd, theta - h * v, data), n), "grad")
    np.testing.assert_allclose(hv, (gp - gm) / (2 * h), rtol=1e-5, atol=1e-7)
    return fwd


RNG = np.random.default_rng(1)
X = RNG.normal(size=(5, 3))
T = RNG.normal(size=(5, 2))
Y = np.array([0, 1, 2, 1, 0])


def test_elementwise_rules():
    x, t = sg.input("x", 3), sg.target("t", 2)
    w, c = sg.param("w", 3), sg.param("c", ())
    u = sg.tanh(w * x) + sg.sigmoid(c) * x ** 2 + sg.softplus(x - c)
    loss = sg.sum(sg.elementwise("mix", lambda a, b: a * sp.exp(-b ** 2))(u, w)) + sg.sum(t) * c ** 2
    check_rules(loss, {"x": X, "t": T}, 5)


def test_einsum_rules():
    x, t = sg.input("x", 3), sg.target("t", 2)
    W, V = sg.param("W", (2, 3)), sg.param("V", (2, 2))
    o = V @ sg.tanh(W @ x)                       # products of parameters and data
    loss = sg.mse(o, t) + sg.dot(o, o) * 0.1 + 0.01 * sg.l2(V @ V)   # bilinear and parameter-only terms
    check_rules(loss, {"x": X, "t": T}, 5)


def test_index_rules():
    x, y = sg.input("x", 3), sg.labels("y", 3)
    W = sg.param("W", (3, 3))
    o = sg.tanh(W @ x)
    loss = sg.softmax_cross_entropy(o, y) + sg.max(o) + 0.3 * sg.sum(sg.one_hot(y) * o ** 2)
    check_rules(loss, {"x": X, "y": Y}, 5)


def test_index_map_rules():
    """Slices, an int index, a transpose, padding, a reshape (scatter then map) and strided,
    dilated, padded windows: the map's vjp (its scatter), jvp, and the scatter's own rules."""
    from symgrad import convolution as conv, indexing
    x = sg.input("x", (2, 6))
    w = sg.param("w", (2, 6))
    h = sg.tanh(w * x)
    parts = [h[1, ::2], h[:, 4].T, indexing.pad(h, ((0, 1), (2, 0)), value=0.3)[2],
             indexing.reshape(h, (3, 4))[1:, 0], indexing.concat([h[0, :2], h[1, -2:]])]
    k = sg.param("k", (3, 2, 3))
    c = conv.conv(h, k, stride=2, padding=2, dilation=2)
    pooled = conv.avg_pool1d(h, 3, stride=2, padding=1)
    weights = np.linspace(-1, 1, 12).reshape(2, 6)   # a constant tensor (no gradient of its own)
    loss = sum(sg.sum(sg.square(p)) for p in parts) + sg.sum(c * c) + sg.sum(sg.square(pooled)) + \
        sg.sum(weights * h * h) + sg.sum(sg.max(h, axis=0) * sg.softmax(h, axis=0)[1])
    check_rules(loss, {"x": RNG.normal(size=(4, 2, 6))}, 4)


def test_index_scatter_is_the_transpose_of_its_map():
    from symgrad.ops.index_map import AxisMap, IndexMap, IndexScatter, Map
    m = Map((3, 2), (5,), (AxisMap((2, 1), -1),))   # out[i, j] = x[2i + j - 1]: x[-1] reads the fill
    x, g = RNG.normal(size=5), RNG.normal(size=(3, 2))
    Ax = IndexMap(m).evaluate(_Out(False), [x], 1)
    ATg = IndexScatter(m).evaluate(_Out(False), [g], 1)
    assert Ax[0, 0] == 0 and Ax[2, 1] == x[4]
    assert np.sum(Ax * g) == pytest.approx(np.sum(x * ATg))
    assert np.allclose(IndexMap(m, -np.inf).evaluate(_Out(False), [x], 1)[0, 0], -np.inf)


class _Out:
    """Just what evaluate reads of an assignment: whether its output is batched."""

    def __init__(self, batched: bool) -> None:
        self.out = type("V", (), {"batched": batched})()


def test_detach_stops_the_gradient():
    x = sg.input("x", 3)
    w = sg.param("w", 3)
    z = w * x
    loss = sg.sum(z * z) - sg.logsumexp(z)        # log-sum-exp's shift is detached
    check_rules(loss, {"x": X}, 5)


def test_interpreter_matches_numpy():
    x, t = sg.input("x", 3), sg.target("t", 2)
    W = sg.param("W", (2, 3))
    fwd = build_forward(sg.mse(sg.relu(W @ x), t))
    Wv = np.arange(6.0).reshape(2, 3) / 7 - 0.3
    got = run(fwd.program, {"x": X, "t": T, "W": Wv}, 5)["objective"]
    assert got == pytest.approx(np.mean(np.mean((np.maximum(X @ Wv.T, 0) - T) ** 2, axis=1)))


def test_type_rules_refuse_bad_arguments():
    b = Builder()
    x = leaf(b, "input", "x", (3,), True)
    W = leaf(b, "param", "W", (2, 4), False)
    with pytest.raises(IRError, match="index 'j' has sizes"):
        einsum(b, "z", "ij,bj->bi", (W, x), (2,))
    with pytest.raises(IRError, match="does not match"):
        b.apply(Einsum("ij,j->i", (2,)), (W, x), "z")
    with pytest.raises(IRError, match="do not give"):
        b.apply(Elementwise(ScalarFn("f", sp.Symbol("a0", real=True), 1), (4,)), (x,), "f")


def test_builder_folds_constants_and_shares_equal_ops():
    b = Builder()
    x = leaf(b, "input", "x", (3,), True)
    two = elementwise(b, "two", sp.Integer(2), ())
    a0, a1 = sp.symbols("a0 a1", real=True)
    y1 = elementwise(b, "scale", a0 * a1, (x, two))
    y2 = elementwise(b, "scale", a0 * a1, (x, two))
    assert y1 is y2 and b.body[-1].op.fn.expr == 2 * a0 and b.body[-1].args == (x,)
    assert elementwise(b, "id", a0, (x,)) is x          # the identity is no op


def test_linearity_finds_piecewise_linear_objectives():
    x, y, t = sg.input("x", 3), sg.labels("y", 3), sg.target("t", 3)
    W = sg.param("W", (3, 3))
    o = W @ x
    assert linearity(build_forward(sg.multiclass_hinge(o, y)).program).degree == 2
    assert linearity(build_forward(sg.l1_loss(o, t)).program).kink == "abs_err"
    assert linearity(build_forward(sg.max(o)).program).degree == 2
    assert linearity(build_forward(sg.sum(o)).program).degree == 1
    for curved in (sg.mse(o, t), sg.softmax_cross_entropy(o, y), sg.multiclass_hinge(o, y) + sg.l2(W),
                   sg.multiclass_hinge(sg.param("V", (3, 3)) @ sg.relu(o), y)):
        assert linearity(build_forward(curved).program).degree == 3


def test_an_op_without_a_rule_is_named():
    from dataclasses import dataclass

    from codegen.ops import rule_for
    from symgrad.ir import Op

    @dataclass(frozen=True)
    class Half(Op):   # a new family that defined only its type rule
        def type(self, args):
            return args[0].shape, args[0].batched, "real"
    b = Builder()
    x = leaf(b, "input", "x", (3,), True)
    h = b.apply(Half(), (x,), "half")
    with pytest.raises(IRError, match="Half has no 'jvp' rule"):
        Half().jvp(None, b.body[-1], [x])
    with pytest.raises(IRError, match="no lowering rule for IR op Half"):
        rule_for(Half())
    assert h.shape == (3,)


def test_a_loss_records_its_split_point_in_the_builder_and_leaves_no_node():
    """Scored (symgrad/ops/split.py): each built-in loss marks the prediction it scores; the
    forward program's split:* outputs are those values, and no Scored op is in the program."""
    from symgrad.ops.split import Scored
    x, t, y = sg.input("x", 3), sg.target("t", 2), sg.labels("y", 4)
    a = sg.dense(x, 2, name="a")
    c = sg.dense(x, 4, name="c")
    loss = sg.mse(a, t) + 0.5 * sg.softmax_cross_entropy(c, y)
    assert isinstance(loss.args[0].op, Scored)
    fwd = build_forward(loss, output=a)
    splits = [v for k, v in fwd.program.outputs if k.startswith("split:")]
    assert len(splits) == 2 and splits[0] == fwd.program.output("output")   # a, then c
    made = {a_.out.name: a_ for a_ in fwd.program.body}
    assert made[splits[1].name].out.shape == (4,) and made[splits[1].name].out.batched
    assert not any(isinstance(x.op, Scored) for x in fwd.program.body)
    # without a built-in loss, the output is the split point
    plain = build_forward(sg.sum(sg.square(a - t)), output=a)
    assert [v for k, v in plain.program.outputs if k.startswith("split:")] == [plain.program.output("output")]
