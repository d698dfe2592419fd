"""Loop fusion inside a chunk's row loop (codegen.passes.fusion), on hand-built kernel IR."""
from __future__ import annotations

import sympy as sp

from codegen.passes.fusion import drop_row_index, fuse_row_body
from codegen.kernel_ir import Affine, Compute, Loop, Ref, index

a0, a1 = sp.symbols("a0 a1", real=True)


def _loop(var: str, n: int, body: tuple) -> Loop:
    return Loop(var, Affine(), Affine.of(n), body)


def _contraction() -> Loop:
    """z[r, i] = b[i] + sum_k W[i, k] x[r, k]: a loop with an inner reduction loop."""
    return _loop("i", 32, (
        Compute(Ref("z_acc"), sp.S.Zero),
        _loop("k", 2, (Compute(Ref("z_acc"), a0 * a1, ((a0, Ref("W", index("i", "k"))),
                                                       (a1, Ref("x", index("r", "k")))), "+="),)),
        Compute(Ref("z", index("r", "i")), a0 + a1, ((a0, Ref("b", index("i"))), (a1, Ref("z_acc"))))))


def _map(fn: sp.Expr, src: str = "z", dst: str = "h") -> Loop:
    return _loop("i", 32, (Compute(Ref(dst, index("r", "i")), fn, ((a0, Ref(src, index("r", "i"))),)),))


def _loops(body: list) -> list[Loop]:
    return [s for s in body if isinstance(s, Loop)]


def test_costly_function_stays_out_of_a_loop_with_an_inner_reduction() -> None:
    body, scalars = fuse_row_body([_contraction(), _map(sp.tanh(a0))], "r", {"z"})
    assert len(_loops(body)) == 2           # tanh in a flat loop of its own, which LLVM vectorizes
    assert "z" not in scalars               # z crosses the two loops: it stays an array
    h = _loops(body)[1].body[0]
    assert h.binds[0][1] == Ref("z", index("r", "i"))


def test_without_vectorization_every_merge_is_taken() -> None:
    body, scalars = fuse_row_body([_contraction(), _map(sp.tanh(a0))], "r", {"z"}, vector=False)
    assert len(_loops(body)) == 1
    assert scalars == {"z"}                 # a GPU thread keeps z in a register


def test_cheap_and_flat_loops_still_merge() -> None:
    relu = sp.Piecewise((a0, a0 > 0), (0, True))
    body, scalars = fuse_row_body([_contraction(), _map(relu)], "r", {"z"})
    assert len(_loops(body)) == 1 and scalars == {"z"}      # a select is no call
    body, scalars = fuse_row_body([_map(a0 + 1, "x", "z"), _map(sp.exp(a0))], "r", {"z"})
    assert len(_loops(body)) == 1 and scalars == {"z"}      # no inner loop: the fused loop vectorizes


def test_a_loop_reading_another_element_is_not_merged() -> None:
    shifted = _loop("i", 32, (Compute(Ref("h", index("r", "i")), a0, ((a0, Ref("z", index("r", 0))),)),))
    body, scalars = fuse_row_body([_map(a0 + 1, "x", "z"), shifted], "r", {"z"})
    assert len(_loops(body)) == 2 and not scalars
    window = _loop("i", 32, (Compute(Ref("h", index("r", "i")), a0,
                                     ((a0, Ref("z", index("r", Affine.of("i") + 1))),)),))
    body, _ = fuse_row_body([_map(a0 + 1, "x", "z"), window], "r", {"z"})
    assert len(_loops(body)) == 2           # z[r, i + 1] is written by a later iteration


def test_a_value_written_outside_the_loop_index_is_not_merged() -> None:
    """A scan's running best (written at no index of the loop) is read by the next loop only
    after the whole scan: merging would read it mid-scan."""
    scan = _loop("i", 32, (Compute(Ref("best", index("r")), sp.Max(a0, a1),
                                   ((a0, Ref("best", index("r"))), (a1, Ref("x", index("r", "i"))))),))
    use = _loop("i", 32, (Compute(Ref("h", index("r", "i")), a0 - a1,
                                  ((a0, Ref("x", index("r", "i"))), (a1, Ref("best", index("r"))))),))
    body, _ = fuse_row_body([scan, use], "r", set())
    assert len(_loops(body)) == 2


def test_drop_row_index() -> None:
    (loop,) = drop_row_index([_map(sp.tanh(a0))], {"z"}, "r")
    (c,) = loop.body
    assert c.binds[0][1] == Ref("z", index("i")) and c.target == Ref("h", index("r", "i"))
