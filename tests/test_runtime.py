"""The runtime helpers generated kernels call: stability and stated accuracy."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from symgrad.runtime import chunk_rows, expm1, sigmoid, softplus, tanh, xlogy


@njit(error_model="numpy")
def _tanh(x, out):
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@njit(error_model="numpy")
def _expm1(x, out):
    for i in range(x.shape[0]):
        out[i] = expm1(x[i])


def _grid(dtype: type, top: float) -> np.ndarray:
    tiny = np.finfo(dtype).tiny
    small = np.logspace(np.log10(tiny), np.log10(top), 2000)
    return np.concatenate([np.linspace(-30, 30, 20001), small, -small, [0.0, -0.0, 800.0, -800.0]]).astype(dtype)


#: stated accuracy of the libm-free helpers, relative to libm in float64
RTOL = {np.float64: 2e-15, np.float32: 2e-7}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_accuracy_against_libm(dtype):
    x = _grid(dtype, 300.0)
    got = np.empty_like(x)
    _tanh(x, got)
    assert got.dtype == dtype   # float32 in, float32 arithmetic out
    want = np.tanh(x.astype(np.float64))
    nz = want != 0
    assert np.max(np.abs(got[nz] - want[nz]) / np.abs(want[nz])) < RTOL[dtype]
    assert np.all(got[~nz] == 0) and np.all(np.abs(got) <= 1)


@pytest.mark.parametrize("dtype, top", [(np.float64, 700.0), (np.float32, 88.0)])
def test_expm1_accuracy_against_libm(dtype, top):
    small = np.logspace(np.log10(np.finfo(dtype).tiny), 0, 2000)
    y = np.concatenate([np.linspace(-top, top, 20000), small, -small]).astype(dtype)
    got = np.empty_like(y)
    _expm1(y, got)
    want = np.expm1(y.astype(np.float64))
    assert np.max(np.abs(got - want) / np.abs(want)) < RTOL[dtype]


def test_python_calls_use_the_float64_form():
    assert tanh(0.5) == pytest.approx(math.tanh(0.5), rel=2e-15)
    assert expm1(1e-10) == pytest.approx(math.expm1(1e-10), rel=2e-15)


@pytest.mark.parametrize("x", [-800.0, -40.0, 0.0, 40.0, 800.0])
def test_stable_helpers(x):
    s = sigmoid(x)
    assert 0 <= s <= 1 and s == pytest.approx(1 / (1 + math.exp(-x)) if x > -700 else 0.0)
    assert math.isfinite(softplus(x)) and softplus(x) == pytest.approx(max(x, 0) + math.log1p(math.exp(-abs(x))))
    assert xlogy(0.0, 0.0) == 0.0 and xlogy(2.0, 3.0) == pytest.approx(2 * math.log(3))


def test_chunk_rows_depends_on_n_only():
    for n in (1, 32, 64, 65, 256, 1000, 10000):
        c = chunk_rows(n, 100)
        n_chunks = -(-n // c)
        assert 1 <= n_chunks <= 16 and c >= min(n, 64) and (n_chunks - 1) * c < n


def test_chunk_rows_keeps_threads_busy_for_wide_networks():
    """A 1.3M-entry accumulator (W3's gradient and HVP) still splits a 512-row batch in 2 chunks."""
    for n in (129, 512, 4096):
        c = chunk_rows(n, 1_339_414)
        assert -(-n // c) >= 2
    assert chunk_rows(128, 1_339_414) == 128   # a small batch: one chunk, accumulators zeroed once


def test_blas_helpers_match_numpy():
    from symgrad.runtime import BLAS_HELPERS, add_into, dot_nn, dot_nt, dot_tn, dot_tt, sum_rows
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 4))
    acc = np.full(30, np.nan)
    out = acc[5:25].reshape((5, 4))     # an accumulator view, as kernels pass: written in place
    for f, x, y in ((dot_nn, a, b), (dot_nt, a, b.T.copy()), (dot_tn, a.T.copy(), b), (dot_tt, a.T.copy(), b.T.copy())):
        out[:] = np.nan
        f(x, y, out)
        np.testing.assert_allclose(acc[5:25].reshape((5, 4)), a @ b, rtol=1e-14)
    assert np.isnan(acc[:5]).all() and np.isnan(acc[25:]).all()
    assert set(BLAS_HELPERS.values()) == {"dot_nn", "dot_nt", "dot_tn", "dot_tt"}
    out = np.ones((5, 4))
    add_into(out, a @ b)
    np.testing.assert_allclose(out, 1 + a @ b, rtol=1e-14)
    p = rng.standard_normal((7, 6))
    want = p[0].copy()
    for row in p[1:]:
        want += row                     # row order: the bits sum_rows must reproduce
    assert np.array_equal(sum_rows(p), want)


def test_float32_forms_compute_in_float32():
    """No silent promotion to float64: the float32 forms keep float32 throughout (vector lanes)."""
    from symgrad.runtime import _F32
    for f in _F32:
        assert f(np.float32(0.5)) == f(np.float32(0.5))   # compiled for float32
        assert [str(s.return_type) for s in f.nopython_signatures] == ["float32"]


def test_generated_code_imports_exactly_what_the_runtimes_export():
    import ast

    import symgrad.runtime as runtime
    from codegen.emit_cpu import import_line
    from symgrad.names import CPU_RUNTIME, CUDA_RUNTIME, RESERVED
    assert set(CPU_RUNTIME) <= set(runtime.__all__)
    cuda_src = (Path(runtime.__file__).parent / "cuda_runtime.py").read_text()   # no numba.cuda import
    exported = ast.literal_eval(next(n.value for n in ast.parse(cuda_src).body if isinstance(n, ast.Assign)
                                     and getattr(n.targets[0], "id", "") == "__all__"))
    assert set(CUDA_RUNTIME) <= set(exported)
    assert set(CPU_RUNTIME) | set(CUDA_RUNTIME) <= RESERVED
    line = import_line("symgrad.runtime", CPU_RUNTIME)
    assert ast.parse(line).body[0].names[-1].name == CPU_RUNTIME[-1]


def test_view_is_a_reshaped_window_that_shares_memory_and_refuses_other_layouts():
    import numba

    from symgrad.runtime import view

    @numba.njit
    def take(flat, start):
        return view(flat, start, (2, 3))

    flat = np.arange(10.0)
    w = take(flat, 3)
    np.testing.assert_array_equal(w, flat[3:9].reshape(2, 3))
    w[1, 2] = -1.0
    assert flat[8] == -1.0 and w.flags.c_contiguous      # a view, not a copy
    with pytest.raises(numba.core.errors.TypingError):
        take(np.arange(20.0)[::2], 0)                     # not C-contiguous: no view to give


def test_add_into_and_sum_rows_add_in_order():
    from symgrad.runtime import add_into, sum_rows
    p = np.random.default_rng(0).normal(size=(3, 5))
    assert np.array_equal(sum_rows(p), (p[0] + p[1]) + p[2])
    out, a = p[:2, :3].copy(), p[1:, 2:]
    want = out + a
    add_into(out, a)
    assert np.array_equal(out, want)


def test_allocation_helpers_and_typed_tanh_forms() -> None:
    from symgrad.runtime import EMPTY, empty_f32, empty_f64, empty_i64, tanh_f32, tanh_f64
    for helper, dt in ((empty_f64, np.float64), (empty_f32, np.float32), (empty_i64, np.int64)):
        a = helper(7)
        assert a.shape == (7,) and a.dtype == dt and a.flags.c_contiguous
    assert set(EMPTY.values()) == {"empty_f64", "empty_f32", "empty_i64"}

    @njit
    def both(x32, x64):  # type: ignore[no-untyped-def]
        return tanh_f32(x32), tanh_f64(x64)

    a, b = both(np.float32(0.5), 0.5)
    assert str(both.nopython_signatures[0].return_type) == "Tuple(float32, float64)"
    assert a == pytest.approx(math.tanh(0.5), rel=2e-7)
    assert b == pytest.approx(math.tanh(0.5), rel=2e-15)
