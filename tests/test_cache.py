"""The on-disk kernel cache: a second process loads instead of recompiling; bad dirs never crash."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symgrad as sg
from codegen import cache

SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import symgrad as sg
    t0 = time.perf_counter()
    x = sg.input("x", 3); y = sg.labels("y", 4)
    o = sg.dense(sg.dense(x, 6, "relu", name="l1"), 4, name="l2")
    m = sg.compile(sg.softmax_cross_entropy(o, y), dtype=np.float64 if sys.argv[1] == "64" else np.float32)
    J, g = m.value_and_grad(m.init(0), np.ones((5, 3)), np.arange(5) % 4)
    print(json.dumps({"J": float(J), "cache": m.stats["cache"], "seconds": time.perf_counter() - t0,
                      "numba": m.stats["kernels_compiled"]["value_and_grad"]["numba_cache"]}))
""")


def _env(tmp: Path) -> dict:
    """The environment of a fresh process caching in ``tmp``: Numba's entries beside the source
    (its __pycache__), whatever NUMBA_CACHE_DIR the suite runs under."""
    env = dict(os.environ, SYMGRAD_CACHE_DIR=str(tmp))
    env.pop("NUMBA_CACHE_DIR", None)
    return env


def _run(tmp: Path, dtype: str) -> dict:
    env = _env(tmp)
    out = subprocess.run([sys.executable, "-c", SCRIPT, dtype], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_from_cache(tmp_path):
    first = _run(tmp_path, "64")
    second = _run(tmp_path, "64")
    assert first["cache"] == "miss" and first["numba"] == "miss"
    assert second["cache"] == "hit" and second["numba"] == "hit"
    assert second["J"] == first["J"]
    # a different dtype changes the code, hence the key
    assert _run(tmp_path, "32")["cache"] == "miss"
    assert len(list(tmp_path.glob("symgrad_k_*.py"))) == 2


def test_key_covers_everything():
    k = cache.cache_key("src", "cpu", "float64")
    assert k != cache.cache_key("src", "cpu", "float32")
    assert k != cache.cache_key("src2", "cpu", "float64")
    assert k == cache.cache_key("src", "cpu", "float64")


def test_unwritable_cache_dir_warns_and_works(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(blocker / "sub"))
    x = sg.input("x", 2)
    with pytest.warns(cache.CacheWarning, match="unusable"):
        m = sg.compile(sg.sum(x * sg.param("unwritable_a", 2, init="ones")))
    assert m.loss(m.init(0), np.ones((3, 2))) == pytest.approx(2.0)


def test_corrupted_entry_is_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    x = sg.input("x", 2)
    loss = sg.sum(x * sg.param("corrupt_a", 2, init="ones"))
    m = sg.compile(loss)
    path = Path(m.stats["cache_file"])
    good = path.read_text()
    path.write_text(good[: len(good) // 2])       # a torn write from a crashed process
    sys.modules.pop(path.stem, None)
    m2 = sg.compile(loss)
    assert path.read_text() == good and m2.stats["cache"] == "miss"
    assert m2.loss(m2.init(0), np.ones((3, 2))) == pytest.approx(2.0)
    assert not list(tmp_path.glob(".tmp_*"))      # no half-written files left behind


def test_info_and_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    x = sg.input("x", 2)
    sg.compile(sg.sum(x * sg.param("info_a", 2, init="ones")))
    assert cache.cache_info()["modules"] == 1
    assert cache.cache_clear() >= 1
    assert cache.cache_info()["modules"] == 0


def test_a_damaged_numba_cache_entry_is_rebuilt_with_a_warning(tmp_path):
    """Junk or truncated files of Numba's index and machine code, one after another: each next
    process warns, rebuilds, and gets the same result; the rebuilt entry then loads."""
    first = _run(tmp_path, "64")
    pyc = tmp_path / "__pycache__"
    env = _env(tmp_path)
    for damage in ("junk index", "truncated index", "junk machine code", "empty machine code"):
        files = sorted(pyc.glob("*.nbi" if "index" in damage else "*.nbc"))
        assert files, damage
        for f in files:
            if damage.startswith("junk"):
                with open(f, "r+b") as fh:
                    fh.seek(8)
                    fh.write(b"\x00junk\xff" * 4)
            else:
                f.write_bytes(f.read_bytes()[:3] if "index" in damage else b"")
        out = subprocess.run([sys.executable, "-W", "always", "-c", SCRIPT, "64"], env=env, capture_output=True,
                             text=True, check=True)
        assert "CacheWarning" in out.stderr and "recompiled" in out.stderr, (damage, out.stderr)
        again = json.loads(out.stdout.strip().splitlines()[-1])
        assert again["J"] == first["J"] and again["numba"] == "miss", damage
    assert _run(tmp_path, "64")["numba"] == "hit"      # the rebuilt entry is good
