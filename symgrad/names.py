"""The names generated code uses for itself, owned once.

The generated modules import the runtime helpers by these names, and the
lowering uses the locals below; IR values (named after the user's graph)
never take any of them. ``symgrad.runtime`` and ``symgrad.cuda_runtime``
export exactly the helper names listed here (a test checks it), and the
emitters' import lines are printed from these tuples.
"""
from __future__ import annotations

import builtins
import keyword
import re

__all__ = ["ARENAS", "PART_TABLE", "PART_TABLE_LOCAL", "CPU_RUNTIME", "CUDA_RUNTIME", "CUDA_TYPES", "KERNEL_LOCALS", "LOOP_VARS", "OUTLINED", "INT_PARAMS",
           "RESERVED", "is_reserved", "const_global", "CONST_GLOBALS", "loop_function", "part_function", "offset_name", "extent_name"]

#: what a generated CPU module imports from symgrad.runtime
CPU_RUNTIME = ("add_into", "chunk_rows", "dot_nn", "dot_nt", "dot_rows", "dot_tn", "dot_tt", "empty_f32", "empty_f64",
               "empty_i64", "sigmoid", "softplus", "sum_rows", "tanh_f32", "tanh_f64", "view", "xlogy", "NoInline")
#: what a generated CUDA module imports from symgrad.cuda_runtime (a staged pass's host driver)
CUDA_RUNTIME = ("THREADS_PER_BLOCK", "add_partials", "blocks_for", "gemm", "slot_index", "stage_rows", "zero")
#: numba types a generated CUDA module imports
CUDA_TYPES = ("cuda", "float32", "float64", "int64")
#: the module's table of codegen.parts' integers (one row per part call), and a kernel's local name for it
PART_TABLE, PART_TABLE_LOCAL = "PART_INTS", "part_ints"
#: modules, kernel arguments, loop variables and the part table (module and local) of the generated code
KERNEL_LOCALS = ("math", "np", "njit", "prange", "expm1", PART_TABLE, PART_TABLE_LOCAL, "theta", "v", "grad", "out", "hv", "partials",
                 "acc", "total", "chunk", "n_acc", "n_samples", "inv_n", "c", "c0", "c1", "r", "r0", "r1", "rows",
                 "i", "j", "k", "l", "m", "p", "q", "best", "best_at", "result", "reduce_partials", "blocks")
#: the buffer a CPU chunk kernel's temporaries of each element type are views of (codegen.arena)
ARENAS = {"float": "arena", "int64": "arena_int"}

#: loop variables the lowering generates past the named ones, for axes of any rank (i2, i3, ...
#: over a value's axes, k4, k5, ... over an einsum's summed axes)
LOOP_VARS = re.compile(r"[ik][0-9]+")
#: the functions codegen.outline makes of a CPU module's loop nests (loop1, loop2, ...) and
#: codegen.parts of its kernels' runs of calls (part1, part2, ...)
OUTLINED = re.compile(r"(loop|part)[0-9]+")
#: the integers of those functions: a part's offsets (where each view it makes starts: at1,
#: at2, at2_rows, ...) and extents (len1, len2, ...: a loop's trip count, a view's shape)
INT_PARAMS = re.compile(r"(at[0-9]+(_rows)?|len[0-9]+)")

#: the module-level arrays of constant tensors (codegen.ops.constant): CONST_<value name>
CONST_GLOBALS = re.compile(r"CONST_\w+")

#: no IR value is ever named one of these
RESERVED = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | frozenset(
    CPU_RUNTIME + CUDA_RUNTIME + CUDA_TYPES + KERNEL_LOCALS + tuple(ARENAS.values()))


def is_reserved(name: str) -> bool:
    """Is ``name`` one the generated code uses for itself?"""
    return name in RESERVED or any(p.fullmatch(name) is not None for p in (LOOP_VARS, OUTLINED, INT_PARAMS, CONST_GLOBALS))


def const_global(value: str) -> str:
    """The module-level name of constant value ``value``'s array."""
    return f"CONST_{value}"


def loop_function(n: int) -> str:
    """The name of a module's ``n``-th loop-nest function."""
    return f"loop{n}"


def part_function(n: int) -> str:
    """The name of a module's ``n``-th function of a run of calls."""
    return f"part{n}"


def offset_name(n: int) -> str:
    """A part function's ``n``-th offset parameter."""
    return f"at{n}"


def extent_name(n: int) -> str:
    """An outlined function's ``n``-th extent parameter."""
    return f"len{n}"
