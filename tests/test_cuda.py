"""The CUDA backend: kernels against the reference interpreter in the simulator, PTX, errors without a GPU.

The simulator must be switched on before numba is imported, so the
comparison runs in a subprocess (tests/cuda_sim/compare.py) with
NUMBA_ENABLE_CUDASIM=1 on tiny batches; this process checks its numbers.
"""
from __future__ import annotations

import json
import os
import re
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
    procs = [subprocess.Popen([sys.executable, str(HERE / "cuda_sim" / "compare.py"), part], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for part in ("fused", "staged")]   # one per core: the simulator is slow
    out = {}
    for p in procs:
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, stderr[-3000:]
        out.update(json.loads(stdout))
    return out


def test_every_kind_matches_the_cpu_backend_in_the_simulator(simulated):
    kinds = ("loss", "value_and_grad", "predict", "hvp", "gnvp", "value_grad_hvp", "jacobian")
    for model in ("mlp_ce", "mlp_mse", "hinge", "bce", "tensor3", "cnn"):
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
    # a device theta: gradients and products come back as device arrays, nothing copied to the host
    assert simulated["device theta on the device"] is True
    assert simulated["device theta value_and_grad"] <= 1e-12 and simulated["device theta hvp"] <= 1e-12
    assert simulated["staged device theta"] <= 1e-12
    assert "theta is a GPU array but the model runs on the CPU" in simulated["cpu given a device theta"]
    assert "cupy.asarray(theta0)" in simulated["optimizer given a numba device theta"]


def test_block_sums_in_shared_memory(simulated):
    assert simulated["block_sums"] is True             # a small network: shared-memory block sums
    assert simulated["300 rows, 3 blocks, value_and_grad"] <= 1e-12


def test_staged_passes_with_tiled_gemms_match_the_cpu_backend(simulated):
    """Thresholds lowered so that small models run staged: row kernels and tiled GEMMs, a
    weight used twice (two GEMM terms in one sum), a GEMV, labels, several blocks."""
    assert {"value_and_grad", "hvp", "gnvp", "value_grad_hvp"} <= set(simulated["staged shared"])
    assert {"loss", "value_and_grad", "predict", "hvp"} <= set(simulated["staged gemv"])
    for kind in ("loss", "value_and_grad", "predict", "hvp", "gnvp", "value_grad_hvp", "jacobian"):
        assert simulated[f"float64 shared {kind}"] <= 1e-12, kind
    for kind in ("value_and_grad", "hvp", "predict"):
        assert simulated[f"float64 gemv {kind}"] <= 1e-12 and simulated[f"float32 gemv {kind}"] <= 1e-5, kind
    src = simulated["staged source"]
    assert "\ndef value_and_grad_chunks(" in src   # the host driver: undecorated
    assert "@cuda.jit(cache=True, fastmath=False)\ndef value_and_grad_rows1(" in src
    assert "gemm(" in src and "add_partials(partials_1[:blocks], total, slots_1)" in src
    assert "cuda.shared.array(" in src and "for r in range(cuda.grid(1), rows, cuda.gridsize(1)):" in src


def test_tiled_gemm_every_transpose_vectors_and_accumulation(simulated):
    assert simulated["gemm"] <= 1e-14


def test_staged_block_sums_too_big_for_shared_memory_go_to_device_memory_over_several_chunks(simulated):
    assert simulated["device-memory block sums, 3 chunks value_and_grad"] <= 1e-12
    src = simulated["device-memory block sums source"]
    assert "acc = partials_1[cuda.blockIdx.x]" in src and "zero(partials_1[:blocks])" in src


def test_generated_cuda_source_is_readable(simulated):
    src = simulated["source"]
    assert "@cuda.jit" in src and "cuda.grid(1)" in src and "cuda.local.array" in src
    assert "cuda.shared.array(" in src and "cuda.atomic.add(" in src and src.count("cuda.syncthreads()") == 2
    # each computed line carries its SymPy expression; tanh is libdevice's on the device
    assert re.search(r"# (tanh\S*) = tanh: tanh\(a0\)\n\s+\1\S* = math\.tanh\(", src), src
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


@pytest.mark.skipif(not _ptx_available(), reason="numba-cuda with NVVM (the 'cuda' extra) not installed")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ptx_of_a_staged_pass(dtype):
    """A 64-128-128-10 network (wide layers: tiled GEMMs): PTX of every row kernel and the finish."""
    x, y = sg.input("x", 64), sg.labels("y", 10)
    o = sg.dense(sg.dense(sg.dense(x, 128, "relu", name="l1"), 128, "relu", name="l2"), 10, name="l3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = sg.compile(sg.softmax_cross_entropy(o, y), output=o, backend="cuda", dtype=dtype)
    for kind in ("value_and_grad", "hvp"):
        low = m._lowered(kind)
        assert low.staged and low.chunks.host
        ptx = m.ptx(kind)
        assert ptx.count(".entry") == len(low.stages) + 1, kind
        assert f"kernel {kind}_rows1" in ptx and (".f32" if dtype == np.float32 else ".f64") in ptx
        assert "gemm(" in m.source(kind)


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
    """The per-sample Jacobian block of a 2200x15 weight (33000 values a thread; 15 features are
    too few for a GEMM, so the pass is not staged) exceeds a thread's local memory: jacobian is
    refused, naming the value; hvp (staged: 33000 sums do not fit in shared memory) builds."""
    x, t = sg.input("x", 15), sg.target("t", 1)
    h = sg.dense(x, 2200, "tanh", name="wide")
    o = sg.dense(h, 1, name="out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = sg.compile(sg.mse(o, t), output=o, backend="cuda")
    assert "def hvp_chunks(" in m.source("hvp")
    with pytest.raises(IRError, match="'d_wide_W'.*local arrays"):
        m.source("jacobian")
