"""Loop nests as shared functions (codegen.outline): which nests move, which share a function,
and in what order a function takes its arguments."""
from __future__ import annotations

import re

import numpy as np
import sympy as sp

import symgrad as sg
from codegen.emit_cpu import emit_module
from codegen.kernel_ir import Affine, Alloc, Call, Compute, Int, Kernel, Let, Loop, Ref, index
from codegen.outline import outline, rename

a0, a1 = sp.symbols("a0 a1", real=True)


def _layer(z: str, b: str, h: str, local: str, width: int = 16) -> Loop:
    """for r: for i: local = b[i] + z[r, i]; h[r, i] = tanh(local)"""
    return Loop("r", Affine(), Affine.of("rows"), (Loop("i", Affine(), Affine.of(width), (
        Compute(Ref(local), a0 + a1, ((a0, Ref(b, index("i"))), (a1, Ref(z, index("r", "i")))), comment=f"{local} = add"),
        Compute(Ref(h, index("r", "i")), sp.tanh(a0), ((a0, Ref(local)),)),)),))


def _kernel(*body) -> Kernel:
    return Kernel("k", ("theta", "rows"), tuple(body))


def test_nests_that_differ_only_in_names_share_one_function() -> None:
    fns = outline([_kernel(Alloc("h1", index("rows", 16)), _layer("z1", "b1", "h1", "add"),
                           _layer("z2", "b2", "h2", "add_2"), _layer("t3", "b3", "h3", "add_3", width=16))])
    helpers, (k,) = fns[:-1], fns[-1:]
    assert [f.name for f in helpers] == ["loop1"]
    assert helpers[0].params == ("b1", "z1", "h1", "rows")         # arrays read, written, then integers
    calls = [s for s in k.body if isinstance(s, Call)]
    assert [(c.fn, c.args, c.writes) for c in calls] == [
        ("loop1", ("b1", "z1", "h1", "rows"), {"h1"}), ("loop1", ("b2", "z2", "h2", "rows"), {"h2"}),
        ("loop1", ("b3", "t3", "h3", "rows"), {"h3"})]
    assert isinstance(k.body[0], Alloc)                              # what is not a pure nest stays
    assert helpers[0].body == (_layer("z1", "b1", "h1", "add"),)    # the first nest's own names and comments


def test_nests_that_differ_in_their_extents_share_one_function_that_takes_them() -> None:
    fns = outline([_kernel(_layer("z1", "b1", "h1", "add"), _layer("z2", "b2", "h2", "add_2", width=8),
                           _layer("z3", "b3", "h3", "add_3", width=16))])
    (fn, k) = fns
    assert fn.params == ("b1", "z1", "h1", "rows", "len1")          # the width is a run-time integer
    assert fn.body[0].body[0].stop == Affine.of("len1")
    assert [c.args[-1] for c in k.body] == [Int(16), Int(8), Int(16)]
    assert "np.int64(8)" in emit_module([Kernel("k", ("rows",), k.body)], title="t", float_type="float64",
                                        fastmath=False, version="0")


def test_a_nest_whose_scalar_is_read_outside_stays_inline() -> None:
    acc = Loop("r", Affine(), Affine.of("rows"), (Compute(Ref("s"), a0, ((a0, Ref("z", index("r", 0))),), "+="),))
    after = Let("t", Affine.of("s"))
    fns = outline([_kernel(Let("s", Affine()), acc, after)])
    assert len(fns) == 1 and fns[0].body[1] == acc                  # it writes s, which it reads from outside
    defines = Loop("r", Affine(), Affine.of("rows"), (Compute(Ref("u"), a0, ((a0, Ref("z", index("r", 0))),)),))
    fns = outline([_kernel(defines, Let("t", Affine.of("u")))])
    assert len(fns) == 1 and fns[0].body[0] == defines              # u is read after it


def test_nests_inside_other_loops_move_and_host_code_does_not() -> None:
    chunk = Loop("c", Affine.of("c0"), Affine.of("c1"), (Alloc("h1", index("rows", 16)), _layer("z1", "b1", "h1", "add")))
    (fn, k) = outline([_kernel(chunk)])
    assert fn.name == "loop1" and isinstance(k.body[0].body[1], Call)
    host = Kernel("host", ("rows",), (_layer("z1", "b1", "h1", "add"),), host=True)
    assert outline([host]) == [host]


def test_rename_replaces_every_name_and_can_drop_comments() -> None:
    s = _layer("z1", "b1", "h1", "add")
    m = {"z1": "z9", "b1": "b9", "h1": "h9", "add": "t", "rows": "n"}
    assert rename(s, m, comments=False) == rename(_layer("z9", "b9", "h9", "t"), {"rows": "n"}, comments=False)
    assert rename(s, {}) == s


def test_a_deep_network_compiles_one_function_for_its_hidden_layers() -> None:
    x, t = sg.input("x", 3), sg.target("t", 1)
    h = x
    for k in range(5):
        h = sg.dense(h, 6, "tanh", name=f"l{k}")
    o = sg.dense(h, 1, name="o")
    m = sg.compile(sg.mse(o, t), output=o)
    src = m.source("predict")
    assert src.count("def loop") == 3        # hidden layers, output layer, output rows
    assert len(re.findall(r"^ +loop1\(", src, re.M)) == 5   # the hidden layers share one loop nest
    X = np.random.default_rng(0).normal(size=(50, 3))
    theta = m.init(0)
    p = m.unflatten(theta)
    want = X
    for k in range(5):
        want = np.tanh(want @ p[f"l{k}.W"].T + p[f"l{k}.b"])
    want = want @ p["o.W"].T + p["o.b"]
    np.testing.assert_allclose(m.predict(theta, X), want, rtol=1e-12, atol=1e-12)
