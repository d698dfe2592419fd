"""Stable scalar helpers that generated kernels call.

Each is the runtime form of a function in :mod:`symgrad.functions`; the
generated module imports them by name. They are small enough for LLVM to
inline into the calling loop.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["sigmoid", "softplus", "xlogy", "tanh", "expm1", "chunk_rows"]


@intrinsic
def _pow2(typingctx, k):  # type: ignore[no-untyped-def]
    """2.0**k for an int64 k in [-1022, 1023], by writing the exponent bits (vectorizable)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        i64 = ir.IntType(64)
        bits = builder.shl(builder.add(args[0], ir.Constant(i64, 1023)), ir.Constant(i64, 52))
        return builder.bitcast(bits, ir.DoubleType())
    return sig, codegen


@njit(cache=True, inline="always", error_model="numpy")
def expm1(y):  # type: ignore[no-untyped-def]
    """exp(y) - 1 for y in [-708, 709] without a libm call, so loops around it vectorize.

    Cody-Waite reduction y = k ln2 + r, |r| <= ln2/2, then e^r - 1 by its Taylor
    series to r^12 (truncation below 2e-16 relative) and 2^k (e^r - 1) + (2^k - 1).
    Max relative error against libm: 1e-15 (tests/test_runtime.py).
    """
    k = math.floor(y * 1.4426950408889634 + 0.5)
    r = (y - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    q = r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (
        1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (1 / 3628800 + r * (
            1 / 39916800 + r * (1 / 479001600))))))))))))
    p = _pow2(np.int64(k))
    return p * q + (p - 1.0)


@njit(cache=True, inline="always", error_model="numpy")
def tanh(x):  # type: ignore[no-untyped-def]
    """tanh(x) = e/(e+2) with e = expm1(2|x|), odd; |x| >= 20 gives +-1 exactly as libm does.

    Branch-free and libm-free, so LLVM can vectorize the loop around it (3x
    faster than math.tanh here). Max relative error against libm: 1e-15.
    """
    ax = min(abs(x), 20.0)
    e = expm1(2.0 * ax)
    t = e / (e + 2.0)
    return t if x >= 0 else -t


@njit(cache=True, inline="always")
def sigmoid(x):  # type: ignore[no-untyped-def]
    """1/(1+exp(-x)) without overflow: exp is only taken of a non-positive number."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def softplus(x):  # type: ignore[no-untyped-def]
    """log(1+exp(x)) = max(x, 0) + log1p(exp(-|x|))."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(cache=True, inline="always")
def xlogy(x, y):  # type: ignore[no-untyped-def]
    """x*log(y), 0 where x == 0."""
    if x == 0:
        return 0.0 * y
    return x * math.log(y)


@njit(cache=True)
def chunk_rows(n, n_acc):  # type: ignore[no-untyped-def]
    """Rows per batch chunk, from the batch size and accumulator length alone.

    Never from the thread count, so sums are reproducible bitwise. Aims at 64
    rows or more (amortizes the per-chunk setup) and at most 16 chunks; a large
    accumulator (zeroed, added into and reduced once per chunk) asks for up to
    n_acc/2048 rows, but never fewer than 2 chunks once the batch has 128 rows:
    a single chunk leaves every other thread idle. (W3's value_grad_hvp, a
    1.3M accumulator at batch 512, ran on one thread; forcing 4 chunks made
    its hvp 30% slower on 2 cores, the extra accumulator traffic.) The rows
    are then spread evenly.
    """
    want = max(64, (n + 15) // 16, min(n_acc // 2048, (n + 1) // 2))
    n_chunks = max(1, (n + want - 1) // want)
    return (n + n_chunks - 1) // n_chunks
