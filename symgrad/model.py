"""``sg.compile`` and the Model: kernels over a flat parameter vector.

DSL graph -> forward program -> adjoint program -> kernel IR -> Numba source
-> cached module (:mod:`symgrad.pipeline`). Numba compiles each kernel on its
first call (or loads it from its cache); everything before that happens in
``compile``. The model's concerns live beside it: the kind table
(:mod:`symgrad.kinds`), data checks (:mod:`symgrad.data`), device interop
(:mod:`symgrad.device`), inspection (:mod:`symgrad.inspection`) and the
bound objective (:mod:`symgrad.objective`).
"""
from __future__ import annotations

import functools
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from codegen.targets import TARGETS

from .autodiff import Adjoint
from .cuda_runner import on_device
from .data import DataError, DataSpec
from .derived import gradient, linearity
from .device import as_caller
from .dsl import GraphError, Tensor
from .initializers import initialize
from .inspection import Inspection
from .kinds import KIND_SPECS, KINDS
from .objective import Objective, sample_count
from .pipeline import Group, build_group
from .program import Forward, Signature, build_forward
from .runner import KernelRunner

if TYPE_CHECKING:
    from codegen.lower import Lowered

__all__ = ["Model", "Objective", "compile", "DataError", "KINDS", "BACKENDS"]

#: where the kernels run: Numba CPU (``@njit``) or numba-cuda (``@cuda.jit``)
BACKENDS = tuple(TARGETS)


class Model(Inspection):
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
        self._groups: dict[str, Group] = {}
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
        self._specs = {n: DataSpec(n, role, shape, classes) for n, role, shape, classes in sig.data}
        # the data each kind takes: what the loss's graph or the output's graph declares
        self._reads = {"objective": sig.loss_data, "output": sig.output_data}
        self._objective_data = self._reads["objective"]
        self._inputs = self._reads["output"]
        self.has_output = any(k == "output" for k, _ in forward.program.outputs)
        self.has_split = any(k.startswith("split:") for k, _ in forward.program.outputs)

    @functools.cached_property
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
        return as_caller(cuda.to_device(np.ascontiguousarray(host)), theta)

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
    def _group(self, group: str) -> Group:
        """The module holding ``group``'s kernels, derived, generated and loaded on first use."""
        g = self._groups.get(group)
        if g is None:
            g = build_group(self, group)
            self._groups[group] = g
            if group == "first":
                self.stats.update(g.stats)
            else:
                self.stats["second_order"] = g.stats
        return g

    def _lowered(self, kind: str) -> Lowered:
        g = self._group(KIND_SPECS[kind].group)
        if kind in g.refused:
            raise g.refused[kind]
        return g.lowered[kind]

    def _runner(self, kind: str) -> KernelRunner:
        r = self._runners.get(kind)
        if r is None:
            low = self._lowered(kind)
            module = self._group(KIND_SPECS[kind].group).module
            chunks = getattr(module, low.chunks.name) if low.chunks is not None else None
            spec = KIND_SPECS[kind]
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
        module = self._group(KIND_SPECS[kind].group).module
        fns = [f for f in (getattr(module, k.name) for k in self._lowered(kind).kernels) if hasattr(f, "stats")]
        try:
            res = runner(n, lead, rows_out, flat_out)
        except Exception as e:   # a damaged Numba cache entry is rebuilt, never fatal
            if not numba_cache_failed(e):
                raise
            # every function of the module: a kernel's damaged entry may be one of its loop functions
            flush_numba_cache([f for f in vars(module).values() if getattr(f, "__module__", None) == module.__name__
                               and hasattr(f, "_cache")], e)
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
        n = sample_count(d)
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
        n = sample_count(d)
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

    def _check_kind(self, kind: str) -> None:
        if kind not in KIND_SPECS:
            raise ValueError(f"unknown kernel kind {kind!r}; kinds are {KINDS}")
        if kind in ("predict", "jacobian") and not self.has_output:
            raise GraphError(f"{kind} needs the model's output: sg.compile(loss, output=...)")
        if kind == "gnvp" and not self.has_split:
            raise GraphError("gnvp needs a split between network and loss: use a built-in loss "
                             "(sg.mse, sg.softmax_cross_entropy, ...) or sg.compile(loss, output=...)")

    def __repr__(self) -> str:
        return (f"Model({self.title!r}, params={self.param_names}, data={self.data_names}, "
                f"P={self.n_params}, dtype={self.dtype})")


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
