"""The typed kernel IR: affine index expressions, the names statements use and define, and how
the emitters print them (codegen.kernel_ir, codegen.emit_cpu, codegen.emit_cuda)."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from codegen.emit_cpu import StmtPrinter
from codegen.emit_cuda import CudaStmtPrinter
from codegen.kernel_ir import (Affine, Alloc, Barrier, Builtin, Call, CallExpr, Compute, Dim, Fill, If, Let,
                               Literal, Loop, Min, Mul, Reciprocal, Ref, Return, View, Window, defines, index,
                               needed, uses)
from codegen.lower import c_order, loop_vars
from codegen.printer import CudaPrinter, NumbaPrinter
from symgrad import dsl
from symgrad.initializers import check_init
from symgrad.ir import Namer

a0, a1 = sp.symbols("a0 a1", real=True)


def _print(stmts, cuda: bool = False, shared: frozenset = frozenset()) -> str:
    pr = CudaStmtPrinter(CudaPrinter("float64"), shared) if cuda else StmtPrinter(NumbaPrinter("float64"), shared)
    out: list[str] = []
    for s in stmts:
        pr.lines(s, 0, out)
    return "\n".join(out)


def test_affine_arithmetic_and_coefficients() -> None:
    e = Affine.of("r0") + "r"
    assert e.coeff("r") == 1 and e.coeff("q") == 0 and e.names() == {"r0", "r"}
    w = Affine.of("i") * 2 + Affine.of("k") * 3 + (-1)   # a strided, dilated, padded window
    assert (w.coeff("i"), w.coeff("k"), w.const) == (2, 3, -1)
    assert (w + Affine.of("i") * -2).names() == {"k"}      # a term that cancels disappears
    assert Affine.of(4).is_const and not e.is_const
    assert index("i", 3) == (Affine.of("i"), Affine.of(3))
    # equal values are equal whatever the order of their terms or how they print
    ab, ba = Affine.of("a") + Affine.of("b") * 2 + 5, Affine.of("b") * 2 + Affine.of("a") + 5
    assert ab.terms != ba.terms and ab == ba and hash(ab) == hash(ba) and ab != ab + 1
    assert Affine.of(5) == Affine((), 5, True) and len({ab, ba}) == 1


def test_uses_refuses_a_statement_it_does_not_know() -> None:
    with pytest.raises(TypeError, match="str"):
        uses(["not a statement"])   # type: ignore[list-item]


def test_affine_printing() -> None:
    pr = StmtPrinter(NumbaPrinter())
    assert pr.affine(Affine.of("r0") + "r") == "r0 + r"
    assert pr.affine(Affine.of(5) + "q") == "5 + q"            # an offset into a flat array
    assert pr.affine(Affine.of("q") + 5) == "q + 5"
    assert pr.affine(Affine.of("r1") + Affine.of("r0") * -1) == "r1 - r0"
    assert pr.affine(Affine.of("i") * 2 + (-1)) == "i*2 - 1"
    assert pr.affine(Affine()) == "0"
    assert pr.affine(c_order(7, ("i", "j"), (3, 4))) == "7 + i*4 + j"
    assert pr.affine(c_order(0, ("i", "j"), (3, 4))) == "i*4 + j"


def test_uses_and_defines_are_structural() -> None:
    loop = Loop("i", Affine(), Affine.of("n"), (
        Compute(Ref("h", index("r", Affine.of("i") + "off")), sp.tanh(a0), ((a0, Ref("z", index("r", "i"))),)),))
    assert uses([loop]) == {"n", "h", "r", "off", "z"}   # the loop variable is the loop's own
    assert defines(loop) == {"h"}
    other = Loop("i", Affine(), Affine.of(3), (Compute(Ref("g", index("i")), a0, ((a0, Ref("w", index("i"))),)),))
    assert needed([other], [loop]) == []     # two loops over i share no name through it
    call = Call("dot_nt", ("x", "W", "z"), frozenset({"z"}))
    assert uses([call]) == {"x", "W", "z"} and defines(call) == {"z"}
    let = Let("chunk", CallExpr("chunk_rows", ("n_samples", 12)))
    assert uses([let]) == {"n_samples"} and defines(let) == {"chunk"}
    view = View("W", "theta", Affine.of(4), Affine.of(10), (2, 3))
    assert uses([view]) == {"theta"} and defines(view) == {"W"}
    scalar = Compute(Ref("s"), a0 * sp.Symbol("inv_n"), ((a0, Ref("total", index(3))),))
    assert uses([scalar]) == {"inv_n", "total"}     # a scalar target is defined, not read


def test_needed_keeps_only_what_users_read() -> None:
    defs = [Let("n_samples", Dim("x", 0)), Let("inv_n", Reciprocal("n_samples")),
            View("W", "theta", Affine(), Affine.of(6), (2, 3)), View("b", "theta", Affine.of(6), Affine.of(8))]
    user = [Compute(Ref("y", index(0)), a0 * sp.Symbol("inv_n"), ((a0, Ref("b", index(1))),))]
    assert needed(defs, user) == [defs[0], defs[1], defs[3]]


def test_statements_print_for_each_target() -> None:
    cpu = _print([Let("r1", Min(Affine.of("r0") + "chunk", Affine.of("n_samples"))), Let("r0", Mul("c", "chunk")),
                  Alloc("z", index("rows", 16)), Alloc("am", index("rows"), "int64"), Fill("acc"),
                  View("acc", "partials", Affine.of("c")), Let("inv_n", Reciprocal("n_samples")),
                  Call("gemm", ("a", "b", "z", Literal(True)), frozenset({"z"})),
                  If(sp.StrictGreaterThan(a0, a1), ((a0, Ref("x", index("i"))), (a1, Ref("best"))), (Let("at", Affine.of("i")),)),
                  Return(a0, ((a0, Ref("total", index(0))),))])
    assert cpu.splitlines() == [
        "r1 = n_samples if n_samples < r0 + chunk else r0 + chunk", "r0 = c * chunk",
        "z = view(empty_f64(rows * 16), 0, (rows, 16))", "am = empty_i64(rows)", "acc[:] = 0", "acc = partials[c]", "inv_n = np.float64(1.0 / n_samples)",
        "gemm(a, b, z, True)", "if x[i] > best:", "    at = i", "return total[0]"]
    cuda = _print([Alloc("acc", index(8), space="shared"), Alloc("h", index(4, 2), space="local"),
                   Alloc("g", (CallExpr("blocks_for", ("chunk",)), Affine.of(3)), space="device"),
                   Loop("q", Affine.of(Builtin("thread")), Affine.of(8), (Compute(Ref("acc", index("q")), sp.S.Zero),),
                        step=Affine.of(Builtin("block_dim"))),
                   Barrier(), Compute(Ref("acc", index(2)), a0, ((a0, Ref("x")),), "+="),
                   Call("copy_to_device", (Window("grad", Affine(), Affine.of(4)), Window("total", Affine.of(2), Affine.of(6))),
                        frozenset({"grad"}), method=True)], cuda=True, shared=frozenset({"acc"}))
    assert cuda.splitlines() == [
        "acc = cuda.shared.array(8, float64)", "h = cuda.local.array((4, 2), float64)",
        "g = cuda.device_array((blocks_for(chunk), 3), np.float64)",
        "for q in range(cuda.threadIdx.x, 8, cuda.blockDim.x):", "    acc[q] = 0.0", "cuda.syncthreads()",
        "cuda.atomic.add(acc, 2, x)", "grad[:4].copy_to_device(total[2:6])"]
    with pytest.raises(TypeError, match="builtin"):
        _print([Let("c", Affine.of(Builtin("row")))])   # the CPU has no GPU grid


def test_loop_variables_for_any_rank_never_collide_with_values() -> None:
    assert loop_vars(("i", "j"), "i", 4) == ("i", "j", "i2", "i3")
    assert loop_vars(("k", "l", "m", "p"), "k", 6)[4:] == ("k4", "k5")
    namer = Namer()
    assert namer("i2") == "i2_2" and namer("k17") == "k17_2" and namer("i2x") == "i2x"


def test_a_rank_three_per_sample_tensor_lowers_and_differentiates() -> None:
    """The DSL still limits user tensors to two axes; the lowering does not (loops i, j, i2)."""
    x = dsl._leaf("input", "x", (2, 3, 4), True)
    W = dsl._leaf("param", "W", (2, 3, 4), False, init=check_init(("normal", 1.0), "W"))
    h = sg.tanh(x * W)
    m = sg.compile(sg.sum(h * h) + sg.sum(W * W), output=h)
    X = np.random.default_rng(0).normal(size=(5, 2, 3, 4))
    th = m.init(0)
    Wv = th.reshape(2, 3, 4)
    J, g = m.value_and_grad(th, X)
    assert J == pytest.approx(np.mean(np.sum(np.tanh(X * Wv) ** 2, axis=(1, 2, 3))) + np.sum(Wv * Wv), rel=1e-12)
    np.testing.assert_allclose(m.predict(th, X), np.tanh(X * Wv), atol=1e-15)
    t = np.tanh(X * Wv)
    np.testing.assert_allclose(g, (np.mean(2 * t * (1 - t ** 2) * X, axis=0) + 2 * Wv).ravel(), rtol=1e-10)
    v = np.random.default_rng(1).normal(size=th.size)
    eps = 1e-6
    fd = (m.grad(th + eps * v, X) - m.grad(th - eps * v, X)) / (2 * eps)
    np.testing.assert_allclose(m.hvp(th, v, X), fd, rtol=1e-5, atol=1e-7)
    assert "for i2 in range(4):" in m.source("value_and_grad")
