"""Lowering of einsums: loop nests with an accumulating innermost Compute, or, for a GEMM big
enough to pay for the call, a BLAS product (the decision is :func:`gemm_plan`'s, with the target's
thresholds)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import sympy as sp

from symgrad.ir import BATCH, Assign, arg_symbols
from symgrad.ops.einsum import Einsum, parse_spec

from ..kernel_ir import Compute, Stmt
from . import LoweringRule, register

if TYPE_CHECKING:
    from ..lower import Lowering


def emit(L: Lowering, a: Assign, row: str | None) -> list[Stmt]:
    ins, out = parse_spec(a.op.spec)
    sizes: dict[str, int] = {}
    for letters, x in zip(ins, a.args):
        for ch, d in zip(letters.replace(BATCH, ""), x.shape):
            sizes[ch] = d
    for ch, d in zip(out.replace(BATCH, ""), a.out.shape):
        sizes[ch] = d
    out_l = [ch for ch in out if ch != BATCH]
    red_l = sorted({ch for letters in ins for ch in letters if ch not in out and ch != BATCH},
                   key=lambda ch: "".join(ins).index(ch))
    var = dict(zip(out_l, L.index_vars(len(out_l)))) | dict(zip(red_l, L.reduction_vars(len(red_l))))
    idx_of = [tuple(var[ch] for ch in letters if ch != BATCH) for letters in ins]
    prod = sp.Mul(*arg_symbols(len(a.args)))
    expr, binds = L.bind(prod, a.args, idx_of, row)
    out_idx = tuple(var[ch] for ch in out_l)
    tgt, op = L.target(a, out_idx, row)
    comment = provenance(a)
    if red_l:
        inner = L.loops(tuple(sizes[ch] for ch in red_l), tuple(var[ch] for ch in red_l),
                        [Compute(tgt, expr, binds, "+=", comment)])
        body = inner if op == "+=" else [Compute(tgt, sp.S.Zero, (), "=", ""), *inner]
    else:
        body = [Compute(tgt, expr, binds, op, comment)]
    return L.loops(tuple(sizes[ch] for ch in out_l), out_idx, body)


def provenance(a: Assign) -> str:
    """The comment a contraction's generated code carries: the einsum it came from."""
    return f"{a.out.name} = einsum('{a.op.spec}', {', '.join(x.name for x in a.args)})"


def gemm_plan(L: Lowering, a: Assign, per_row: bool) -> tuple[str, bool, str, bool] | None:
    """(first, transpose it, second, transpose it) when ``a`` is a GEMM worth a call.

    ``per_row`` (a staged CUDA pass) weighs the work per sample against the
    target's ``gemm_min_work_per_row`` and takes only operands the host driver
    holds (per-sample arrays and parameters); otherwise the work over a chunk
    of ``chunk_estimate`` rows is weighed against ``gemm_min_work``.
    """
    if len(a.args) != 2:
        return None
    (la, lb), out = parse_spec(a.op.spec)
    common = set(la) & set(lb)
    k = common - set(out)
    if len(k) != 1 or common - k or len(la) > 2 or len(lb) > 2 or len(la) != len(set(la)):
        return None
    if any(ch not in la + lb for ch in out) or any(ch not in out for ch in (set(la) | set(lb)) - k):
        return None
    (kc,) = k
    m = [ch for ch in la if ch != kc]
    n = [ch for ch in lb if ch != kc]
    if not m and not n:
        return None
    size = {}
    for letters, x in zip((la, lb), a.args):
        dims = ((1 if per_row else L.limits.chunk_estimate,) if x.batched else ()) + x.shape
        size.update(zip(letters, dims))
    work = size[kc] * (size[m[0]] if m else 1) * (size[n[0]] if n else 1)
    min_work = L.limits.gemm_min_work_per_row if per_row else L.limits.gemm_min_work
    if work < min_work or (kc != BATCH and size[kc] < L.limits.gemm_min_depth):
        return None  # small or short contractions are cheaper fused into the loops around them
    sa, sb = (L.store[x.name] for x in a.args)
    if sa.kind != "array" or sb.kind != "array":
        return None
    held = [x.batched or (L.by_name[x.name].op.is_leaf() and L.by_name[x.name].op.role in L.flat_roles)
            for x in a.args]
    if per_row and not all(held):
        return None   # a parameter-only value computed in device code: the driver does not hold it
    # op(A) as (m, k), op(B) as (k, n); the output's letter order may ask for (B^T A^T)
    (first, t1), (second, t2) = (sa.name, la[-1] != kc), (sb.name, lb[0] != kc)
    if m and n and out == n[0] + m[0]:
        (first, t1), (second, t2) = (second, not t2), (first, not t1)
    return first, t1, second, t2


#: multiply-adds per sample from which a per-row product (:func:`rows_plan`) is a BLAS call each
ROWS_MIN_WORK = 4096


def rows_plan(a: Assign) -> tuple[int, int, bool, int, int, int, bool, bool, int] | None:
    """A contraction that is one matrix product per sample once each operand's letters are
    flattened into blocks (a convolution of im2col windows with its weights, and its adjoints):
    ``(first, second, swap?, m, k, n, ta, tb, mode)`` for ``symgrad.runtime.dot_rows``, from the
    shapes alone; None where the letters do not form blocks or the product is small."""
    if not isinstance(a.op, Einsum) or len(a.args) != 2:
        return None
    (la, lb), out = parse_spec(a.op.spec)
    xa, xb = a.args
    if not (xa.batched or xb.batched):
        return None
    pa, pb, po = (s.replace(BATCH, "") for s in (la, lb, out))
    if len(set(pa)) != len(pa) or len(set(pb)) != len(pb) or any(ch in pa and ch in pb for ch in po):
        return None
    common = [ch for ch in pa if ch in pb]
    fa = [ch for ch in pa if ch not in pb]
    fb = [ch for ch in pb if ch not in pa]
    if [ch for ch in pb if ch in pa] != common or not common or set(fa + fb) != set(po) or not (fa or fb):
        return None
    size = {ch: d for letters, x in ((pa, xa), (pb, xb)) for ch, d in zip(letters, x.shape)}

    def block(letters: str, first: list[str], second: list[str]) -> bool | None:
        """False: ``first`` then ``second``; True: the other way round; None: not two blocks."""
        if list(letters) == first + second:
            return False
        return True if list(letters) == second + first else None
    ta = block(pa, fa, common)       # a stored (m, k): False; (k, m): True
    tb = block(pb, common, fb)       # b stored (k, n): False; (n, k): True
    if ta is None or tb is None:
        return None
    if list(po) == fa + fb:
        first, second, swap = 0, 1, False
    elif list(po) == fb + fa:        # out_r = op(b_r)^T-side first: swap the roles
        first, second, swap = 1, 0, True
        ta, tb = not tb, not ta
        fa, fb = fb, fa
    else:
        return None
    m, k, n = (math.prod(size[ch] for ch in g) for g in (fa, common, fb))
    batched = [a.args[first].batched, a.args[second].batched]
    mode = {(False, True): 0, (True, False): 1, (True, True): 3 if BATCH in out else 2}[tuple(batched)]
    if (mode == 2) == (BATCH in out) or m * k * n < ROWS_MIN_WORK or k < 4:
        return None
    return first, second, swap, m, k, n, ta, tb, mode


register(Einsum, LoweringRule(emit, gemm_plan=gemm_plan, rows_plan=rows_plan, reads_through=True))
