"""The CUDA backend: kernels against the CPU backend in the simulator, PTX, and errors without a GPU.

The simulator must be switched on before numba is imported, so the
comparison runs in a subprocess (tests/cuda_sim/compare.py) with
NUMBA_ENABLE_CUDASIM=1 on tiny batches; this process checks its numbers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import symgrad as sg
from symgrad.cuda_runner import cuda_status
from symgrad.ir import IRError

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def simulated():
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, str(HERE / "cuda_sim" / "compare.py")], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_every_kind_matches_the_cpu_backend_in_the_simulator(simulated):
    kinds = ("loss", "value_and_grad", "predict", "hvp", "gnvp", "value_grad_hvp", "jacobian")
    for model in ("mlp_ce", "mlp_mse", "hinge", "bce"):
        for kind in kinds:
            assert simulated[f"float64 {model} {kind}"] <= 1e-12, (model, kind)
    for model in ("mlp_mse", "bce"):
        for kind in kinds:
            assert simulated[f"float32 {model} {kind}"] <= 1e-5, (model, kind)


def test_device_resident_data_and_optimizers(simulated):
    assert simulated["resident value_and_grad"] <= 1e-12
    assert simulated["resident predict"] <= 1e-12   # one array in, one device array out
    assert simulated["host array changed in place"] <= 1e-12
    assert simulated["lbfgs 5 iterations"] <= 1e-10
    assert "is a GPU array but the model runs on the CPU" in simulated["cpu given a device array"]


def test_block_sums_in_shared_memory_and_the_per_thread_fallback(simulated):
    assert simulated["block_sums"] is True             # a small network: shared-memory block sums
    assert simulated["300 rows, 3 blocks, value_and_grad"] <= 1e-12
    assert simulated["wide block_sums"] is False       # 7200 sums do not fit: a row of partials per thread
    assert simulated["wide value_and_grad"] <= 1e-12


def test_generated_cuda_source_is_readable(simulated):
    src = simulated["source"]
    assert "@cuda.jit" in src and "cuda.grid(1)" in src and "cuda.local.array" in src
    assert "cuda.shared.array(" in src and "cuda.atomic.add(" in src and src.count("cuda.syncthreads()") == 2
    assert "# tanh_2 = tanh: tanh(a0)" in src or "tanh" in src
    assert "np.dot" not in src and "np.empty" not in src   # no host-only calls in device code


def _mlp(backend, dtype=np.float64):
    x, y = sg.input("x", 3), sg.labels("y", 4)
    h = sg.dense(x, 5, "sigmoid", name="l1")
    o = sg.dense(h, 4, name="l2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sg.compile(sg.softmax_cross_entropy(o, y), output=o, backend=backend, dtype=dtype)


def _ptx_available() -> bool:
    try:
        from numba import config, cuda, float64
        if config.ENABLE_CUDASIM:
            return False
        cuda.compile_ptx(lambda a: None, (float64[::1],), cc=(8, 0))
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _ptx_available(), reason="numba-cuda with NVVM (the 'cuda' extra) not installed")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ptx_of_every_kind(dtype):
    m = _mlp("cuda", dtype)
    for kind in ("loss", "value_and_grad", "predict", "hvp", "gnvp", "value_grad_hvp", "jacobian"):
        ptx = m.ptx(kind)
        assert ".entry" in ptx and f"kernel {kind}_chunks" in ptx, kind
        assert (".f32" if dtype == np.float32 else ".f64") in ptx


@pytest.mark.skipif(cuda_status()[0], reason="a GPU (or the simulator) is available here")
def test_without_a_gpu_compiling_warns_and_calling_says_what_is_missing():
    with pytest.warns(RuntimeWarning, match="backend='cuda'"):
        x, t = sg.input("x", 2), sg.target("t", 1)
        m = sg.compile(sg.mse(sg.dense(x, 1, name="fc"), t), backend="cuda")
    assert "@cuda.jit" in m.source("value_and_grad")       # inspection still works
    with pytest.raises(RuntimeError, match="cannot run kernels here.*NUMBA_ENABLE_CUDASIM"):
        m.value_and_grad(m.init(0), np.zeros((3, 2)), np.zeros((3, 1)))


def test_backend_errors():
    x, t = sg.input("x", 2), sg.target("t", 1)
    loss = sg.mse(sg.dense(x, 1, name="fc"), t)
    with pytest.raises(ValueError, match="backend must be one of"):
        sg.compile(loss, backend="tpu")
    cpu = sg.compile(loss)
    with pytest.raises(ValueError, match="ptx: the model runs on the CPU"):
        cpu.ptx("loss")
    with pytest.raises(ValueError, match="to_device: the model runs on the CPU"):
        cpu.to_device(np.zeros((2, 2)))
    gpu = _mlp("cuda")
    with pytest.raises(ValueError, match="llvm: a CPU view"):
        gpu.llvm("loss")


def test_a_kind_the_cuda_backend_cannot_hold_is_refused_alone():
    """The per-sample Jacobian block of a 200x200 weight (40000 values a thread) exceeds a
    thread's local memory: jacobian is refused, naming the value; hvp still builds."""
    x, t = sg.input("x", 200), sg.target("t", 1)
    h = sg.dense(x, 200, "tanh", name="wide")
    o = sg.dense(h, 1, name="out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = sg.compile(sg.mse(o, t), output=o, backend="cuda")
    assert "def hvp_chunks(" in m.source("hvp")
    with pytest.raises(IRError, match="'d_wide_W'.*local arrays"):
        m.source("jacobian")
