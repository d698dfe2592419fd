"""Loop fusion inside a chunk's row loop (codegen.fusion), on hand-built kernel IR."""
from __future__ import annotations

import sympy as sp

from codegen.fusion import drop_row_index, fuse_row_body
from codegen.kernel_ir import Compute, Loop, Ref

a0, a1 = sp.symbols("a0 a1", real=True)


def _contraction() -> Loop:
    """z[r, i] = b[i] + sum_k W[i, k] x[r, k]: a loop with an inner reduction loop."""
    return Loop("i", "0", "32", (
        Compute(Ref("z_acc"), sp.S.Zero),
        Loop("k", "0", "2", (Compute(Ref("z_acc"), a0 * a1, ((a0, Ref("W", ("i", "k"))),
                                                            (a1, Ref("x", ("r", "k")))), "+="),)),
        Compute(Ref("z", ("r", "i")), a0 + a1, ((a0, Ref("b", ("i",))), (a1, Ref("z_acc"))))))


def _map(fn: sp.Expr, src: str = "z", dst: str = "h") -> Loop:
    return Loop("i", "0", "32", (Compute(Ref(dst, ("r", "i")), fn, ((a0, Ref(src, ("r", "i"))),)),))


def _loops(body: list) -> list[Loop]:
    return [s for s in body if isinstance(s, Loop)]


def test_costly_function_stays_out_of_a_loop_with_an_inner_reduction() -> None:
    body, scalars = fuse_row_body([_contraction(), _map(sp.tanh(a0))], "r", {"z"})
    assert len(_loops(body)) == 2           # tanh in a flat loop of its own, which LLVM vectorizes
    assert "z" not in scalars               # z crosses the two loops: it stays an array
    h = _loops(body)[1].body[0]
    assert h.binds[0][1] == Ref("z", ("r", "i"))


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
    shifted = Loop("i", "0", "32", (Compute(Ref("h", ("r", "i")), a0, ((a0, Ref("z", ("r", "0"))),)),))
    body, scalars = fuse_row_body([_map(a0 + 1, "x", "z"), shifted], "r", {"z"})
    assert len(_loops(body)) == 2 and not scalars


def test_drop_row_index() -> None:
    (loop,) = drop_row_index([_map(sp.tanh(a0))], {"z"}, "r")
    (c,) = loop.body
    assert c.binds[0][1] == Ref("z", ("i",)) and c.target == Ref("h", ("r", "i"))
