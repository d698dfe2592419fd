"""A long chunk loop's runs of calls as shared part functions (codegen.parts): where runs are cut,
what a part makes itself, which parts share a function, and that a deep network computes the
same gradient and curvature products through them."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

import symgrad as sg
from codegen import parts as P
from codegen.kernel_ir import Affine, Call, Item, Kernel, Let, Loop, View

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


def _view_value(v: View, ints: dict[str, int], base: str) -> tuple:
    """A view as (base, constant offset, offset per row, shape), its integers resolved."""
    const, per_row = 0, 0
    for n, c in v.start.terms:
        if n == "rows":
            per_row += c
        elif n.endswith("_rows"):
            per_row += c * ints[n[:-5]]
        else:
            const += c * ints[n]
    const += v.start.const
    shape = tuple(d if isinstance(d, int) else (ints[d.terms[0][0]] if d.terms[0][0] in ints else "rows")
                  for d in v.shape)
    return base, const, per_row, shape


def _original(k: Kernel) -> list[tuple]:
    """The kernel's calls with each view argument as its value."""
    views = {s.name: s for s in k.body + k.body[-1].body if isinstance(s, View) and s.shape is not None}
    return [(s.fn, tuple(_view_value(views[a], {}, views[a].base) if a in views else a for a in s.args))
            for s in k.body[-1].body if isinstance(s, Call)]


def _through_parts(done: P.Parts) -> list[tuple]:
    """The calls the kernel makes, through its parts or inline, in order, each view argument as
    its value."""
    fns = {f.name: f for f in done.functions[:-1]}
    kernel = done.functions[-1]
    loop = kernel.body[-1]
    own = {s.name: s for s in kernel.body + loop.body if isinstance(s, View) and s.shape is not None}
    out = []
    sites = []
    for s in loop.body:
        if isinstance(s, Call):
            sites.append((s, s.args[-1].index.const if s.fn in fns else None))
        elif isinstance(s, Loop) and s.var == "q":
            sites += [(s.body[0], q) for q in range(s.start.const, s.stop.const)]
    for call, row in sites:
        if call.fn not in fns:   # inline
            out.append((call.fn, tuple(_view_value(own[a], {}, own[a].base) if a in own else a for a in call.args)))
            continue
        f = fns[call.fn]
        outer = dict(zip(f.params, call.args))
        ints: dict[str, int] = {}
        made: dict[str, tuple] = {}
        for b in f.body:
            if isinstance(b, Let) and isinstance(b.value, Item):
                ints[b.name] = done.table[row][b.value.index.const]
            elif isinstance(b, View):
                made[b.name] = _view_value(b, ints, outer[b.base])
            elif isinstance(b, Call):
                out.append((b.fn, tuple(made[a] if a in made else outer.get(a, a) for a in b.args)))
    return out


def test_a_short_run_stays_in_its_kernel() -> None:
    k = _kernel(2)
    assert P.parts([k]) == P.Parts([k], ())


def test_a_long_run_is_cut_into_parts_that_share_functions_and_loops() -> None:
    k = _kernel(24)
    done = P.parts([k])
    helpers, kernel = done.functions[:-1], done.functions[-1]
    assert [h.name for h in helpers] == [f"part{j + 1}" for j in range(len(helpers))] and len(helpers) <= 3
    loop = kernel.body[-1]
    repeats = [s for s in loop.body if isinstance(s, Loop)]
    assert len(repeats) == 1 and repeats[0].stop.const - repeats[0].start.const >= 4   # the repeated part: a loop
    # what the parts do, with their table rows, is what the kernel did
    assert _through_parts(done) == _original(k)
    # a part's integers are in the table, not in its code: the shared part has no literal offset
    body = [b for b in helpers[1].body if isinstance(b, View)]
    assert body and all(not v.start.const for v in body)
    assert len(done.table) == len([s for s in loop.body if isinstance(s, Call) and s.fn.startswith("part")]) + sum(
        r.stop.const - r.start.const for r in repeats)
    # the kernel keeps the parameter views its inline calls read (the last layer), no others
    inline = {a for s in loop.body if isinstance(s, Call) and not s.fn.startswith("part") for a in s.args}
    assert {s.name for s in kernel.body if isinstance(s, View)} == inline & {"W23", "b23"} == {"W23", "b23"}


def test_layers_of_other_widths_share_parts_through_the_table() -> None:
    body = [Let("rows", Affine.of("r1") + Affine.of("r0") * -1), View("x_c", "x", Affine.of("r0"), Affine.of("r1"))]
    for j in range(24):
        body += _layer(j, width=4 + j % 5)
    k = Kernel("k_chunks", ("theta", "x", "c0", "c1"), tuple(_params(24)) + (Loop("c", Affine.of("c0"), Affine.of("c1"), tuple(body)),))
    done = P.parts([k])
    assert len(done.functions) <= 4
    assert _through_parts(done) == _original(k)


def test_parts_are_at_most_the_bounded_size_and_cut_before_products() -> None:
    done = P.parts([_kernel(40)])
    fns = {f.name: f for f in done.functions[:-1]}
    for f in fns.values():
        assert sum(isinstance(b, (Call, View)) for b in f.body) <= P.MOST + 8
    for f in list(fns.values())[1:]:
        assert next(b for b in f.body if isinstance(b, Call)).fn == "dot_nt"


def test_a_statement_parts_cannot_hold_ends_a_run() -> None:
    barrier = Let("s", Affine.of("rows"))
    k = _kernel(20, barrier, *_layer(30))
    loop = P.parts([k]).functions[-1].body[-1]
    at = loop.body.index(barrier)
    assert any(isinstance(s, Call) and s.fn.startswith("part") for s in loop.body[:at])
    # the layer after it is a short run of a form no part has: it stays inline, views first
    layer = _layer(30)
    assert list(loop.body[at + 1:]) == [s for s in layer if isinstance(s, View)] + [s for s in layer if isinstance(s, Call)]


def test_parts_that_would_not_repeat_are_rolled_back() -> None:
    body = [Let("rows", Affine.of("r1") + Affine.of("r0") * -1), View("x_c", "x", Affine.of("r0"), Affine.of("r1"))]
    for j in range(24):   # every layer calls its own loop function: no two parts could share one
        body += [replace(s, fn=f"loop{j + 1}") if isinstance(s, Call) and s.fn == "loop1" else s for s in _layer(j)]
    k = Kernel("k_chunks", ("theta", "x", "c0", "c1"), tuple(_params(24)) + (Loop("c", Affine.of("c0"), Affine.of("c1"), tuple(body)),))
    assert P.parts([k]) == P.Parts([k], ())


def _deep(depth: int):
    x, t = sg.input("x", 3), sg.target("t", 2)
    h = x
    widths = [6, 6, 5, 6, 6, 5]
    for k in range(depth):
        h = sg.dense(h, widths[k % len(widths)], "tanh" if k % 2 else "softplus", name=f"l{k}")
    o = sg.dense(h, 2, name="o")
    return sg.compile(sg.mse(o, t), output=o), [widths[k % len(widths)] for k in range(depth)]


def test_a_deep_network_through_parts_matches_the_reference() -> None:
    depth = 12
    m, widths = _deep(depth)
    src = m.source("value_and_grad")
    assert "def part" in src and len(re.findall(r"^ +part\d+\(", src, re.M)) > 3
    assert src.startswith("# PART_INTS[q]")   # the integers the parts read, shown with them
    rng = np.random.default_rng(1)
    X, T = rng.normal(size=(150, 3)), rng.normal(size=(150, 2))
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
