"""Shared plumbing for the benchmark scripts: a clean process, pinned threads, fair timing.

Importing this module must not import NumPy: :func:`reexec_clean_env` has to
run before any BLAS library is loaded, because OpenBLAS reads its environment
once, at load time.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Sequence

#: Set on these machines; each halves OpenBLAS GEMM speed (wrong core type / cache size).
BAD_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: Idle OpenBLAS workers spin 2**28 cycles (~0.1 s) by default, stealing the cores from
#: whichever implementation runs next (PyTorch W1: 1.5 ms -> 40-90 ms); 2**22 is ~2 ms.
BLAS_THREAD_TIMEOUT = ("OPENBLAS_THREAD_TIMEOUT", "22")
_MARK = "_SYMGRAD_BENCH_CLEAN"


def reexec_clean_env(threads: int) -> None:
    """Re-exec this interpreter once without BAD_BLAS_VARS, with BLAS_THREAD_TIMEOUT, on `threads` CPUs.

    The CPU affinity mask is inherited by every thread pool created later
    (OpenBLAS, Numba, OpenMP, XLA's Eigen pool), which is the only pin that
    reaches all of them; XLA is also told to run single-threaded when
    threads == 1.
    """
    if _MARK in os.environ:
        return
    env = dict(os.environ)
    removed = [f"{k}={env.pop(k)}" for k in BAD_BLAS_VARS if k in env]
    env[_MARK] = ", ".join(removed) or "none were set"
    env.setdefault(*BLAS_THREAD_TIMEOUT)
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
    if threads > (os.cpu_count() or 1):
        env["NUMBA_NUM_THREADS"] = str(threads)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    sys.stdout.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def arg_parser(doc: str, ids: str, threads: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark script shares: --threads, --quick, --only IDS, --json."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if threads:
        p.add_argument("--threads", type=int, default=2, help="threads for every implementation (default 2)")
    p.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    p.add_argument("--only", default="", help=f"comma-separated ids: {ids}")
    p.add_argument("--json", metavar="PATH", help="also write the raw numbers here")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if getattr(args, "threads", 1) < 1:
        p.error("--threads must be >= 1")
    return args


def env_changes() -> str:
    """What :func:`reexec_clean_env` changed, for the report header."""
    if _MARK not in os.environ:
        return "environment left as is (not re-executed)"
    timeout = BLAS_THREAD_TIMEOUT[0]
    return (f"removed from the environment: {os.environ[_MARK]}; "
            f"{timeout}={os.environ.get(timeout, '(unset)')}")


def optional_import(name: str) -> tuple[Any | None, str]:
    """Import a peer library if installed: (module, "") or (None, why not)."""
    try:
        return __import__(name), ""
    except Exception as exc:  # a broken install must skip the peer, not the benchmark
        return None, f"{name} not importable ({type(exc).__name__}: {exc})"


class Threads:
    """Pins Numba, PyTorch and BLAS thread counts and switches BLAS per implementation.

    Numba's `np.dot` inside `@njit` calls SciPy's OpenBLAS, NumPy calls its
    own copy: both are loaded before the controller is built so that a BLAS
    limit reaches both.
    """

    def __init__(self, threads: int, torch: Any | None = None) -> None:
        import numba
        import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS Numba's np.dot uses)
        from threadpoolctl import ThreadpoolController

        self.threads = threads
        numba.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        self._ctl = ThreadpoolController()

    def blas(self, n: int | None) -> ContextManager[Any]:
        """Limit every loaded BLAS to `n` threads inside the block (None: leave as is)."""
        return nullcontext() if n is None else self._ctl.limit(limits=n, user_api="blas")

    def blas_libraries(self) -> list[str]:
        """One line per loaded BLAS/OpenMP library: API, version, kernel, file, threads."""
        return [f"{d.get('internal_api')} {d.get('version')} kernel={d.get('architecture', '-')} "
                f"threads={d.get('num_threads')} ({os.path.basename(d.get('filepath', '?'))})"
                for d in self._ctl.info()]


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def busy_cpus(seconds: float = 1.0) -> float:
    """CPUs' worth of work other processes did while this one slept for `seconds` (Linux /proc/stat).

    Unlike the load average, this does not remember this process's own earlier work.
    """
    def ticks() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)  # busy (all but idle, iowait), total

    b0, t0 = ticks()
    time.sleep(seconds)
    b1, t1 = ticks()
    return (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1)


@dataclass
class Case:
    """One implementation to time: a no-argument call and the BLAS threads it runs with."""

    fn: Callable[[], object]
    blas_threads: int | None = None
    samples: list[float] = field(default_factory=list)
    inner: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def time_interleaved(cases: dict[str, Case], threads: Threads, rounds: int, block_s: float,
                     pause_s: float = 0.02) -> None:
    """Fill each case's `samples` with per-call seconds, cases interleaved round by round.

    Interleaving spreads machine noise (turbo, neighbours) over all cases
    alike; each sample is the mean over a block of calls long enough for the
    clock; the start of the order rotates every round; a pause between blocks
    lets the previous case's spinning OpenMP/BLAS workers go idle.
    """
    for case in cases.values():  # calibrate: double the block until it lasts block_s / 4
        with threads.blas(case.blas_threads):
            case.fn()
            n = 1
            while True:
                t0 = time.perf_counter()
                for _ in range(n):
                    case.fn()
                dt = time.perf_counter() - t0
                if dt >= block_s / 4 or n >= 1 << 16:
                    break
                n *= 2
        case.inner = max(1, min(1 << 16, round(n * block_s / max(dt, 1e-9))))
    names = list(cases)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            case = cases[name]
            fn, n = case.fn, case.inner
            time.sleep(pause_s)
            with threads.blas(case.blas_threads):
                gc.disable()
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                dt = time.perf_counter() - t0
                gc.enable()
            case.samples.append(dt / n)


def fmt_time(seconds: float | None) -> str:
    """Microseconds below 1 ms, milliseconds below 10 s, else seconds."""
    if seconds is None:
        return "–"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs" if seconds < 1e-4 else f"{seconds * 1e6:.0f} µs"
    if seconds < 10:
        return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.1f} s"


def fmt_ratio(num: float | None, den: float | None) -> str:
    return "–" if num is None or den is None else f"{num / den:.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table: first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
