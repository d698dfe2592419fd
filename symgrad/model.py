"""``sg.compile``: the pipeline from a loss expression to callable kernels, and the Model.

DSL graph -> forward program -> adjoint program -> kernel IR -> Numba source
-> cached module. Numba compiles each kernel on its first call (or loads it
from its cache); everything before that happens in ``compile``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import __version__
from .autodiff import Adjoint
from .cuda_runner import on_device
from .derivation import Derivation
from .derived import COTANGENT, curvature, gradient, jacobian, linearity
from .dsl import GraphError, Tensor
from .ir import IRError
from .initializers import initialize
from .program import Forward, Signature, build_forward
from .runner import KernelRunner

if TYPE_CHECKING:
    from codegen.lower import Lowered, Sink

__all__ = ["Model", "Objective", "compile", "DataError", "KINDS", "BACKENDS"]

#: where the kernels run: Numba CPU (``@njit``) or numba-cuda (``@cuda.jit``)
BACKENDS = ("cpu", "cuda")


class DataError(ValueError):
    """Arguments that do not match the model: names the argument, expected and actual shapes."""


def _runtime_hash() -> str:
    """The helpers generated modules import (CPU and CUDA), read as text: a change to them must
    change the cache key, and reading does not import numba.cuda."""
    from codegen.cache import cache_key
    here = Path(__file__).parent
    return cache_key(*((here / f).read_text() for f in ("runtime.py", "cuda_runtime.py")))


def _as_caller(out: Any, like: Any) -> Any:
    """A numba-cuda device array ``out`` as the caller's array type (``like``'s), without a copy:
    a CuPy theta gets CuPy results, so that NumPy functions and operators dispatch to the GPU
    (how the optimizers run there unchanged); a PyTorch one gets tensors."""
    lib = type(like).__module__.split(".")[0]
    if lib == "cupy":
        import cupy
        return cupy.asarray(out)
    if lib == "torch":
        import torch
        return torch.as_tensor(out, device="cuda")
    return out


class _DataSpec:
    """Validation and conversion of one data argument.

    The value checks (finite, labels in range) are O(N); they are skipped when
    the very array object last validated is passed again, as in an optimizer
    loop. An array modified in place after it passed is therefore not
    re-checked. Only an array used as is (contiguous, of the model's dtype)
    is remembered: one that needs converting is converted and checked again
    on every call, so the kernel never sees a stale copy.
    """

    __slots__ = ("name", "role", "shape", "classes", "_last")

    def __init__(self, name: str, role: str, shape: tuple[int, ...], classes: int) -> None:
        self.name, self.role, self.shape, self.classes = name, role, shape, classes
        self._last: tuple[Any, tuple, Any] | None = None   # (array used as is, its shape, its dtype)

    def convert(self, x: Any, dtype: np.dtype, check_finite: bool, device: bool = False) -> np.ndarray:
        last = self._last
        if last is not None and last[0] is x and x.shape == last[1] and x.dtype == last[2]:
            return x   # (a shape or dtype set in place is checked again)
        if on_device(x):
            return self._device(x, dtype, device)
        a = self._labels(x) if self.role == "labels" else self._real(x, dtype, check_finite)
        # the same array again is used as is, unchecked (a batch-32 call is ~20 µs); a converted
        # copy is made anew each call, so a change to x in place is never ignored
        self._last = (x, x.shape, x.dtype) if a is x else None
        return a

    def _device(self, x: Any, dtype: np.dtype, device: bool) -> Any:
        """A device array, used in place: shape and dtype checked (its values stay on the GPU)."""
        if not device:
            raise DataError(f"data {self.name!r} is a GPU array but the model runs on the CPU; copy it "
                            "to the host or compile with backend='cuda'")
        want_dt = np.dtype(np.int64) if self.role == "labels" else dtype
        shape = tuple(x.shape)
        n = shape[0] if shape else -1
        want = (n,) if self.role == "labels" else (n,) + self.shape
        dt = np.dtype(x.dtype)
        if shape != want or dt != want_dt:
            raise DataError(f"data {self.name!r}: expected a device array of shape (N, "
                            f"{', '.join(map(str, self.shape))}) and dtype {want_dt}, got {shape} {dt} "
                            "(use model.to_device to convert and check it once)")
        return x

    def _real(self, x: Any, dtype: np.dtype, check_finite: bool) -> np.ndarray:
        a = np.asarray(x)
        if a.dtype.kind not in "fiub":
            raise DataError(f"data {self.name!r}: expected numbers, got dtype {a.dtype}")
        want = self.shape
        if a.ndim == 1 and want == (1,):
            a = a.reshape(-1, 1)
        if a.ndim != 1 + len(want) or a.shape[1:] != want:
            raise DataError(f"data {self.name!r}: expected shape (N, {', '.join(map(str, want))}), "
                            f"got {a.shape}")
        a = np.ascontiguousarray(a, dtype=dtype)
        if check_finite and not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise DataError(f"data {self.name!r} holds NaN or inf (first at index "
                            f"{tuple(int(i) for i in bad)}); pass check_finite=False to "
                            "sg.compile to allow it")
        return a

    def _labels(self, y: Any) -> np.ndarray:
        a = np.asarray(y)
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 1:
            raise DataError(f"labels {self.name!r}: expected shape (N,), got {a.shape}")
        if a.dtype.kind == "f":
            if not (np.isfinite(a).all() and (a == np.round(a)).all()):
                raise DataError(f"labels {self.name!r}: float labels must hold whole numbers")
        elif a.dtype.kind not in "iu":
            raise DataError(f"labels {self.name!r}: expected integers, got dtype {a.dtype}")
        out = np.ascontiguousarray(a, dtype=np.int64)
        if out.size and (out.min() < 0 or out.max() >= self.classes):
            bad = int(out[(out < 0) | (out >= self.classes)][0])
            raise DataError(f"labels {self.name!r}: value {bad} outside [0, {self.classes})")
        return out


@dataclass(frozen=True)
class _Kind:
    """What one kernel kind computes and takes.

    ``outputs``: objective (returned), grad / hv / gn (flat vectors over the
    parameters), output / jac (per-sample rows). ``program``: which derived
    program it is lowered from. ``group``: first-order kernels are built by
    ``compile``; second-order ones on first use, in a module of their own.
    ``data``: whose data arrays the kind takes (the forward output it reads:
    "objective" or "output"), exactly those, in ``data_names`` order.
    """

    group: str
    program: str
    outputs: tuple[str, ...]
    tangent: bool
    data: str
    doc: str


_KIND_SPECS = {
    "loss": _Kind("first", "forward", ("objective",), False, "objective",
                  "Objective: mean over the batch of the per-sample loss."),
    "value_and_grad": _Kind("first", "gradient", ("objective", "grad"), False, "objective",
                            "Objective and its gradient (written into grad), forward and backward fused."),
    "predict": _Kind("first", "forward", ("output",), False, "output",
                     "The output expression for each sample."),
    "hvp": _Kind("second", "curvature", ("hv",), True, "objective",
                 "Exact Hessian of the objective times v (into hv): forward over reverse, fused."),
    "gnvp": _Kind("second", "curvature", ("gn",), True, "objective",
                  "Generalized Gauss-Newton product J^T H_loss J v (+ penalties' exact Hv), into gnv."),
    "value_grad_hvp": _Kind("second", "curvature", ("objective", "grad", "hv"), True, "objective",
                            "Objective, gradient and Hessian-vector product in one fused pass."),
    "jacobian": _Kind("second", "jacobian", ("jac",), False, "output",
                      "Per-sample rows u^T d output / d theta for the cotangent u, into jac."),
}
#: every kernel kind (predict and jacobian need an output; gnvp a loss split point)
KINDS = tuple(_KIND_SPECS)
#: argument name of each flat output in the generated kernels
_FLAT_ARRAYS = {"grad": "grad", "hv": "hv", "gn": "gnv"}


@dataclass
class _Group:
    """One generated module and the kinds lowered into it."""

    module: Any
    lowered: dict[str, Lowered]
    programs: dict[str, Any]
    source: str
    stats: dict[str, Any]
    refused: dict[str, IRError]   # kinds the backend cannot lower, and why (raised when asked for)


class Model:
    """A compiled model: kernels over a flat parameter vector ``theta``.

    Data arguments follow :attr:`data_names` (inputs, then targets/labels) or
    are passed by name. The objective is the mean over the N samples of the
    per-sample loss (parameter-only terms are added once).
    """

    def __init__(self, forward: Forward, adjoint: Adjoint, dtype: np.dtype, fastmath: bool,
                 check_finite: bool, title: str, target: Any = None) -> None:
        from codegen.targets import CPU
        self.target = target or CPU   # a codegen.targets.Target: thresholds, limits, emitter
        self.backend = self.target.name
        self._forward = forward
        self._adjoint = adjoint
        self._groups: dict[str, _Group] = {}
        self._runners: dict[str, KernelRunner] = {}
        self.dtype = dtype
        self.fastmath = fastmath
        self.check_finite = check_finite
        self.stats: dict[str, Any] = {"stages": {}, "kernels_compiled": {}}
        self.title = title
        sig: Signature = forward.signature
        self.signature = sig
        self.param_names: tuple[str, ...] = sig.param_names
        self.data_names: tuple[str, ...] = sig.data_names
        self.n_params: int = sig.size
        self._specs = {n: _DataSpec(n, role, shape, classes) for n, role, shape, classes in sig.data}
        # the data each kind reads: what the objective (and the loss's split points) or the output
        # depends on, in data_names order; a kind takes exactly these arguments
        prog = forward.program
        reads = {"objective": prog.depends(v.name for k, v in prog.outputs if k != "output"),
                 "output": prog.depends([prog.output("output").name]) if any(
                     k == "output" for k, _ in prog.outputs) else set()}
        labels = {a.out.name: a.op.label for a in prog.leaves}
        self._reads = {key: tuple(n for n in self.data_names if n in {labels[v] for v in vals if v in labels})
                       for key, vals in reads.items()}
        self._objective_data = self._reads["objective"]
        self._inputs = self._reads["output"]
        self.has_output = any(k == "output" for k, _ in forward.program.outputs)
        self.has_split = any(k.startswith("split:") for k, _ in forward.program.outputs)

    @property
    def piecewise_linear(self) -> str:
        """Non-empty when the objective is piecewise linear in the parameters (its Hessian, and
        so its Gauss-Newton matrix, is zero almost everywhere): names the op with the kink
        (hinge, relu, abs, max, ...), or says the objective is affine."""
        lin = linearity(self._forward.program)
        if lin.degree == 2:
            return lin.kink
        return "an affine objective" if lin.degree == 1 else ""

    def warn_flat_curvature(self, method: str) -> None:
        """Warn (once per model) that a curvature-based ``method`` sees no curvature here."""
        kink = self.piecewise_linear
        if kink and not self.__dict__.get("_warned_flat"):
            self._warned_flat = True
            warnings.warn(f"{method}: the objective is piecewise linear in the parameters (through {kink}), "
                          "so its Hessian and Gauss-Newton matrix are zero almost everywhere and a "
                          "second-order step has no curvature to use; first-order methods or L-BFGS "
                          "suit it better", RuntimeWarning, stacklevel=4)

    # ------------------------------------------------------------------ parameters
    def init(self, seed: int | None = 0) -> np.ndarray:
        """A fresh theta: each parameter drawn by its initializer, in declaration order."""
        rng = np.random.default_rng(seed)
        theta = np.empty(self.n_params, dtype=self.dtype)
        for name, shape, off, init in self.signature.params:
            size = int(np.prod(shape)) if shape else 1
            theta[off:off + size] = initialize(init, shape, rng).ravel()
        return theta

    def unflatten(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Views of ``theta``, one per parameter, in their shapes (writing them writes theta)."""
        theta = self._theta(theta, copy_ok=False)
        out = {}
        for name, shape, off, _ in self.signature.params:
            size = int(np.prod(shape)) if shape else 1
            out[name] = theta[off:off + size].reshape(shape)
        return out

    def flatten(self, params: dict[str, Any]) -> np.ndarray:
        """The theta holding ``params`` (every parameter must be given)."""
        theta = np.empty(self.n_params, dtype=self.dtype)
        for name, shape, off, _ in self.signature.params:
            if name not in params:
                raise DataError(f"flatten: parameter {name!r} missing")
            value = np.asarray(params[name], dtype=self.dtype)
            if value.shape != shape:
                raise DataError(f"flatten: parameter {name!r} has shape {value.shape}, expected {shape}")
            size = int(np.prod(shape)) if shape else 1
            theta[off:off + size] = value.ravel()
        return theta

    def _device_vector(self, a: Any, what: str) -> Any:
        """A flat vector on the GPU, used in place: shape and dtype checked, values not read."""
        if self.backend != "cuda":
            raise DataError(f"{what} is a GPU array but the model runs on the CPU; copy it to the host "
                            "or compile with backend='cuda'")
        shape, dt = tuple(a.shape), np.dtype(str(a.dtype).replace("torch.", ""))
        if shape != (self.n_params,) or dt != self.dtype:
            raise DataError(f"{what}: expected a device vector of {self.n_params} {self.dtype} entries "
                            f"({', '.join(self.param_names)}), got shape {shape} and dtype {dt} (convert it "
                            "on the device first)")
        return a

    def _out(self, like: Any, shape: tuple[int, ...]) -> Any:
        """An output array: on the device when ``like`` (theta) is, else on the host."""
        if on_device(like):
            from numba import cuda
            return cuda.device_array(shape, dtype=self.dtype)
        return np.empty(shape, dtype=self.dtype)

    def _like(self, theta: Any, host: np.ndarray) -> Any:
        """A host result returned where theta lives (the caller's device array type)."""
        if not on_device(theta):
            return host
        from numba import cuda
        return _as_caller(cuda.to_device(np.ascontiguousarray(host)), theta)

    def _theta(self, theta: Any, copy_ok: bool = True) -> np.ndarray:
        if on_device(theta):
            return self._device_vector(theta, "theta")
        a = np.asarray(theta)
        if a.ndim != 1 or a.shape[0] != self.n_params:
            raise DataError(f"theta: expected a flat vector of {self.n_params} parameters "
                            f"({', '.join(self.param_names)}), got shape {a.shape}")
        if a.dtype.kind not in "fiu":
            raise DataError(f"theta: expected real numbers, got dtype {a.dtype}")
        if a.dtype != self.dtype or not a.flags.c_contiguous:
            if not copy_ok:
                raise DataError(f"theta: expected a contiguous {self.dtype} vector, got {a.dtype}")
            a = np.ascontiguousarray(a, dtype=self.dtype)
        return a

    # ------------------------------------------------------------------ data
    def _data(self, names: tuple[str, ...], args: tuple, kwargs: dict) -> list[np.ndarray]:
        if len(args) > len(names):
            raise DataError(f"expected at most {len(names)} data arrays ({', '.join(names)}), "
                            f"got {len(args)}")
        given = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in self._specs:
                raise DataError(f"unknown data argument {k!r}; the model takes {self.data_names}")
            if k in given:
                raise DataError(f"data {k!r} given twice (by position and by name)")
            given[k] = v
        missing = [n for n in names if n not in given]
        if missing:
            raise DataError(f"missing data argument(s) {missing}; expected {names}")
        out = [self._specs[n].convert(given[n], self.dtype, self.check_finite, self.backend == "cuda")
               for n in names]
        if out:
            n0 = out[0].shape[0]
            for n, a in zip(names, out):
                if a.shape[0] != n0:
                    raise DataError(f"data {n!r} has {a.shape[0]} samples but {names[0]!r} has {n0}")
            if n0 == 0:
                raise DataError("data arrays hold no samples (N = 0)")
        return out

    # ------------------------------------------------------------------ kernel groups
    def _group(self, group: str) -> _Group:
        """The module holding ``group``'s kernels, derived, generated and loaded on first use."""
        g = self._groups.get(group)
        if g is None:
            g = _build_group(self, group)
            self._groups[group] = g
            if group == "first":
                self.stats.update(g.stats)
            else:
                self.stats["second_order"] = g.stats
        return g

    def _lowered(self, kind: str) -> Lowered:
        g = self._group(_KIND_SPECS[kind].group)
        if kind in g.refused:
            raise g.refused[kind]
        return g.lowered[kind]

    def _runner(self, kind: str) -> KernelRunner:
        r = self._runners.get(kind)
        if r is None:
            low = self._lowered(kind)
            module = self._group(_KIND_SPECS[kind].group).module
            chunks = getattr(module, low.chunks.name) if low.chunks is not None else None
            spec = _KIND_SPECS[kind]
            needs_finish = spec.outputs[0] not in ("output", "jac")
            if self.backend == "cuda":
                from .cuda_runner import CudaKernelRunner
                r = CudaKernelRunner(chunks, getattr(module, kind), module.reduce_partials, low.n_acc, self.dtype,
                                     needs_finish, returns="objective" in spec.outputs,
                                     stages=tuple(getattr(module, k.name) for k in low.stages))
            else:
                r = KernelRunner(chunks, getattr(module, kind), low.n_acc, self.dtype, needs_finish)
            self._runners[kind] = r
        return r

    def _call(self, kind: str, n: int, lead: tuple, rows_out: tuple = (), flat_out: tuple = ()) -> Any:
        runner = self._runner(kind)
        if kind in self.stats["kernels_compiled"]:
            return runner(n, lead, rows_out, flat_out)
        from codegen.cache import flush_numba_cache, numba_cache_failed
        t0 = time.perf_counter()
        # the compiled kernels (a staged kind's driver is plain Python; its row kernels count)
        fns = [f for f in (runner.chunks, runner.finish, *getattr(runner, "stages", ())) if hasattr(f, "stats")]
        try:
            res = runner(n, lead, rows_out, flat_out)
        except Exception as e:   # a damaged Numba cache entry is rebuilt, never fatal
            if not numba_cache_failed(e):
                raise
            flush_numba_cache(fns, e)
            res = runner(n, lead, rows_out, flat_out)
        hits = [bool(getattr(f.stats, "cache_hits", None)) for f in fns]
        self.stats["kernels_compiled"][kind] = {
            "first_call_seconds": round(time.perf_counter() - t0, 4),
            "numba_cache": "hit" if all(hits) else "miss"}
        return res

    # ------------------------------------------------------------------ objective
    def bind(self, *data: Any, **named: Any) -> Objective:
        """The objective on these data, checked once: what optimizers call in their loops."""
        return Objective(self, self._data(self._objective_data, data, named))

    def to_device(self, *data: Any, **named: Any) -> Any:
        """Data arrays checked (as for any call) and copied to the GPU once, by position in
        ``data_names`` order or by name: pass them to every call after that and no data moves
        between host and device (a NumPy array is copied on every call). One array gives one
        device array, several a tuple in the order given. Device arrays passed directly are
        checked for shape and dtype only: their values (labels in range, finite) are checked
        here, on the host, or not at all. CUDA backend only."""
        if self.backend != "cuda":
            raise ValueError("to_device: the model runs on the CPU (compile with backend='cuda')")
        if not data and not named:
            raise DataError("to_device: no data arrays given")
        from numba import cuda
        names = self.data_names[:len(data)] + tuple(named)
        arrays = self._data(names, data, named)
        out = tuple(cuda.to_device(a) for a in arrays)
        return out[0] if len(out) == 1 else out

    def loss(self, theta: Any, *data: Any, **named: Any) -> float:
        """The objective: mean over samples of the per-sample loss."""
        return self.bind(*data, **named).loss(theta)

    def value_and_grad(self, theta: Any, *data: Any, **named: Any) -> tuple[float, np.ndarray]:
        """(objective, gradient) from one fused forward+backward kernel call."""
        return self.bind(*data, **named).value_and_grad(theta)

    def grad(self, theta: Any, *data: Any, **named: Any) -> np.ndarray:
        """The gradient of the objective (the value_and_grad kernel)."""
        return self.bind(*data, **named).value_and_grad(theta)[1]

    def predict(self, theta: Any, *inputs: Any, **named: Any) -> np.ndarray:
        """The ``output`` expression for each sample: shape (N, *output.shape)."""
        self._check_kind("predict")
        t = self._theta(theta)
        d = self._data(self._inputs, inputs, named)
        n = _rows(d)
        out = np.empty((n,) + self._output_shape, dtype=self.dtype)
        self._call("predict", n, (t, *d), rows_out=(out,))
        return self._like(theta, out)

    # ------------------------------------------------------------------ second order
    def hvp(self, theta: Any, v: Any, *data: Any, **named: Any) -> np.ndarray:
        """Exact Hessian of the objective at ``theta`` times ``v`` (flat vectors)."""
        return self.bind(*data, **named).hvp(theta, v)

    def gnvp(self, theta: Any, v: Any, *data: Any, **named: Any) -> np.ndarray:
        """Generalized Gauss-Newton matrix times ``v``: J^T H_loss J v, with J the Jacobian of
        the predictions the built-in losses score (or of ``output``) and H_loss the loss's
        Hessian with respect to them; parameter-only terms add their exact Hessian times v.
        Positive semi-definite for convex losses."""
        self._check_kind("gnvp")
        return self.bind(*data, **named).gnvp(theta, v)

    def value_grad_hvp(self, theta: Any, v: Any, *data: Any,
                       **named: Any) -> tuple[float, np.ndarray, np.ndarray]:
        """(objective, gradient, Hessian times v) from one fused kernel call."""
        return self.bind(*data, **named).value_grad_hvp(theta, v)

    def hessian(self, theta: Any, *data: Any, max_params: int = 4096, **named: Any) -> np.ndarray:
        """The dense (P, P) Hessian of the objective, column by column from exact HVPs, then
        symmetrized. Refused above ``max_params`` parameters (P^2 memory, P kernel calls)."""
        return self.bind(*data, **named).hessian(theta, max_params)

    def jacobian(self, theta: Any, *inputs: Any, **named: Any) -> np.ndarray:
        """d output / d theta for each sample: shape (N, *output.shape, P)."""
        self._check_kind("jacobian")
        t = self._theta(theta)
        d = self._data(self._inputs, inputs, named)
        n = _rows(d)
        width = int(np.prod(self._output_shape)) if self._output_shape else 1
        jac = np.empty((n, width, self.n_params), dtype=self.dtype)
        u = np.zeros((n, width), dtype=self.dtype)
        rows = np.empty((n, self.n_params), dtype=self.dtype)
        for k in range(width):     # one reverse pass per output component
            u[:, k] = 1
            self._call("jacobian", n, (t, *d, u.reshape((n,) + self._output_shape)), rows_out=(rows,))
            jac[:, k] = rows
            u[:, k] = 0
        return self._like(theta, jac.reshape((n,) + self._output_shape + (self.n_params,)))

    def scipy_objective(self, *data: Any, **named: Any) -> tuple[Callable, Callable, Callable]:
        """``(fun, jac, hessp)`` for ``scipy.optimize.minimize`` on this data (checked once).

        ``fun`` evaluates value and gradient together and ``jac`` reuses that
        gradient when called at the same point, as scipy does.
        """
        obj = self.bind(*data, **named)
        memo: dict[str, Any] = {"x": None}

        def fun(x: Any) -> float:
            t = self._theta(x)
            if memo["x"] is None or not np.array_equal(memo["x"], t):
                memo["f"], memo["g"] = obj.value_and_grad(t)
                memo["x"] = t.copy()
            return memo["f"]

        def jac(x: Any) -> np.ndarray:
            fun(x)
            return memo["g"].copy()

        def hessp(x: Any, p: Any) -> np.ndarray:
            return obj.hvp(x, p)

        return fun, jac, hessp

    def _vector(self, v: Any, what: str) -> np.ndarray:
        if on_device(v):
            return self._device_vector(v, what)
        a = np.asarray(v)
        if a.ndim != 1 or a.shape[0] != self.n_params:
            raise DataError(f"{what}: expected a flat vector of {self.n_params} entries (like theta), "
                            f"got shape {a.shape}")
        if a.dtype.kind not in "fiu":
            raise DataError(f"{what}: expected real numbers, got dtype {a.dtype}")
        return np.ascontiguousarray(a, dtype=self.dtype)

    @property
    def _output_shape(self) -> tuple[int, ...]:
        return self._forward.program.output("output").shape

    # ------------------------------------------------------------------ inspection
    def source(self, kind: str = "value_and_grad") -> str:
        """The generated Numba source of one kernel (``kind`` in KINDS), or 'module' /
        'second_order_module' for a whole generated module."""
        if kind == "module":
            return self._group("first").source
        if kind == "second_order_module":
            return self._group("second").source
        self._check_kind(kind)
        import inspect
        module = self._group(_KIND_SPECS[kind].group).module
        fns = (getattr(module, k.name) for k in self._lowered(kind).kernels)
        return "\n\n".join(inspect.getsource(getattr(f, "py_func", f)) for f in fns)   # host code: plain

    def derivation(self, kind: str = "value_and_grad") -> Derivation:
        """The derived program of a kernel kind: forward assignments, adjoints, tangents;
        print it or call .latex()."""
        self._check_kind(kind)
        spec = _KIND_SPECS[kind]
        g = self._group(spec.group)
        prog = g.programs[spec.program]
        keys = tuple(k for k, _ in prog.outputs if k.split(":")[0] in spec.outputs)
        what = {"forward": "forward program", "gradient": "gradient by reverse accumulation",
                "curvature": "forward over reverse (R-operator) on the adjoint program",
                "jacobian": "per-sample reverse accumulation from the output"}[spec.program]
        if kind == "gnvp":
            what = "Gauss-Newton: tangents with the network's curvature dropped"
        fwd = {a.out.name for a in self._forward.program.body}
        adj = {a.out.name for a in self._adjoint.program.body}
        return Derivation(f"{self.title}: {kind}, {what}", prog.pruned(keys), fwd, adj)

    def _example_args(self, kind: str, finish: bool = False) -> list[Any]:
        """Arguments of the kind's per-chunk kernel (or of its finish, the only kernel of kinds
        without per-sample work), typed as a call would type them: what inspection compiles for."""
        spec, low = _KIND_SPECS[kind], self._lowered(kind)
        n, p, ft = 3, self.n_params, self.dtype
        args: list[Any] = [np.zeros(p, dtype=ft)] + ([np.zeros(p, dtype=ft)] if spec.tangent else [])
        for name in self._reads[spec.data]:
            sp_ = self._specs[name]
            args.append(np.zeros(n, np.int64) if sp_.role == "labels"
                        else np.zeros((n,) + sp_.shape, dtype=ft))
        if kind == "jacobian":
            args.append(np.zeros((n,) + self._output_shape, dtype=ft))
        if low.chunks is not None and not finish:
            if kind == "predict":
                args.append(np.zeros((n,) + self._output_shape, dtype=ft))
            elif kind == "jacobian":
                args.append(np.zeros((n, p), dtype=ft))
            if self.backend == "cpu" or low.n_acc:
                args += [np.zeros((1, max(low.n_acc, 1)), dtype=ft)]
            args += [1] if self.backend == "cuda" else [0, 1]
        else:
            args += [np.zeros(p, dtype=ft) for o in spec.outputs if o in _FLAT_ARRAYS]
            if low.chunks is not None and low.n_acc:
                args.append(np.zeros((1, low.n_acc), dtype=ft) if self.backend == "cpu"
                            else np.zeros(low.n_acc, dtype=ft))
            args += [np.zeros(1, dtype=ft)] if self.backend == "cuda" and "objective" in spec.outputs else []
        return args

    def _inspect_dispatcher(self, kind: str) -> Any:
        """An uncached copy of the kernel, compiled for the types it is called with:
        a kernel loaded from Numba's cache has no LLVM IR or assembly to show."""
        import numba
        cache = self.__dict__.setdefault("_inspect", {})
        if kind in cache:
            return cache[kind]
        spec, low = _KIND_SPECS[kind], self._lowered(kind)
        k = getattr(self._group(spec.group).module, (low.chunks or low.finish).name)
        opts = {o: v for o, v in k.targetoptions.items() if o not in ("cache", "nopython")}
        d = numba.njit(**opts)(k.py_func)
        d.compile(tuple(numba.typeof(a) for a in self._example_args(kind)))
        cache[kind] = d
        return d

    def ptx(self, kind: str = "value_and_grad", cc: tuple[int, int] = (8, 0)) -> str:
        """PTX of a kind's CUDA kernels (the row kernels of a staged pass, or the per-chunk
        kernel, then the finish) for compute capability ``cc``; needs no GPU, but numba-cuda
        with NVVM (``pip install -e '.[cuda]'``) and no simulator."""
        self._check_kind(kind)
        if self.backend != "cuda":
            raise ValueError("ptx: the model runs on the CPU; compile with backend='cuda' (CPU models "
                             "show model.llvm(kind) and model.asm(kind))")
        import numba
        from numba import cuda
        if numba.config.ENABLE_CUDASIM:
            raise RuntimeError("ptx: the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) compiles no PTX")
        spec, low = _KIND_SPECS[kind], self._lowered(kind)
        module = self._group(spec.group).module
        ft = numba.from_dtype(self.dtype)
        types = {"f": ft, "i": numba.int64}
        texts = []
        for kernel, finish in [(k, False) for k in low.stages] + [(low.chunks, False), (low.finish, True)]:
            if kernel is None or kernel.host or (finish and low.chunks is not None
                                                 and spec.outputs[0] in ("output", "jac")):
                continue   # host code; predict and jacobian write their rows in the chunks kernel
            if kernel.arg_types:   # a staged pass's row kernel: its parameters' types were recorded
                sig = tuple(numba.types.Array(types[t[0]], int(t[1:]), "C") if t[1:] else types[t]
                            for t in kernel.arg_types)
            else:
                sig = tuple(numba.typeof(a) for a in self._example_args(kind, finish))
            try:
                text, _ = cuda.compile_ptx(getattr(module, kernel.name).py_func, sig, cc=cc,
                                           fastmath=self.fastmath)
            except Exception as e:
                raise RuntimeError(f"ptx: numba-cuda could not compile {kernel.name!r} to PTX "
                                   f"({type(e).__name__}: {e}); is the 'cuda' extra installed "
                                   "(nvidia-nvvm, nvidia-cuda-nvrtc)?") from e
            texts.append(f"// ---- kernel {kernel.name} ----\n{text}")
        return "\n".join(texts)

    def llvm(self, kind: str = "value_and_grad") -> str:
        """LLVM IR of the kernel (its per-chunk function, where the work is)."""
        self._check_kind(kind)
        self._cpu_only("llvm")
        d = self._inspect_dispatcher(kind)
        return next(iter(d.inspect_llvm().values()))

    def asm(self, kind: str = "value_and_grad") -> str:
        """Native assembly of the kernel (its per-chunk function, where the work is)."""
        self._check_kind(kind)
        self._cpu_only("asm")
        d = self._inspect_dispatcher(kind)
        return next(iter(d.inspect_asm().values()))

    def _cpu_only(self, what: str) -> None:
        if self.backend != "cpu":
            raise ValueError(f"{what}: a CPU view; the CUDA kernels show model.ptx(kind)")

    def _check_kind(self, kind: str) -> None:
        if kind not in _KIND_SPECS:
            raise ValueError(f"unknown kernel kind {kind!r}; kinds are {KINDS}")
        if kind in ("predict", "jacobian") and not self.has_output:
            raise GraphError(f"{kind} needs the model's output: sg.compile(loss, output=...)")
        if kind == "gnvp" and not self.has_split:
            raise GraphError("gnvp needs a split between network and loss: use a built-in loss "
                             "(sg.mse, sg.softmax_cross_entropy, ...) or sg.compile(loss, output=...)")

    def __repr__(self) -> str:
        return (f"Model({self.title!r}, params={self.param_names}, data={self.data_names}, "
                f"P={self.n_params}, dtype={self.dtype})")


class Objective:
    """A model's objective on fixed data, validated once (``Model.bind``).

    Optimizers call its kernels thousands of times on the same arrays, or on
    row subsets of them (``subset``, for mini-batches), without re-checking
    the data. theta and v are still checked on every call: they are cheap to
    check and a wrong one would silently give garbage.
    """

    def __init__(self, model: Model, data: list[np.ndarray]) -> None:
        self.model = model
        self.data = tuple(data)
        self.n_samples = _rows(data)

    def subset(self, rows: Any) -> Objective:
        """The objective on the samples ``rows`` (an index array or slice) of these data."""
        data = [np.ascontiguousarray(a[rows]) for a in self.data]
        if data and data[0].shape[0] == 0:
            raise DataError("subset: selects no samples")
        return Objective(self.model, data)

    def start(self, theta0: Any) -> Any:
        """``theta0`` checked and copied: an optimizer's iterate. A device vector (CuPy, on a CUDA
        model) stays on the device, and so do the gradients and products computed at it."""
        theta = self.model._theta(theta0)
        if on_device(theta) and not hasattr(type(theta), "__array_function__"):
            raise DataError(f"theta0 is a {type(theta0).__name__}, a device array without NumPy's function "
                            "dispatch: the optimizers' vector arithmetic needs one that has it (CuPy: "
                            "cupy.asarray(theta0)), or pass a NumPy theta0")
        return theta.copy()

    def loss(self, theta: Any) -> float:
        """The objective at ``theta``."""
        m = self.model
        return float(m._call("loss", self.n_samples, (m._theta(theta), *self.data)))

    def value_and_grad(self, theta: Any) -> tuple[float, np.ndarray]:
        """(objective, gradient) at ``theta``: one fused kernel call."""
        m = self.model
        t = m._theta(theta)
        g = m._out(theta, (m.n_params,))
        f = m._call("value_and_grad", self.n_samples, (t, *self.data), flat_out=(g,))
        return float(f), _as_caller(g, theta)

    def hvp(self, theta: Any, v: Any) -> np.ndarray:
        """Exact Hessian times ``v`` at ``theta``."""
        return self._product("hvp", theta, v)

    def gnvp(self, theta: Any, v: Any) -> np.ndarray:
        """Generalized Gauss-Newton matrix times ``v`` at ``theta`` (see ``Model.gnvp``)."""
        self.model._check_kind("gnvp")
        return self._product("gnvp", theta, v)

    def value_grad_hvp(self, theta: Any, v: Any) -> tuple[float, np.ndarray, np.ndarray]:
        """(objective, gradient, Hessian times v) from one fused kernel call."""
        m = self.model
        lead = (m._theta(theta), m._vector(v, "v"), *self.data)
        g, hv = m._out(theta, (m.n_params,)), m._out(theta, (m.n_params,))
        f = m._call("value_grad_hvp", self.n_samples, lead, flat_out=(g, hv))
        return float(f), _as_caller(g, theta), _as_caller(hv, theta)

    def predict(self, theta: Any) -> np.ndarray:
        """The model's output on these inputs (see ``Model.predict``)."""
        return self.model.predict(theta, *self._inputs())

    def jacobian(self, theta: Any) -> np.ndarray:
        """d output / d theta on these inputs (see ``Model.jacobian``)."""
        return self.model.jacobian(theta, *self._inputs())

    def _inputs(self) -> list[np.ndarray]:
        names = self.model._objective_data
        missing = [n for n in self.model._inputs if n not in names]
        if missing:
            raise DataError(f"the output reads {missing}, which the objective does not: call "
                            "model.predict / model.jacobian with them")
        return [self.data[names.index(n)] for n in self.model._inputs]

    def hessian(self, theta: Any, max_params: int = 4096) -> np.ndarray:
        """The dense Hessian, from P exact HVP columns, symmetrized."""
        return self._dense("hvp", "hessian", theta, max_params)

    def gauss_newton(self, theta: Any, max_params: int = 4096) -> np.ndarray:
        """The dense generalized Gauss-Newton matrix, from P GN-product columns, symmetrized."""
        self.model._check_kind("gnvp")
        return self._dense("gnvp", "gauss_newton", theta, max_params)

    def _product(self, kind: str, theta: Any, v: Any) -> np.ndarray:
        m = self.model
        lead = (m._theta(theta), m._vector(v, "v"), *self.data)
        out = m._out(theta, (m.n_params,))
        m._call(kind, self.n_samples, lead, flat_out=(out,))
        return _as_caller(out, theta)

    def _dense(self, kind: str, what: str, theta: Any, max_params: int) -> np.ndarray:
        m, p = self.model, self.model.n_params
        if p > max_params:
            raise ValueError(f"{what}: the model has P = {p} parameters; a dense matrix needs "
                             f"{p ** 2 * m.dtype.itemsize / 2 ** 20:.0f} MiB and {p} product kernel calls "
                             f"(max_params={max_params}; raise it, or use the matrix-free products)")
        t = m._theta(theta)
        h = np.empty((p, p), dtype=m.dtype)
        e = np.zeros(p, dtype=m.dtype)
        for j in range(p):
            e[j] = 1
            m._call(kind, self.n_samples, (t, e, *self.data), flat_out=(h[j],))  # row j = column j
            e[j] = 0
        return (h + h.T) / 2   # a host array, for any theta: dense factorizations run on the host


def _rows(d: list[np.ndarray]) -> int:
    return d[0].shape[0] if d else 1


def _sinks(kind: str, spec: _Kind, sig: Signature) -> tuple[Sink, ...]:
    from codegen.lower import Sink
    sinks: list[Sink] = []
    for o in spec.outputs:
        if o == "objective":
            sinks.append(Sink("objective", "return"))
        elif o == "output":
            sinks.append(Sink("output", "rows", "out"))
        else:
            kind_ = "rows" if o == "jac" else "flat"
            array = "jac" if o == "jac" else _FLAT_ARRAYS[o]
            sinks += [Sink(f"{o}:{n}", kind_, array, off, int(np.prod(shape)) if shape else 1)
                      for n, shape, off, _ in sig.params]
    return tuple(sinks)


def _build_group(model: Model, group: str) -> _Group:
    """Derive, lower, emit and load the kernels of one group (see ``_Kind``)."""
    import numba

    # codegen imports symgrad.ir; importing it here keeps `import codegen.x` free of a cycle
    from codegen.cache import cache_key, load_source
    from codegen.lower import lower
    fwd, sig, ft = model._forward, model.signature, model.dtype.name
    t0 = time.perf_counter()
    programs: dict[str, Any] = {"forward": fwd.program, "gradient": model._adjoint.program}
    if group == "second":
        programs["curvature"] = curvature(fwd.program, model._adjoint).program
        if model.has_output:
            programs["jacobian"] = jacobian(fwd.program)
    t1 = time.perf_counter()
    roles = {n: role for n, role, _, _ in sig.data}
    layout = {n: (off, shape) for n, shape, off, _ in sig.params}
    lowered: dict[str, Lowered] = {}
    refused: dict[str, IRError] = {}
    for kind, spec in _KIND_SPECS.items():
        if spec.group != group or spec.program not in programs:
            continue
        if (kind == "predict" and not model.has_output) or (kind == "gnvp" and not model.has_split):
            continue
        flat = {"param": "theta", "tangent": "v"} if spec.tangent else {"param": "theta"}
        args = tuple((n, roles[n]) for n in model._reads[spec.data])
        if kind == "jacobian":
            args += ((COTANGENT, "cotangent"),)
        try:
            lowered[kind] = lower(programs[spec.program], _sinks(kind, spec, sig), name=kind, float_type=ft,
                                  data=args, flat_leaves=flat, param_layout=layout, doc=spec.doc,
                                  target=model.target)
        except IRError as e:
            if model.backend == "cpu" or group == "first":
                raise
            refused[kind] = e   # e.g. the CUDA Jacobian of a wide layer: the other kinds still build
    t2 = time.perf_counter()
    kernels = [k for low in lowered.values() for k in low.kernels]
    title = model.title + ("" if group == "first" else " (second order)")
    source = model.target.emitter(kernels, title=title, float_type=ft, fastmath=model.fastmath, version=__version__)
    t3 = time.perf_counter()
    key = cache_key(source, model.backend, ft, str(model.fastmath), numba.__version__, __version__,
                    _runtime_hash())
    module, hit, path = load_source(source, key)
    t4 = time.perf_counter()
    stats = {"source_lines": source.count("\n"), "cache": "hit" if hit else "miss",
             "cache_key": key[:16], "cache_file": str(path),
             "stages": {"derivatives": t1 - t0, "lower": t2 - t1, "emit": t3 - t2, "cache_import": t4 - t3}}
    return _Group(module, lowered, programs, source, stats, refused)


def _float_type(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dt}")
    return dt


def compile(loss: Tensor, output: Tensor | None = None, *, dtype: Any = np.float64,  # noqa: A001
            backend: Any = "cpu", fastmath: bool = False, check_finite: bool = True,
            name: str = "model") -> Model:
    """Derive and generate the kernels of ``loss`` (a per-sample scalar expression).

    ``output`` (optional) is what :meth:`Model.predict` returns and
    :meth:`Model.jacobian` differentiates. ``fastmath`` lets LLVM reassociate
    floating-point sums (faster, results then depend on vectorization).
    ``check_finite`` rejects NaN/inf in data. ``backend`` is "cpu", "cuda" or
    a configured :class:`codegen.targets.Target` (its thresholds and limits).
    The first-order kernels are generated here; the second-order ones (hvp,
    gnvp, value_grad_hvp, jacobian) on their first use.
    """
    from codegen.targets import target_of
    target = target_of(backend)
    if target.name == "cuda":
        from .cuda_runner import cuda_status
        ok, why = cuda_status()
        if not ok:
            warnings.warn(f"backend='cuda': {why}; the kernels are generated and their source and PTX "
                          "can be inspected, but calling them raises. Set NUMBA_ENABLE_CUDASIM=1 (before "
                          "numba is imported) to run them in the simulator", RuntimeWarning, stacklevel=2)
    dt = _float_type(dtype)
    t0 = time.perf_counter()
    fwd = build_forward(loss, output)
    t1 = time.perf_counter()
    adj = gradient(fwd.program)
    t2 = time.perf_counter()
    title = f"{name}: loss {loss.name!r}, params {', '.join(fwd.signature.param_names) or '-'}"
    model = Model(fwd, adj, dt, fastmath, check_finite, title, target)
    first = model._group("first")
    model.stats.update({
        "ops_before_cse": fwd.requested_ops + adj.builder.requested,
        "ops_after_cse": len(adj.program.body),
        "forward_ops": len(fwd.program.body),
    })
    model.stats["stages"] = {"program": t1 - t0, "derivatives": t2 - t1,
                             **{k: v for k, v in first.stats["stages"].items() if k != "derivatives"}}
    return model
