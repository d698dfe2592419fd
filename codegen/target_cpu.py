"""The CPU backend: per-chunk functions run in threads by symgrad.runner.

Arrays live on the heap, one row per sample of the chunk; a contraction big
enough to pay for a call is one BLAS product over the chunk (the
``symgrad.runtime`` helpers, compiled once per machine); each fused row loop
is a loop over the chunk's rows; chunk c adds its sums into its own row of
``partials``, which the finish kernel adds up in chunk order (``sum_rows``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import sympy as sp

from symgrad.runtime import BLAS_HELPERS

from .kernel_ir import Affine, Alloc, Call, CallExpr, Dim, Int, Kernel, Let, Loop, Ref, Return, Stmt, index
from .lower import Lowering
from .ops.einsum import provenance
from .passes.finishing import chunk_prelude
from .passes.fusion import split_rows
from .targets import Backend

if TYPE_CHECKING:
    from symgrad.ir import Assign, Value

__all__ = ["CpuBackend"]


class CpuBackend(Backend):
    """See the module docstring."""

    def alloc(self, L: Lowering, v: Value, rows: str | None, name: str) -> Alloc:
        dims = ((rows,) if v.batched and rows else ()) + v.shape
        return Alloc(name, index(*dims), "int64" if v.kind == "index" else "float")

    def gemm(self, L: Lowering, a: Assign) -> list[Stmt] | None:
        plan = L.gemm_plan(a, False)
        if plan is None:
            return self._rows_gemm(L, a)
        first, t1, second, t2 = plan
        st = L.store[a.out.name]
        comment = provenance(a)
        helper = BLAS_HELPERS[(t1, t2)]   # symgrad.runtime: compiled once per machine
        if st.kind != "acc":
            alloc = L.alloc(a.out, "rows" if a.out.batched else None)
            assert alloc is not None
            return [alloc, Call(helper, (first, second, st.name), frozenset({st.name}), comment)]
        acc = f"{st.name}_acc"
        if a.out.name not in L.alias and a.out.name not in L.alias.values():
            # the only term of this batch sum in the chunk: BLAS writes it in place
            return [Call(helper, (first, second, acc), frozenset({acc}), comment)]
        term = L.name(f"{a.out.name}_term")   # one of several terms: computed, then added
        alloc = L.alloc(a.out, None, term)
        assert alloc is not None
        return [alloc, Call(helper, (first, second, term), frozenset({term}), comment),
                Call("add_into", (acc, term), frozenset({acc}))]

    def _rows_gemm(self, L: Lowering, a: Assign) -> list[Stmt] | None:
        """A product per sample (the rule's ``rows_plan``): ``symgrad.runtime.dot_rows`` over the
        chunk's rows, its operands and output flattened into matrices in place."""
        plan = L.rows_plan(a)
        if plan is None or any(L.store[x.name].kind != "array" for x in a.args):
            return None
        first, second, _, m, k, n, ta, tb, mode = plan
        st = L.store[a.out.name]
        names = (L.store[a.args[first].name].name, L.store[a.args[second].name].name)
        flags = tuple(Int(int(v)) for v in (m, k, n, ta, tb, mode))
        if mode == 2:
            if st.kind != "acc":
                return None
            acc = f"{st.name}_acc"
            return [Call("dot_rows", names + (acc,) + flags, frozenset({acc}), provenance(a))]
        alloc = L.alloc(a.out, "rows")
        assert alloc is not None
        return [alloc, Call("dot_rows", names + (st.name,) + flags, frozenset({st.name}), provenance(a))]

    def close_rows(self, L: Lowering, fused: list[Stmt], kept: list[Value], local: set[str],
                   opaque: set[str]) -> list:
        allocs = [L.alloc(v, "rows") for v in kept]
        loops = [Loop("r", Affine(), Affine.of("rows"), tuple(piece)) for piece in split_rows(fused)]
        return [a for a in allocs if a is not None] + loops

    def result(self, expr: sp.Expr, binds: tuple[tuple[sp.Symbol, Ref], ...], key: str) -> Stmt:
        return Return(expr, binds, key)

    def chunk_kernels(self, L: Lowering, copied: list) -> tuple[Kernel, tuple[Kernel, ...], bool]:
        pre = chunk_prelude(L, per_chunk_sums=bool(L.n_acc))
        rows_out = list(dict.fromkeys(s.array for s, _ in L.sink_rows))
        body = L.head + L.phase_a + [
            Let("n_acc", Dim("partials", 1), "the accumulator's length, read from partials: a literal "
                "argument would compile chunk_rows once per value"),
            Let("chunk", CallExpr("chunk_rows", ("n_samples", "n_acc")),
                "rows per chunk: depends on N and the accumulator size, never on threads"),
            Loop("c", Affine.of("c0"), Affine.of("c1"), tuple(pre + L.chunk_body))]
        doc = (f"Chunks c0..c1 of {L.kernel_name}, all its per-sample work fused; chunk c writes its "
               "sums to partials[c] and nothing else, so chunks may run in parallel.")
        params = L.inputs + rows_out + ["partials", "c0", "c1"]
        return Kernel(f"{L.kernel_name}_chunks", tuple(params), tuple(body), doc), (), False

    def reduction(self) -> list[Stmt]:
        return [Let("total", CallExpr("sum_rows", ("partials",)),
                    "chunk sums added in chunk order: reproducible for any thread count")]

