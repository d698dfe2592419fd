"""Device helpers that staged CUDA passes call: tiled GEMM, zeroing, block-sum reduction.

A network with wide layers runs on the GPU as a sequence of launches (see
:mod:`codegen.lower`): row kernels (one thread per sample) for the
elementwise work, and :func:`gemm` for the big contractions, through
shared-memory tiles. Sums over the batch end in one ``total`` vector: GEMMs
over the batch add their product into it, and row kernels leave one row of
block sums per block that :func:`add_partials` adds in block order. The
chunks, blocks and GEMM terms, and the k order inside a GEMM's tile loop, are
fixed by the batch size; only the order of the atomic adds inside a block
varies from run to run (so the last bits of a sum may too).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from numba import cuda, float32, float64

from .cuda_runner import THREADS_PER_BLOCK

__all__ = ["gemm", "zero", "add_partials", "slot_index", "blocks_for", "stage_rows", "GEMM_TILE",
           "STAGE_BUDGET", "THREADS_PER_BLOCK"]

#: edge of the square tiles of :func:`gemm` (threads per block = GEMM_TILE ** 2)
GEMM_TILE = 16
#: bytes of device memory a staged pass's per-row intermediates may take per chunk of rows
STAGE_BUDGET = 512 * 2 ** 20


def blocks_for(rows: int) -> int:
    """Blocks of ``THREADS_PER_BLOCK`` threads that give each of ``rows`` samples a thread."""
    return max(1, math.ceil(rows / THREADS_PER_BLOCK))


def stage_rows(n_samples: int, row_bytes: int) -> int:
    """Rows per chunk of a staged pass: as many as the budget holds (a function of the batch
    size and the model only, so the order of every sum is too)."""
    return max(1, min(n_samples, STAGE_BUDGET // max(row_bytes, 1)))


@lru_cache(maxsize=None)
def _gemm_kernel(dtype: str, tile: int) -> Any:
    ft = {"float64": float64, "float32": float32}[dtype]

    @cuda.jit
    def gemm_tiles(a, b, c, ta, tb, accumulate):
        """c[i, j] (+)= sum_k op(a)[i, k] op(b)[k, j]: one thread per element of c, k in tiles
        of ``tile`` staged through shared memory, summed in k order."""
        sa = cuda.shared.array((tile, tile), ft)
        sb = cuda.shared.array((tile, tile), ft)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        i = cuda.blockIdx.y * tile + ty
        j = cuda.blockIdx.x * tile + tx
        m, n = c.shape[0], c.shape[1]
        depth = a.shape[0] if ta else a.shape[1]
        s = ft(0.0)
        for k0 in range(0, depth, tile):
            ka, kb = k0 + tx, k0 + ty
            if i < m and ka < depth:
                sa[ty, tx] = a[ka, i] if ta else a[i, ka]
            else:
                sa[ty, tx] = 0
            if j < n and kb < depth:
                sb[ty, tx] = b[j, kb] if tb else b[kb, j]
            else:
                sb[ty, tx] = 0
            cuda.syncthreads()
            for q in range(tile):
                s += sa[ty, q] * sb[q, tx]
            cuda.syncthreads()
        if i < m and j < n:
            if accumulate:
                c[i, j] += s
            else:
                c[i, j] = s

    return gemm_tiles


def gemm(a: Any, b: Any, c: Any, ta: bool, tb: bool, accumulate: bool) -> None:
    """``c = op(a) @ op(b)`` (``c +=`` with ``accumulate``) on the device, op = transpose where
    ``ta``/``tb``. A 1-D ``a`` is a row vector, a 1-D ``b`` a column; ``c`` follows."""
    if a.ndim == 1:
        a, c = a.reshape((1, a.shape[0])), c.reshape((1, c.shape[0]))
    elif b.ndim == 1:
        b, c = b.reshape((b.shape[0], 1)), c.reshape((c.shape[0], 1))
    m, n = c.shape
    if m == 0 or n == 0:
        return
    tile = GEMM_TILE
    grid = (math.ceil(n / tile), math.ceil(m / tile))
    _gemm_kernel(np.dtype(c.dtype).name, tile)[grid, (tile, tile)](a, b, c, ta, tb, accumulate)


@cuda.jit
def _fill_zero(a):
    """a[:] = 0, grid-stride (a kernel, which the simulator runs too)."""
    for q in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[q] = 0


def zero(a: Any) -> None:
    """Sets a C-contiguous device array to zeros."""
    flat = a.reshape((a.size,)) if a.ndim != 1 else a
    if flat.shape[0]:
        _fill_zero[blocks_for(min(flat.shape[0], 1 << 20)), THREADS_PER_BLOCK](flat)


@cuda.jit
def _add_partials(partials, total, slots):
    """One thread per column j: the blocks' sums in block order, so the result is reproducible."""
    j = cuda.grid(1)
    if j < slots.shape[0]:
        s = partials[0, j]
        for blk in range(1, partials.shape[0]):
            s += partials[blk, j]
        total[slots[j]] += s


def add_partials(partials: Any, total: Any, slots: Any) -> None:
    """``total[slots[j]] += sum over blocks, in block order, of partials[:, j]``."""
    _add_partials[blocks_for(slots.shape[0]), THREADS_PER_BLOCK](partials, total, slots)


#: slot index arrays by segments, on the device: built once per process (one CUDA context)
_SLOTS: dict[tuple[tuple[int, int], ...], Any] = {}


def slot_index(segments: tuple[tuple[int, int], ...]) -> Any:
    """The device array of accumulator slots of ``segments`` ((first slot, count), ...): where a
    row kernel's block sums go in ``total`` (built once per process)."""
    d = _SLOTS.get(segments)
    if d is None:
        d = cuda.to_device(np.concatenate([np.arange(g, g + k, dtype=np.int64) for g, k in segments]))
        _SLOTS[segments] = d
    return d
