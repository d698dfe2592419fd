"""Runs a generated CUDA kernel over the batch: device copies, launch shapes, the reduction.

A fused kind (a narrow network) launches ``<kind>_chunks`` with one thread
per chunk of rows (one row each, up to the budget below), the module's
``reduce_partials`` (thread j adds column j over the rows of ``partials`` in
order), then the single-thread finish ``<kind>``. The threads of a block add
their rows' sums atomically in shared memory and the block writes one row of
``partials``; the order of those atomic adds varies from run to run, so the
last bits of a sum can too. Kinds with no sums over the batch (predict,
jacobian) give each thread its own rows.

A staged kind (a network with a wide layer, or more sums than shared memory
holds: ``Lowered.staged``) calls ``<kind>_chunks``, generated host code that
launches the row kernels and the tiled GEMMs of :mod:`symgrad.cuda_runtime`
and leaves the sums in ``total``, then the finish.

Data arrays already on the device (``Model.to_device``, or anything with
``__cuda_array_interface__``) are used in place; a NumPy array is copied on
every call. So is a NumPy theta; a device theta's outputs stay on the device.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CudaKernelRunner", "cuda_status", "on_device", "THREADS_PER_BLOCK", "PARTIALS_BUDGET"]

THREADS_PER_BLOCK = 128
#: bytes of device memory a fused kind's partial sums (one row per block) may take
PARTIALS_BUDGET = 256 * 2 ** 20


def on_device(x: Any) -> bool:
    """Is ``x`` a GPU array (numba-cuda, CuPy, PyTorch: anything with
    ``__cuda_array_interface__``, or the CUDA simulator's fake device array)?"""
    try:
        return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"
    except Exception:   # a PyTorch CUDA tensor that requires grad refuses to export itself
        return True


def cuda_status() -> tuple[bool, str]:
    """(kernels can run here, why not): a GPU with a working driver, or the simulator."""
    try:
        from numba import config, cuda
    except ImportError as e:  # pragma: no cover - numba always has a cuda module
        return False, f"numba.cuda cannot be imported ({e})"
    if config.ENABLE_CUDASIM:
        return True, "simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if cuda.is_available():
            return True, "GPU"
        return False, "numba.cuda.is_available() is False (no NVIDIA GPU or driver found)"
    except Exception as e:  # a broken driver install
        return False, f"the CUDA driver failed to initialize ({type(e).__name__}: {e})"


class CudaKernelRunner:
    """Calls ``chunks`` (fused: a kernel, one thread per chunk, then the reduction; staged: the
    host driver), then ``finish`` on the device; ``stages`` are a staged kind's row kernels."""

    def __init__(self, chunks: Any, finish: Any, reduce: Any, n_acc: int, dtype: np.dtype, needs_finish: bool,
                 returns: bool, stages: tuple[Any, ...] = ()) -> None:
        self.chunks, self.finish, self.reduce, self.n_acc, self.dtype = chunks, finish, reduce, n_acc, dtype
        self.needs_finish, self.returns, self.stages, self.staged = needs_finish, returns, stages, bool(stages)

    @staticmethod
    def _device(a: Any) -> Any:
        """A device view of ``a``: device arrays as they are, host arrays copied (every call: a
        host array may have changed in place since the last one)."""
        from numba import cuda
        if cuda.devicearray.is_cuda_ndarray(a):
            return a
        if hasattr(a, "__cuda_array_interface__"):   # CuPy, PyTorch: viewed, not copied
            return cuda.as_cuda_array(a)
        return cuda.to_device(np.ascontiguousarray(a))

    def __call__(self, n: int, lead: tuple, rows_out: tuple = (), flat_out: tuple = ()) -> Any:
        """``n`` samples; ``lead`` = (theta, [v,] data...), host or device; ``rows_out`` and
        ``flat_out`` receive the results (host arrays are copied back; device ones, made for a
        device theta, are written in place)."""
        ok, why = cuda_status()
        if not ok:
            raise RuntimeError(f"backend='cuda' cannot run kernels here: {why}. The generated source "
                               "and PTX can still be inspected; set NUMBA_ENABLE_CUDASIM=1 (before numba is "
                               "imported) to run them in the simulator")
        from numba import cuda
        d_lead = [self._device(a) for a in lead]
        total = None
        d_rows = [cuda.device_array(a.shape, dtype=a.dtype) for a in rows_out]
        # outputs already on the device (a device theta's gradient) are written in place
        host_flat = [not on_device(a) for a in flat_out]
        d_flat = [cuda.device_array(a.shape, dtype=a.dtype) if h else a for a, h in zip(flat_out, host_flat)]
        if self.chunks is not None and self.staged:   # host code: launches, GEMMs, sums into total
            total = cuda.device_array(self.n_acc, dtype=self.dtype) if self.n_acc else None
            self.chunks(*d_lead, *d_rows, *d_flat, *([total] if total is not None else []))
        elif self.chunks is not None and self.n_acc:   # block sums: up to the budget for partials
            rows_max = PARTIALS_BUDGET // (self.n_acc * self.dtype.itemsize)
            chunk = math.ceil(n / max(1, min(n, rows_max * THREADS_PER_BLOCK)))
            blocks = math.ceil(math.ceil(n / chunk) / THREADS_PER_BLOCK)
            partials = cuda.device_array((blocks, self.n_acc), dtype=self.dtype)
            self.chunks[blocks, THREADS_PER_BLOCK](*d_lead, *d_rows, partials, chunk)
            total = cuda.device_array(self.n_acc, dtype=self.dtype)
            self.reduce[math.ceil(self.n_acc / THREADS_PER_BLOCK), THREADS_PER_BLOCK](partials, total)
        elif self.chunks is not None:   # no sums over the batch: one thread per sample
            self.chunks[math.ceil(n / THREADS_PER_BLOCK), THREADS_PER_BLOCK](*d_lead, *d_rows, 1)
        for host, dev in zip(rows_out, d_rows):
            dev.copy_to_host(host)
        if not self.needs_finish:
            return None
        result = cuda.device_array(1, dtype=self.dtype)
        args = [*d_lead, *d_flat] + ([total] if total is not None else []) + ([result] if self.returns else [])
        self.finish[1, 1](*args)
        for host, dev, h in zip(flat_out, d_flat, host_flat):
            if h:
                dev.copy_to_host(host)
        return result.copy_to_host()[0] if self.returns else None
