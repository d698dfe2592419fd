"""Helpers that generated kernels call.

The stable scalar functions are the runtime forms of the functions in
:mod:`symgrad.functions`, small enough for LLVM to inline into the calling
loop. The array helpers (products, in-place sums) exist for compile time:
Numba specializes ``np.dot`` and array ``+=`` for every operand layout,
0.2-0.5 s each, in every process and every model that uses them. Compiled
here, with ``cache=True``, they are built once per machine and loaded from
Numba's cache afterwards (W2's chunk kernel: 2.6 s cold, 1.7 s with the
helpers cached). The generated module imports all of them by name.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import lowering
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import register_pass
from numba.core.typed_passes import NativeLowering
from numba.extending import intrinsic, overload

__all__ = ["sigmoid", "softplus", "xlogy", "tanh", "tanh_f64", "tanh_f32", "expm1", "chunk_rows", "view", "dot_rows", "dot_nn",
           "dot_nt", "dot_tn", "dot_tt", "empty_f64", "empty_f32", "empty_i64", "add_into", "sum_rows", "NoInline",
           "BLAS_HELPERS", "EMPTY"]


@intrinsic
def _pow2(typingctx, k):  # type: ignore[no-untyped-def]
    """2.0**k by writing the exponent bits (vectorizable): an int64 k in [-1022, 1023] gives a
    float64, an int32 k in [-126, 127] a float32."""
    wide = k.bitwidth == 64
    sig = (types.float64 if wide else types.float32)(k)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        it = ir.IntType(64 if wide else 32)
        bias, mantissa = (1023, 52) if wide else (127, 23)
        bits = builder.shl(builder.add(args[0], ir.Constant(it, bias)), ir.Constant(it, mantissa))
        return builder.bitcast(bits, ir.DoubleType() if wide else ir.FloatType())
    return sig, codegen


def _libm_free(ft: type, it: type, degree: int, ln2_hi: float, ln2_lo: float, clamp: float) -> tuple[Any, Any]:
    """expm1 and tanh in float type ``ft`` (exponents in int type ``it``), branch-free and
    libm-free, so LLVM vectorizes the loops around them (3x faster than math.tanh here).

    expm1: Cody-Waite reduction y = k ln2 + r, |r| <= ln2/2 (``ln2_hi`` has
    trailing zero bits, so k ln2_hi is exact; ``ln2_lo`` = ln2 - ln2_hi), e^r - 1 by its Taylor series to
    r^``degree`` (truncation below the type's epsilon) and 2^k (e^r - 1) + (2^k - 1).
    tanh(x) = e/(e+2) with e = expm1(2|x|), odd; |x| >= ``clamp`` gives +-1, as
    libm does. The float32 forms run in float32 arithmetic: twice the vector
    lanes of float64.
    """
    log2e, half, one, two = ft(1.4426950408889634), ft(0.5), ft(1), ft(2)
    hi, lo = ft(ln2_hi), ft(ln2_lo)
    coef = tuple(ft(1 / math.factorial(n)) for n in range(degree, 1, -1))   # 1/degree!, ..., 1/2!
    clamp_ = ft(clamp)

    @njit(cache=True, error_model="numpy")
    def expm1(y):  # type: ignore[no-untyped-def]
        k = ft(math.floor(y * log2e + half))   # (math.floor gives an int64: keep float32 float32)
        r = (y - k * hi) - k * lo
        c = coef[0]
        for a in coef[1:]:
            c = c * r + a
        q = r * (one + r * c)
        p = _pow2(it(k))
        return p * q + (p - one)

    @njit(cache=True, error_model="numpy")
    def tanh(x):  # type: ignore[no-untyped-def]
        ax = min(abs(x), clamp_)
        e = expm1(two * ax)
        t = e / (e + two)
        return t if x >= 0 else -t

    return expm1, tanh


_F64 = _libm_free(np.float64, np.int64, 12, 0.6931471803691238, 1.9082149292705877e-10, 20.0)
_F32 = _libm_free(np.float32, np.int32, 7, 0.693145751953125, 1.4286068203094172e-06, 9.0)
#: the typed forms generated code calls directly (an overload's implementation is compiled again
#: in every process, ~0.2 s; these load from Numba's cache)
tanh_f64, tanh_f32 = _F64[1], _F32[1]


def expm1(y):  # type: ignore[no-untyped-def]
    """exp(y) - 1 for y in [-708, 709] (float32: [-87, 88]) without a libm call.

    Max relative error against libm: 1e-15 in float64, 2e-7 in float32
    (tests/test_runtime.py). In kernels the form follows the argument's type.
    """
    return _F64[0](y)




def tanh(x):  # type: ignore[no-untyped-def]
    """tanh without a libm call (see ``_libm_free``); in kernels the form follows the argument's
    type. Max relative error against libm: 1e-15 in float64, 2e-7 in float32."""
    return _F64[1](x)


def _typed(which: int) -> Any:
    def pick(x):  # type: ignore[no-untyped-def]
        f = (_F32 if isinstance(x, types.Float) and x.bitwidth == 32 else _F64)[which]
        return lambda x: f(x)
    return pick


overload(expm1)(_typed(0))
overload(tanh)(_typed(1))


@njit(cache=True, inline="always")
def sigmoid(x):  # type: ignore[no-untyped-def]
    """1/(1+exp(-x)) without overflow: exp is only taken of a non-positive number."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def softplus(x):  # type: ignore[no-untyped-def]
    """log(1+exp(x)) = max(x, 0) + log1p(exp(-|x|))."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(cache=True, inline="always")
def xlogy(x, y):  # type: ignore[no-untyped-def]
    """x*log(y), 0 where x == 0."""
    if x == 0:
        return 0.0 * y
    return x * math.log(y)


@njit(cache=True)
def chunk_rows(n, n_acc):  # type: ignore[no-untyped-def]
    """Rows per batch chunk, from the batch size and accumulator length alone.

    Never from the thread count, so sums are reproducible bitwise. Aims at 128
    rows or more and at most 16 chunks: a chunk's BLAS products get faster
    with more rows, and its setup is paid once (W2 at batch 256: 830 µs in 4
    chunks of 64 rows, 680 µs in 2 of 128, on 2 threads). A large
    accumulator (zeroed, added into and reduced once per chunk) asks for up to
    n_acc/2048 rows, but never fewer than 2 chunks once the batch has more
    than 128 rows: a single chunk leaves every other thread idle. (W3's
    value_grad_hvp, a 1.3M accumulator at batch 512, ran on one thread;
    forcing 4 chunks made its hvp 30% slower on 2 cores, the extra
    accumulator traffic.) The rows are then spread evenly.
    """
    want = max(128, (n + 15) // 16, min(n_acc // 2048, (n + 1) // 2))
    n_chunks = max(1, (n + want - 1) // want)
    return (n + n_chunks - 1) // n_chunks


@intrinsic
def view(typingctx, flat, start, shape):  # type: ignore[no-untyped-def]
    """``flat[start:start + prod(shape)].reshape(shape)`` of a C-contiguous 1-D array, without a
    copy or a check: a parameter's (or an accumulator slot's) view in a kernel.

    Inline IR that only fills in the array's fields: Numba's slice and ``reshape`` cost ~50 ms of
    compile per parameter (a reshape is specialized for every literal shape), this ~15 ms. The
    generated code asks only for views that fit (the layout is the model's).
    """
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"
            and isinstance(start, types.Integer) and isinstance(shape, types.BaseTuple)
            and all(isinstance(d, types.Integer) for d in shape)):
        return None
    nd = len(shape)
    ret = types.Array(flat.dtype, nd, "C")

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        from numba.core.imputils import impl_ret_borrowed
        from numba.np.arrayobj import make_array, populate_array
        src = make_array(sig.args[0])(context, builder, args[0])
        first = context.cast(builder, args[1], sig.args[1], types.intp)
        dims = [context.cast(builder, builder.extract_value(args[2], k), sig.args[2][k], types.intp)
                for k in range(nd)]
        strides, step = [], src.itemsize
        for d in reversed(dims):
            strides.insert(0, step)
            step = builder.mul(step, d)
        out = make_array(sig.return_type)(context, builder)
        populate_array(out, data=builder.gep(src.data, [first]), shape=dims, strides=strides,
                       itemsize=src.itemsize, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, sig.return_type, out._getvalue())
    return ret(flat, start, shape), codegen


# --- the compiler pipeline of a module's loop functions -------------------------------------

class _NoInlineLower(lowering.Lower):
    def lower_normal_function(self, fndesc):  # type: ignore[no-untyped-def]
        super().lower_normal_function(fndesc)
        self.function.attributes.add("noinline")


@register_pass(mutates_CFG=True, analysis_only=False)
class _NoInlineLowering(NativeLowering):
    _name = "symgrad_noinline_lowering"

    @property
    def lowering_class(self):  # type: ignore[no-untyped-def]
        return _NoInlineLower


class NoInline(CompilerBase):
    """Numba's nopython pipeline, with the function marked ``noinline`` for LLVM: the generated
    loop functions (codegen.outline) are compiled with it. Numba links a callee's LLVM IR into
    every caller, and LLVM would inline a loop function into its kernel once per call, rebuilding
    the one big function whose passes take superlinear time."""

    def define_pipelines(self):  # type: ignore[no-untyped-def]
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.passes = [(_NoInlineLowering if p is NativeLowering else p, d) for p, d in pm.passes]
        pm.finalize()
        return [pm]


# --- array helpers: compiled once per machine (see the module docstring) -------------------

@njit(cache=True, nogil=True, pipeline_class=NoInline)
def dot_nn(a, b, out):  # type: ignore[no-untyped-def]
    """out = a @ b (BLAS, written in place: no temporary)."""
    np.dot(a, b, out)


@njit(cache=True, nogil=True, pipeline_class=NoInline)
def dot_nt(a, b, out):  # type: ignore[no-untyped-def]
    """out = a @ b.T (BLAS reads b transposed in place)."""
    np.dot(a, b.T, out)


@njit(cache=True, nogil=True, pipeline_class=NoInline)
def dot_tn(a, b, out):  # type: ignore[no-untyped-def]
    """out = a.T @ b (BLAS reads a transposed in place)."""
    np.dot(a.T, b, out)


@njit(cache=True, nogil=True, pipeline_class=NoInline)
def dot_tt(a, b, out):  # type: ignore[no-untyped-def]
    """out = a.T @ b.T."""
    np.dot(a.T, b.T, out)


@njit(cache=True, nogil=True, pipeline_class=NoInline)
def _dot_rows_flat(a, b, out, m, k, n, ta, tb, mode):  # type: ignore[no-untyped-def]
    """``dot_rows`` on the flat (1-D) operands: compiled once per float type (its BLAS branches
    take seconds), whatever the ranks of the arrays the kernels pass."""
    rows = out.size // (m * n) if mode != 2 else a.size // (m * k)
    am, ak = (k, m) if ta else (m, k)
    bk, bn = (n, k) if tb else (k, n)
    A = a.reshape((rows if mode != 0 else 1, am, ak))
    B = b.reshape((rows if mode != 1 else 1, bk, bn))
    O = out.reshape((rows if mode != 2 else 1, m, n))
    tmp = np.empty((m, n) if mode == 2 else (1, 1), dtype=out.dtype)   # mode 2's per-row product
    for r in range(rows):
        x = A[r if mode != 0 else 0]
        y = B[r if mode != 1 else 0]
        dst = tmp if mode == 2 else O[r]
        if ta and tb:
            np.dot(x.T, y.T, dst)
        elif ta:
            np.dot(x.T, y, dst)
        elif tb:
            np.dot(x, y.T, dst)
        else:
            np.dot(x, y, dst)
        if mode == 2:
            O[0] += tmp


@njit(cache=True, nogil=True, pipeline_class=NoInline)
def dot_rows(a, b, out, m, k, n, ta, tb, mode):  # type: ignore[no-untyped-def]
    """Products of flattened operands, one per row of the batched ones (BLAS each): row r's
    ``out_r (m, n) = op(a_r) @ op(b_r)``, ``op`` a transpose where ``ta`` / ``tb`` (``a_r`` stored
    (k, m), ``b_r`` (n, k)). ``mode``: 0 ``a`` one matrix, ``b`` and ``out`` per row; 1 ``a`` and
    ``out`` per row, ``b`` one matrix; 2 ``a`` and ``b`` per row, ``out += `` their sum over the
    rows; 3 all per row. A convolution's im2col products: the weights times each sample's windows,
    and the two transposed products of its backward pass. The arrays are C-contiguous of any rank."""
    _dot_rows_flat(a.reshape(a.size), b.reshape(b.size), out.reshape(out.size), m, k, n, ta, tb, mode)


@njit(cache=True, nogil=True)
def empty_f64(n):  # type: ignore[no-untyped-def]
    """``np.empty(n)`` compiled once per machine: in a kernel, ``np.empty`` inlines its
    allocation code and error paths (~6 ms of compile per site, 0.16 s per process)."""
    return np.empty(n, dtype=np.float64)


@njit(cache=True, nogil=True)
def empty_f32(n):  # type: ignore[no-untyped-def]
    """``np.empty(n, float32)``, as ``empty_f64``."""
    return np.empty(n, dtype=np.float32)


@njit(cache=True, nogil=True)
def empty_i64(n):  # type: ignore[no-untyped-def]
    """``np.empty(n, int64)``, as ``empty_f64``."""
    return np.empty(n, dtype=np.int64)


#: the allocation helper of each element type
EMPTY = {"float64": "empty_f64", "float32": "empty_f32", "int64": "empty_i64"}


@njit(cache=True, nogil=True)
def add_into(out, a):  # type: ignore[no-untyped-def]
    """out += a for two matrices of one shape. Loops, not ``out += a``: every kernel that calls a
    helper links its code and optimizes it again, and Numba's array expression cost 0.3 s of
    compile in each caller, these loops a few ms."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] += a[i, j]


@njit(cache=True, nogil=True)
def sum_rows(partials):  # type: ignore[no-untyped-def]
    """The sum of the rows of ``partials``, added in row order: the same bits for any thread
    count. (Loops, as in ``add_into``.)"""
    n, m = partials.shape
    total = np.empty(m, dtype=partials.dtype)
    for j in range(m):
        total[j] = partials[0, j]
    for c in range(1, n):
        for j in range(m):
            total[j] += partials[c, j]
    return total


#: the product helper for (A transposed, B transposed)
BLAS_HELPERS = {(False, False): "dot_nn", (False, True): "dot_nt", (True, False): "dot_tn", (True, True): "dot_tt"}


