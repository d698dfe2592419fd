"""Stable scalar helpers that generated kernels call.

Each is the runtime form of a function in :mod:`symgrad.functions`; the
generated module imports them by name. They are small enough for LLVM to
inline into the calling loop.
"""
from __future__ import annotations

import math

from numba import njit

__all__ = ["sigmoid", "softplus", "xlogy", "chunk_rows"]


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

    Never from the thread count, so sums are reproducible bitwise. At least 64
    rows (amortizes the per-chunk setup), at most 16 chunks, and enough rows
    that zeroing and reducing a chunk's accumulator stays small beside its work.
    """
    want = max(64, (n + 15) // 16, n_acc // 2048)
    n_chunks = max(1, (n + want - 1) // want)
    return (n + n_chunks - 1) // n_chunks
