"""Code targets as objects: each owns its thresholds, capacity limits, emitter and backend.

A :class:`Target` is configuration (frozen); for one lowering it hands out a
:class:`Backend`, the object that decides everything the target does
differently (how arrays are held, whether a product is a library call, how a
fused row loop becomes code, the kernels of the finishing pass). The shared
lowering asks it instead of testing target names, and a test (or a user
tuning for a GPU) configures a target instead of patching module globals:
``sg.compile(loss, backend=dataclasses.replace(CUDA, gemm_min_work_per_row=16))``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import sympy as sp

if TYPE_CHECKING:
    from symgrad.ir import Assign, Value

    from .kernel_ir import Alloc, Kernel, Ref, Stmt
    from .lower import Lowering

__all__ = ["Target", "Backend", "CPU", "CUDA", "TARGETS", "target_of"]


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

    def backend(self, L: Lowering) -> Backend:
        """This target's backend for lowering ``L`` (the CUDA target picks a fused or a staged
        pass here, from the program's layers and sums)."""
        if self.name == "cuda":
            from .target_cuda import choose
            return choose(self, L)
        from .target_cpu import CpuBackend
        return CpuBackend(self)


class Backend(ABC):
    """What a target does differently, for one lowering (it may keep state, e.g. a staged pass's
    device arrays). Every hook is called by the shared passes."""

    #: fusion keeps costly functions out of loops that cannot vectorize (a GPU thread runs scalar
    #: code, where every merge saves memory)
    vector = True
    #: each thread keeps its current row of a per-sample value in local arrays (the row index dropped)
    rows_are_local = False
    #: per-sample outputs are written inside the fused row loop (else in loops of their own)
    row_sinks_in_loop = False

    def __init__(self, target: Target) -> None:
        self.target = target

    @abstractmethod
    def alloc(self, L: Lowering, v: Value, rows: str | None, name: str) -> Alloc | None:
        """The allocation of ``v``'s array ``name`` (``rows``: the chunk's row count if batched)."""

    @abstractmethod
    def gemm(self, L: Lowering, a: Assign) -> list[Stmt] | None:
        """The contraction ``a`` as a library call over the chunk, or None to lower it as loops."""

    @abstractmethod
    def close_rows(self, L: Lowering, fused: list[Stmt], kept: list[Value], local: set[str],
                   opaque: set[str]) -> list:
        """A fused row-loop body as the statements (or a staged pass's row stage) of phase B;
        ``kept`` are the values it still holds in arrays, ``local`` the names no statement outside
        the group reads, ``opaque`` those a non-scalar statement touches."""

    @abstractmethod
    def result(self, expr: sp.Expr, binds: tuple[tuple[sp.Symbol, Ref], ...], key: str) -> Stmt:
        """The statement that hands the objective back."""

    def copied_sinks(self, L: Lowering) -> list:
        """Flat sinks whose values the chunk kernels deliver themselves (not the finish kernel)."""
        return []

    @abstractmethod
    def chunk_kernels(self, L: Lowering, copied: list) -> tuple[Kernel, tuple[Kernel, ...], bool]:
        """The kernels of phase B: (the chunk kernel, a staged pass's row kernels, whether
        partials has one row per GPU block)."""

    def reduction(self) -> list[Stmt]:
        """The finish kernel's statements adding the chunks' partial sums into ``total``."""
        return []

    #: the finish kernel's argument holding the sums ("partials" on the CPU, "total" on a GPU)
    sums_param = "partials"
    #: the finish kernel's argument the objective is written into (None: it is returned)
    result_param: str | None = None


#: on the CPU every GEMM-shaped contraction is a BLAS call: measured side by side (one thread, this
#: project's 2-core host), loops fused into the row loop were never faster and up to 3.7x slower
#: (a 4-8-8-8-2 tanh net: 116 against 31 us per float32 gradient; W1 at 1024 rows 375 against 318 us),
#: and each inline loop nest costs ~0.1 s of Numba compile against ~0.01 s for a call
CPU = Target("cpu", gemm_min_work=0, gemm_min_depth=0)
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
