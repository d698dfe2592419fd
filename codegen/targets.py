"""Code targets as objects: each owns its thresholds, capacity limits and emitter.

The shared lowering asks its target instead of reading module globals, so a
test (or a user tuning for a GPU) configures a target:
``sg.compile(loss, backend=dataclasses.replace(CUDA, gemm_min_work_per_row=16))``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["Target", "CPU", "CUDA", "TARGETS", "target_of"]


@dataclass(frozen=True)
class Target:
    """A code target and its cost model.

    - ``gemm_min_work``: multiply-adds over a chunk of ``chunk_estimate`` rows from which a
      contraction is a BLAS call (below, loops fused with the work around them are cheaper);
      ``gemm_min_depth``: the contraction length below which a call never pays (x @ W.T over
      2 input features).
    - CUDA only: ``gemm_min_work_per_row``, multiply-adds per sample from which a contraction is
      a tiled GEMM launch and the pass is staged (a 64x64 layer); ``shared_acc_bytes``, a block's
      shared accumulator (CUDA gives a block 48 KiB of static shared memory: below, a block adds
      its threads' sums there atomically, above, the pass is staged and block sums go to device
      memory); ``local_max``, elements of thread-local arrays a kernel may hold in all (256 KiB in
      float64; CUDA allows 512 KiB of local memory per thread and reserves it for every resident
      thread).
    """

    name: str
    gemm_min_work: int = 8192
    gemm_min_depth: int = 16
    chunk_estimate: int = 128
    gemm_min_work_per_row: int = 4096
    shared_acc_bytes: int = 40 * 1024
    local_max: int = 32768

    @property
    def emitter(self) -> Callable[..., str]:
        """The function printing a module of this target's kernels."""
        if self.name == "cuda":
            from .emit_cuda import emit_cuda_module
            return emit_cuda_module
        from .emit_cpu import emit_module
        return emit_module


CPU = Target("cpu")
CUDA = Target("cuda")
#: the targets by backend name
TARGETS = {"cpu": CPU, "cuda": CUDA}


def target_of(backend: str | Target) -> Target:
    """The target a backend name (or a configured :class:`Target`) stands for."""
    if isinstance(backend, Target):
        if backend.name not in TARGETS:
            raise ValueError(f"target name must be one of {tuple(TARGETS)}, got {backend.name!r}")
        return backend
    if backend not in TARGETS:
        raise ValueError(f"backend must be one of {tuple(TARGETS)} or a codegen.targets.Target, got {backend!r}")
    return TARGETS[backend]
