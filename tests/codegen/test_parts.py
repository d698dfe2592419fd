"""A long chunk loop's runs of calls as shared part functions (codegen.parts): where runs are cut,
what a part makes itself, which parts share a function, and that a deep network computes the
same gradient and curvature products through them."""
from __future__ import annotations

import re

import numpy as np

import symgrad as sg
from codegen import parts as P
from codegen.kernel_ir import Affine, Call, Int, Kernel, Let, Loop, View, index

try:
    from . import reference_numpy as R   # type: ignore[attr-defined]
except ImportError:   # pragma: no cover - run from the tests folder
    import reference_numpy as R   # type: ignore[no-redef]


def _layer(j: int, width: int = 8) -> list:
    """A forward layer of a chunk loop: views of its parameters and temporaries, a product, a loop."""
    w, b, z, h = f"W{j}", f"b{j}", f"z{j}", f"h{j}"
    prev = "x_c" if j == 0 else f"h{j - 1}"
    return [View(z, "arena", Affine.of("rows") * (16 * j), Affine.of("rows") * (16 * j + width), (Affine.of("rows"), width)),
            Call("dot_nt", (prev, w, z), frozenset({z})),
            View(h, "arena", Affine.of("rows") * (16 * j + 8), Affine.of("rows") * (16 * j + 8 + width),
                 (Affine.of("rows"), width)),
            Call("loop1", (z, b, h, "rows"), frozenset({h}))]


def _params(n: int) -> list[View]:
    out = []
    for j in range(n):
        out += [View(f"W{j}", "theta", Affine.of(72 * j), Affine.of(72 * j + 64), (8, 8)),
                View(f"b{j}", "theta", Affine.of(72 * j + 64), Affine.of(72 * j + 72), (8,))]
    return out


def _kernel(n: int, *extra) -> Kernel:
    body = [Let("rows", Affine.of("r1") + Affine.of("r0") * -1), View("x_c", "x", Affine.of("r0"), Affine.of("r1"))]
    for j in range(n):
        body += _layer(j)
    loop = Loop("c", Affine.of("c0"), Affine.of("c1"), tuple(body + list(extra)))
    return Kernel("k_chunks", ("theta", "x", "out", "c0", "c1"), tuple(_params(n)) + (loop,))


def _calls(stmts) -> list[tuple]:
    return [(s.fn, s.args) for s in stmts if isinstance(s, Call)]


def test_a_short_run_stays_in_its_kernel() -> None:
    k = _kernel(2)
    assert P.parts([k]) == [k]


def test_a_long_run_is_cut_into_parts_that_share_functions() -> None:
    k = _kernel(24)
    fns = P.parts([k])
    helpers, kernel = fns[:-1], fns[-1]
    loop = kernel.body[-1]
    assert [h.name for h in helpers] == [f"part{j + 1}" for j in range(len(helpers))] and len(helpers) <= 3
    calls = [s for s in loop.body if isinstance(s, Call)]
    assert len(calls) > 2 and all(c.fn.startswith("part") for c in calls)
    assert sum(c.fn == "part2" for c in calls) >= len(calls) - 2   # all but the first and last parts share
    # the parts' calls, in order, are the kernel's calls as they were
    by_name = {h.name: h for h in helpers}
    flat = []
    for c in calls:
        h = by_name[c.fn]
        m = dict(zip(h.params, c.args))
        flat += [(s.fn, tuple(m.get(a, a) for a in s.args)) for s in h.body if isinstance(s, Call)]
    want = [(s.fn, s.args) for s in k.body[-1].body if isinstance(s, Call)]
    assert len(flat) == len(want) and [f for f, _ in flat] == [f for f, _ in want]
    # a part makes its views from their base and a run-time offset: a constant one is an Int, not a literal
    h = by_name[calls[1].fn]
    made = [s for s in h.body if isinstance(s, View)]
    assert made and all(v.start.terms and v.start.terms[0][0].startswith("at") for v in made)
    offsets = [a for a in calls[1].args if isinstance(a, Int)]
    assert offsets and all(isinstance(a.value, int) for a in offsets)
    assert any(isinstance(a, Affine) and a.coeff("rows") for a in calls[1].args)
    # the parameter views the kernel no longer reads itself are gone from it
    assert not [s for s in kernel.body if isinstance(s, View)]


def test_parts_are_at_most_the_bounded_size_and_cut_before_products() -> None:
    k = _kernel(40)
    fns = P.parts([k])
    for h in fns[:-1]:
        assert len(h.body) <= P.MOST + 8
    loop = fns[-1].body[-1]
    by_name = {h.name: h for h in fns[:-1]}
    for c in [s for s in loop.body if isinstance(s, Call)][1:]:
        first = next(s for s in by_name[c.fn].body if isinstance(s, Call))
        assert first.fn == "dot_nt"


def test_a_statement_parts_cannot_hold_ends_a_run() -> None:
    k = _kernel(20, Let("s", Affine.of("rows")), *_layer(30))
    loop = P.parts([k])[-1].body[-1]
    kinds = [type(s).__name__ for s in loop.body]
    let = kinds.index("Let", 1)
    assert kinds[let + 1:] == ["Call"]        # the layer after it is a run of its own (short: inline as calls)
    assert loop.body[-1].fn.startswith("part") or loop.body[-1].fn == "loop1"


def _deep(depth: int):
    x, t = sg.input("x", 3), sg.target("t", 2)
    h = x
    widths = [6, 6, 5, 6, 6, 5]
    for k in range(depth):
        h = sg.dense(h, widths[k % len(widths)], "tanh" if k % 2 else "softplus", name=f"l{k}")
    o = sg.dense(h, 2, name="o")
    return sg.compile(sg.mse(o, t), output=o), [widths[k % len(widths)] for k in range(depth)]


def test_a_deep_network_through_parts_matches_the_reference() -> None:
    depth = 18
    m, widths = _deep(depth)
    src = m.source("value_and_grad")
    assert "def part" in src and len(re.findall(r"^ +part\d+\(", src, re.M)) > 3
    rng = np.random.default_rng(1)
    X, T = rng.normal(size=(300, 3)), rng.normal(size=(300, 2))
    theta = m.init(0)
    p = m.unflatten(theta)
    layers = [(p[f"l{k}.W"], p[f"l{k}.b"], "tanh" if k % 2 else "softplus") for k in range(depth)]
    layers.append((p["o.W"], p["o.b"], "identity"))
    J, g = m.value_and_grad(theta, X, T)
    Jr, gr = R.value_and_grad(layers, "mse", X, T)
    assert abs(J - Jr) <= 1e-12 * max(1.0, abs(Jr))
    want = np.concatenate([np.concatenate([gW.ravel(), gb.ravel()]) for gW, gb in gr])
    np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-13)
    # the curvature product through the parts: central differences of the gradient
    v = rng.normal(size=theta.size)
    eps = 1e-5
    fd = (m.grad(theta + eps * v, X, T) - m.grad(theta - eps * v, X, T)) / (2 * eps)
    np.testing.assert_allclose(m.hvp(theta, v, X, T), fd, rtol=1e-5, atol=1e-8)
