"""Runs a generated kernel over the batch: chunking, threads, BLAS pinning.

The generated ``<kind>_chunks`` function is compiled ``nogil``; the chunks of a
call are split into one contiguous range per thread (``numba.get_num_threads()``
threads), each range runs in its own thread, and ``<kind>`` then adds the
per-chunk partial sums in chunk order. Chunk boundaries depend only on N and
the accumulator size, so results are bitwise identical for any thread count.

Why threads here and not ``prange``: a Numba ``parallel=True`` function that
holds (or calls) the fused body re-optimizes it several times; compiling one
3-layer MLP took 20-30 s that way against a few seconds for the serial body.

Threads do not always pay: waking a pool thread costs 70-90 µs on these
machines, and two threads on two virtual cores ran W1 (1024 rows, 420 µs
alone) in 550 µs, while W2 went from 830 to 680 µs. So for each batch size
and thread count the runner times its first calls both ways, alternating,
and keeps the faster (``AUTO_THREADS``). Either way the chunks and the sums
are the same, so this changes speed, never results.

BLAS is pinned to one thread during the call: BLAS threads beside our threads
oversubscribe the cores (a 0.17 ms kernel became 16 ms) and would make sums
depend on the thread count.
"""
from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numba
import numpy as np

from .runtime import chunk_rows

__all__ = ["KernelRunner", "blas_pinned", "AUTO_THREADS", "TUNE_CALLS"]

_chunk_rows = chunk_rows.py_func
#: time the first calls of each (batch size, threads) on one thread and on all, and keep the
#: faster; False: always split over all threads
AUTO_THREADS = True
#: calls timed each way before the choice (the median decides, so one slow call, e.g. the
#: one that compiles, does not)
TUNE_CALLS = 3
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS,
                                       thread_name_prefix="symgrad")
        return _pool


class _BlasPin:
    """Set every loaded OpenBLAS to one thread for the duration of a call.

    The libraries are found once (threadpoolctl); a call then costs two C calls
    per library through their own ``openblas_get/set_num_threads``.
    """

    def __init__(self) -> None:
        self._fns: list[tuple[Callable[[], int], Callable[[int], None]]] | None = None
        self._saved: list[tuple[Callable[[int], None], int]] = []

    def _load(self) -> list[tuple[Callable[[], int], Callable[[int], None]]]:
        if self._fns is None:
            fns = []
            try:
                from threadpoolctl import ThreadpoolController
                for c in ThreadpoolController().lib_controllers:
                    if c.user_api == "blas" and c.internal_api == "openblas":
                        pre, suf = c._symbol_prefix, c._symbol_suffix
                        get = getattr(c.dynlib, f"{pre}openblas_get_num_threads{suf}")
                        set_ = getattr(c.dynlib, f"{pre}openblas_set_num_threads{suf}")
                        fns.append((get, set_))
            except Exception:  # threadpoolctl missing or unlike this version: nothing to pin
                fns = []
            self._fns = fns
        return self._fns

    def __enter__(self) -> None:
        saved = []
        for get, set_ in self._load():
            n = get()
            if n != 1:
                set_(1)
                saved.append((set_, n))
        self._saved = saved

    def __exit__(self, *exc: object) -> None:
        for set_, n in self._saved:
            set_(n)


blas_pinned = _BlasPin()


class KernelRunner:
    """Calls ``chunks`` over the batch (in threads) and then ``finish``."""

    def __init__(self, chunks: Callable | None, finish: Callable, n_acc: int, dtype: np.dtype,
                 needs_finish: bool) -> None:
        self.chunks, self.finish, self.n_acc, self.dtype = chunks, finish, n_acc, dtype
        self.needs_finish = needs_finish
        self._timed: dict[tuple[int, int], tuple[list[float], list[float]]] = {}   # serial, split
        self._split: dict[tuple[int, int], bool] = {}

    def _use_threads(self, n: int, threads: int) -> tuple[bool, list[float] | None]:
        """Split over ``threads`` threads? And the list to append this call's time to, while
        the choice for (n, threads) is still being timed."""
        if not AUTO_THREADS:
            return True, None
        key = (n, threads)
        split = self._split.get(key)
        if split is not None:
            return split, None
        serial, threaded = self._timed.setdefault(key, ([], []))
        if min(len(serial), len(threaded)) >= TUNE_CALLS:
            split = self._split[key] = statistics.median(threaded) < statistics.median(serial)
            return split, None
        return (True, threaded) if len(threaded) < len(serial) else (False, serial)

    def __call__(self, n: int, lead: tuple, rows_out: tuple = (), flat_out: tuple = ()) -> Any:
        """``n`` samples; ``lead`` = (theta, [v,] data...); ``rows_out`` per-sample output arrays,
        ``flat_out`` the others (e.g. the gradient)."""
        if self.chunks is None:
            with blas_pinned:
                return self.finish(*lead, *flat_out)
        chunk = _chunk_rows(n, self.n_acc)
        n_chunks = (n + chunk - 1) // chunk
        partials = np.empty((n_chunks, self.n_acc), dtype=self.dtype)
        threads = min(numba.get_num_threads(), n_chunks) if n_chunks > 1 else 1   # asking costs 3 µs
        split, timing = self._use_threads(n, threads) if threads > 1 else (False, None)
        with blas_pinned:
            t0 = time.perf_counter()
            if not split:
                self.chunks(*lead, *rows_out, partials, 0, n_chunks)
            else:
                bounds = [n_chunks * t // threads for t in range(threads + 1)]
                futures = [_executor().submit(self.chunks, *lead, *rows_out, partials, c0, c1)
                           for c0, c1 in zip(bounds[:-1], bounds[1:]) if c1 > c0]
                for f in futures:
                    f.result()
            if timing is not None:
                timing.append(time.perf_counter() - t0)
            if not self.needs_finish:
                return None
            if self.n_acc:
                return self.finish(*lead, *flat_out, partials)
            return self.finish(*lead, *flat_out)
