"""A chunk kernel's temporaries as views of one buffer (codegen.arena): which allocations move,
where each goes, and that values alive at the same time never share space."""
from __future__ import annotations

import itertools

from codegen.arena import ALIGN, arena
from codegen.kernel_ir import Affine, Alloc, Call, Kernel, Let, Loop, View, index, uses


def _chunk_kernel(*body, after=()) -> Kernel:
    loop = Loop("c", Affine.of("c0"), Affine.of("c1"), (Let("rows", Affine.of("r1") + Affine.of("r0") * -1), *body))
    return Kernel("k_chunks", ("theta", "x", "partials", "c0", "c1"), (Let("chunk", Affine.of(128)), loop, *after))


def _use(*names: str, writes: str = "") -> Call:
    return Call("f", names + ((writes,) if writes else ()), frozenset({writes} if writes else set()))


def _views(k: Kernel) -> dict[str, View]:
    (loop,) = [s for s in k.body if isinstance(s, Loop)]
    return {s.name: s for s in loop.body if isinstance(s, View)}


def test_temporaries_become_views_of_one_buffer_sized_for_the_largest_chunk() -> None:
    k = arena(_chunk_kernel(Alloc("a", index("rows", 5)), _use("x", writes="a"),
                            Alloc("b", index("rows", 3)), _use("a", writes="b"), Alloc("s", index(4)), _use("b", writes="s")))
    buf = k.body[1]
    assert isinstance(buf, Alloc) and buf.name == "arena" and buf.dtype == "float"
    v = _views(k)
    assert set(v) == {"a", "b", "s"} and all(x.base == "arena" for x in v.values())
    # the fixed-size slot first, then the per-row ones, each rounded up to ALIGN elements
    assert v["s"].start == Affine.of(0) and v["s"].shape == (4,)
    assert buf.shape == (Affine.of(ALIGN) + Affine.of("chunk") * (2 * ALIGN),)
    assert v["a"].shape == (Affine.of("rows"), 5) and v["a"].start.coeff("rows") == 0 and v["a"].start.const == ALIGN
    assert v["b"].start.coeff("rows") == ALIGN                    # a and b are alive together
    assert v["b"].stop == v["b"].start + Affine.of("rows") * 3


def test_values_whose_lifetimes_do_not_overlap_share_a_slot() -> None:
    k = arena(_chunk_kernel(Alloc("a", index("rows", 8)), _use("x", writes="a"), Alloc("b", index("rows", 8)),
                            _use("a", writes="b"), Alloc("c", index("rows", 8)), _use("b", writes="c")))
    v = _views(k)
    assert v["c"].start == v["a"].start != v["b"].start            # a is dead once b is computed


def test_a_view_of_a_temporary_keeps_it_alive() -> None:
    k = arena(_chunk_kernel(Alloc("a", index("rows", 8)), _use("x", writes="a"), View("a0", "a", Affine.of(0)),
                            Alloc("b", index("rows", 8)), _use("x", writes="b"), _use("a0", "b")))
    v = _views(k)
    assert v["a"].start != v["b"].start


def test_what_the_buffer_cannot_hold_stays_an_allocation() -> None:
    k0 = _chunk_kernel(Alloc("d", (Affine.of("n"),)), Alloc("e", index("rows", 2), space="local"), _use("d", "e"))
    assert arena(k0) == k0                                          # a run-time extent, a GPU array
    escapes = _chunk_kernel(Alloc("a", index("rows", 2)), _use("x", writes="a"), after=(_use("a"),))
    assert arena(escapes) == escapes                                # read after the chunk loop
    assert arena(Kernel("f", ("x",), (Alloc("a", index(3)),))) == Kernel("f", ("x",), (Alloc("a", index(3)),))
    k = arena(_chunk_kernel(Alloc("i", index("rows", 3), dtype="int64"), _use("x", writes="i")))
    assert k.body[1].name == "arena_int" and k.body[1].dtype == "int64"


def test_no_two_live_values_overlap() -> None:
    widths = [3, 8, 1, 16, 5, 9, 2, 7]
    body = []
    for j, w in enumerate(widths):   # each value reads the two before it
        body += [Alloc(f"t{j}", index("rows", w)), _use(*[f"t{m}" for m in (j - 1, j - 2) if m >= 0], writes=f"t{j}")]
    k = arena(_chunk_kernel(*body))
    v, stmts = _views(k), k.body[2].body
    live = {n: [t for t, s in enumerate(stmts) if n in uses([s]) | {getattr(s, "name", None)}] for n in v}
    for a, b in itertools.combinations(v, 2):
        if min(live[a][-1], live[b][-1]) >= max(live[a][0], live[b][0]):   # alive together
            ra = range(v[a].start.coeff("rows"), v[a].start.coeff("rows") + widths[int(a[1:])])
            rb = range(v[b].start.coeff("rows"), v[b].start.coeff("rows") + widths[int(b[1:])])
            assert not set(ra) & set(rb), (a, b)
        assert v[a].start.coeff("rows") % ALIGN == 0
