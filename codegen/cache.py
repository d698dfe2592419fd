"""Content-addressed on-disk module cache for generated kernels.

The generated source is written atomically (temp file + rename, under a file
lock) to ``$SYMGRAD_CACHE_DIR/<key>.py``, imported as a real module and
registered in ``sys.modules``, so Numba's ``cache=True`` can keep the machine
code next to it and a second process loads instead of recompiling. A cache
directory that cannot be written, or a corrupted entry, costs a recompile and
a warning, never a crash.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterator

__all__ = ["cache_dir", "cache_key", "load_source", "cache_info", "cache_clear", "CacheWarning",
           "numba_cache_failed", "flush_numba_cache"]

_PREFIX = "symgrad_k_"


class CacheWarning(UserWarning):
    """The kernel cache could not be used; the kernel was built elsewhere."""


def cache_dir() -> Path:
    """``$SYMGRAD_CACHE_DIR``, else the user cache dir (``$XDG_CACHE_HOME`` or ~/.cache)/symgrad."""
    env = os.environ.get("SYMGRAD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "symgrad"


def cache_key(*parts: str) -> str:
    """SHA-256 over everything that changes the machine code."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: rename is still atomic
        yield
        return
    with open(directory / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _import(path: Path, modname: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(modname, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


def _store(directory: Path, key: str, source: str) -> tuple[Path, bool]:
    """Make ``directory/<key>.py`` hold ``source``; returns (path, it was already there)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{_PREFIX}{key[:40]}.py"
    with _locked(directory):
        try:
            if path.read_text(encoding="utf-8") == source:
                return path, True
        except (OSError, UnicodeDecodeError):
            pass
        _write_atomic(path, source)
        return path, False


def load_source(source: str, key: str) -> tuple[ModuleType, bool, Path]:
    """Import ``source`` from the cache (writing it first if needed).

    Returns (module, source was cached, file path). Falls back to a private
    temporary directory, with a :class:`CacheWarning`, when the cache
    directory is unusable.
    """
    modname = f"{_PREFIX}{key[:40]}"
    loaded = sys.modules.get(modname)
    if loaded is not None and getattr(loaded, "__file__", None):
        return loaded, True, Path(loaded.__file__)
    directory = cache_dir()
    try:
        path, hit = _store(directory, key, source)
    except OSError as e:  # unwritable or not a directory
        warnings.warn(f"symgrad kernel cache at {directory} is unusable ({type(e).__name__}: {e}); "
                      "compiling in a temporary directory instead", CacheWarning, stacklevel=3)
        path, hit = _store(Path(tempfile.mkdtemp(prefix="symgrad_cache_")), key, source)
    try:
        return _import(path, modname), hit, path
    except Exception:
        # never leave a module behind that does not import
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def numba_cache_failed(error: BaseException) -> bool:
    """Did ``error`` come from reading Numba's on-disk cache (a damaged index or machine-code file:
    pickle errors, MemoryError, EOFError, ... raised inside ``numba.core.caching``)?"""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            if Path(tb.tb_frame.f_code.co_filename).parts[-3:] == ("numba", "core", "caching.py"):
                return True
            tb = tb.tb_next
        e = e.__cause__ or e.__context__
    return False


def flush_numba_cache(dispatchers: list[object], error: BaseException) -> None:
    """Empty the Numba cache index of each dispatcher (written anew, atomically), so the next call
    compiles and saves fresh machine code instead of reading the damaged entry; warns."""
    for d in dispatchers:
        cache = getattr(d, "_cache", None)
        if cache is not None:
            cache.flush()
    names = ", ".join(getattr(d, "__name__", "?") for d in dispatchers)
    warnings.warn(f"symgrad: Numba's cached machine code for {names} could not be read "
                  f"({type(error).__name__}: {error}); the entry was removed and the kernels are being "
                  "recompiled", CacheWarning, stacklevel=4)


def cache_info() -> dict[str, object]:
    """Location, number of kernel modules and total size of the cache."""
    d = cache_dir()
    files = sorted(d.glob(f"{_PREFIX}*.py")) if d.is_dir() else []
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) if d.is_dir() else 0
    return {"path": str(d), "modules": len(files), "bytes": size}


def cache_clear() -> int:
    """Delete every cached kernel module and Numba's cached machine code; returns files removed."""
    d = cache_dir()
    if not d.is_dir():
        return 0
    n = 0
    for f in d.glob(f"{_PREFIX}*.py"):
        f.unlink()
        n += 1
    pyc = d / "__pycache__"
    if pyc.is_dir():
        n += sum(1 for _ in pyc.iterdir())
        shutil.rmtree(pyc)
    return n
