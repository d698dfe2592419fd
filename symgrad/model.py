"""``sg.compile``: the pipeline from a loss expression to callable kernels, and the Model.

DSL graph -> forward program -> adjoint program -> kernel IR -> Numba source
-> cached module. Numba compiles each kernel on its first call (or loads it
from its cache); everything before that happens in ``compile``.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .autodiff import vjp
from .derivation import Derivation
from .dsl import GraphError, Tensor
from .initializers import initialize
from .program import Forward, Signature, build_forward
from .runner import KernelRunner

if TYPE_CHECKING:
    from codegen.lower import Lowered

__all__ = ["Model", "compile", "DataError", "KINDS"]

#: kernel kinds every CPU model has
KINDS = ("loss", "value_and_grad", "predict")


class DataError(ValueError):
    """Arguments that do not match the model: names the argument, expected and actual shapes."""


def _runtime_hash() -> str:
    import inspect

    from codegen.cache import cache_key

    from . import runtime
    return cache_key(inspect.getsource(runtime))


class _DataSpec:
    """Validation and conversion of one data argument.

    The value checks (finite, labels in range) are O(N); they are skipped when
    the very array object last validated is passed again, as in an optimizer
    loop. An array modified in place after it passed is therefore not
    re-checked.
    """

    __slots__ = ("name", "role", "shape", "classes", "_last")

    def __init__(self, name: str, role: str, shape: tuple[int, ...], classes: int) -> None:
        self.name, self.role, self.shape, self.classes = name, role, shape, classes
        self._last: tuple[Any, np.ndarray] | None = None   # (object passed, converted array)

    def convert(self, x: Any, dtype: np.dtype, check_finite: bool) -> np.ndarray:
        last = self._last
        if last is not None and last[0] is x:
            return last[1]
        a = self._labels(x) if self.role == "labels" else self._real(x, dtype, check_finite)
        self._last = (x, a)
        return a

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


class Model:
    """A compiled model: kernels over a flat parameter vector ``theta``.

    Data arguments follow :attr:`data_names` (inputs, then targets/labels) or
    are passed by name. The objective is the mean over the N samples of the
    per-sample loss (parameter-only terms are added once).
    """

    def __init__(self, forward: Forward, adjoint_program: Any, n_forward: int, module: Any,
                 lowered: dict[str, Lowered], source: str, dtype: np.dtype, fastmath: bool,
                 check_finite: bool, stats: dict[str, Any], title: str) -> None:
        self._forward = forward
        self._adjoint = adjoint_program
        self._n_forward = n_forward
        self._module = module
        self._lowered = lowered
        self._runners: dict[str, KernelRunner] = {}
        self._source = source
        self.dtype = dtype
        self.fastmath = fastmath
        self.check_finite = check_finite
        self.stats = stats
        self.title = title
        sig: Signature = forward.signature
        self.signature = sig
        self.param_names: tuple[str, ...] = sig.param_names
        self.data_names: tuple[str, ...] = sig.data_names
        self.n_params: int = sig.size
        self._specs = {n: _DataSpec(n, role, shape, classes) for n, role, shape, classes in sig.data}
        self._inputs = tuple(n for n, role, _, _ in sig.data if role == "input")
        self.has_output = any(k == "output" for k, _ in forward.program.outputs)

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

    def _theta(self, theta: Any, copy_ok: bool = True) -> np.ndarray:
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
        out = [self._specs[n].convert(given[n], self.dtype, self.check_finite) for n in names]
        if out:
            n0 = out[0].shape[0]
            for n, a in zip(names, out):
                if a.shape[0] != n0:
                    raise DataError(f"data {n!r} has {a.shape[0]} samples but {names[0]!r} has {n0}")
            if n0 == 0:
                raise DataError("data arrays hold no samples (N = 0)")
        return out

    def _runner(self, kind: str) -> KernelRunner:
        r = self._runners.get(kind)
        if r is None:
            low = self._lowered[kind]
            chunks = getattr(self._module, low.chunks.name) if low.chunks is not None else None
            r = KernelRunner(chunks, getattr(self._module, kind), low.n_acc, self.dtype,
                             needs_finish=kind != "predict")
            self._runners[kind] = r
        return r

    def _call(self, kind: str, n: int, lead: tuple, rows_out: tuple = (), flat_out: tuple = ()) -> Any:
        runner = self._runner(kind)
        if kind in self.stats["kernels_compiled"]:
            return runner(n, lead, rows_out, flat_out)
        t0 = time.perf_counter()
        res = runner(n, lead, rows_out, flat_out)
        fns = [f for f in (runner.chunks, runner.finish) if f is not None]
        self.stats["kernels_compiled"][kind] = {
            "first_call_seconds": round(time.perf_counter() - t0, 4),
            "numba_cache": "hit" if all(f.stats.cache_hits for f in fns) else "miss"}
        return res

    # ------------------------------------------------------------------ kernels
    def loss(self, theta: Any, *data: Any, **named: Any) -> float:
        """The objective: mean over samples of the per-sample loss."""
        t = self._theta(theta)
        d = self._data(self.data_names, data, named)
        return float(self._call("loss", d[0].shape[0] if d else 1, (t, *d)))

    def value_and_grad(self, theta: Any, *data: Any, **named: Any) -> tuple[float, np.ndarray]:
        """(objective, gradient) from one fused forward+backward kernel call."""
        t = self._theta(theta)
        d = self._data(self.data_names, data, named)
        g = np.empty(self.n_params, dtype=self.dtype)
        f = self._call("value_and_grad", d[0].shape[0] if d else 1, (t, *d), flat_out=(g,))
        return float(f), g

    def grad(self, theta: Any, *data: Any, **named: Any) -> np.ndarray:
        """The gradient of the objective (the value_and_grad kernel)."""
        return self.value_and_grad(theta, *data, **named)[1]

    def predict(self, theta: Any, *inputs: Any, **named: Any) -> np.ndarray:
        """The ``output`` expression for each sample: shape (N, *output.shape)."""
        if not self.has_output:
            raise GraphError("predict needs sg.compile(loss, output=...)")
        t = self._theta(theta)
        d = self._data(self._inputs, inputs, named)
        out_v = self._forward.program.output("output")
        n = d[0].shape[0] if d else 1
        out = np.empty((n,) + out_v.shape, dtype=self.dtype)
        self._call("predict", n, (t, *d), rows_out=(out,))
        return out

    # ------------------------------------------------------------------ inspection
    def source(self, kind: str = "value_and_grad") -> str:
        """The generated Numba source of one kernel (``kind`` in KINDS) or 'module' for all."""
        if kind == "module":
            return self._source
        self._check_kind(kind)
        import inspect
        return "\n\n".join(inspect.getsource(getattr(self._module, k.name).py_func)
                           for k in self._lowered[kind].kernels)

    def derivation(self, kind: str = "value_and_grad") -> Derivation:
        """The derived program: forward assignments then adjoints; print it or call .latex()."""
        self._check_kind(kind)
        if kind == "value_and_grad":
            return Derivation(f"{self.title}: gradient by reverse accumulation", self._adjoint,
                              self._n_forward)
        prog = self._forward.program
        return Derivation(f"{self.title}: forward program", prog, len(prog.body))

    def _inspect_dispatcher(self, kind: str) -> Any:
        """An uncached copy of the kernel, compiled for the types it is called with:
        a kernel loaded from Numba's cache has no LLVM IR or assembly to show."""
        import numba
        cache = self.__dict__.setdefault("_inspect", {})
        if kind in cache:
            return cache[kind]
        low = self._lowered[kind]
        k = getattr(self._module, (low.chunks or low.finish).name)
        opts = {o: v for o, v in k.targetoptions.items() if o not in ("cache", "nopython")}
        d = numba.njit(**opts)(k.py_func)
        n = 3
        args: list[Any] = [np.zeros(self.n_params, dtype=self.dtype)]
        names = self._inputs if kind == "predict" else self.data_names
        for name in names:
            sp_ = self._specs[name]
            args.append(np.zeros(n, np.int64) if sp_.role == "labels"
                        else np.zeros((n,) + sp_.shape, dtype=self.dtype))
        if low.chunks is not None:
            if kind == "predict":
                args.append(np.zeros((n,) + self._forward.program.output("output").shape,
                                     dtype=self.dtype))
            args += [np.zeros((1, low.n_acc), dtype=self.dtype), 0, 1]
        elif kind == "value_and_grad":
            args.append(np.zeros(self.n_params, dtype=self.dtype))
        d.compile(tuple(numba.typeof(a) for a in args))
        cache[kind] = d
        return d

    def llvm(self, kind: str = "value_and_grad") -> str:
        """LLVM IR of the kernel (its per-chunk function, where the work is)."""
        self._check_kind(kind)
        d = self._inspect_dispatcher(kind)
        return next(iter(d.inspect_llvm().values()))

    def asm(self, kind: str = "value_and_grad") -> str:
        """Native assembly of the kernel (its per-chunk function, where the work is)."""
        self._check_kind(kind)
        d = self._inspect_dispatcher(kind)
        return next(iter(d.inspect_asm().values()))

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kernel kind {kind!r}; this model has {KINDS}")
        if kind == "predict" and not self.has_output:
            raise GraphError("this model has no output: sg.compile(loss, output=...)")

    def __repr__(self) -> str:
        return (f"Model({self.title!r}, params={self.param_names}, data={self.data_names}, "
                f"P={self.n_params}, dtype={self.dtype})")


def _float_type(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dt}")
    return dt


def compile(loss: Tensor, output: Tensor | None = None, *, dtype: Any = np.float64,  # noqa: A001
            backend: str = "cpu", fastmath: bool = False, check_finite: bool = True,
            name: str = "model") -> Model:
    """Derive and generate the kernels of ``loss`` (a per-sample scalar expression).

    ``output`` (optional) is what :meth:`Model.predict` returns. ``fastmath``
    lets LLVM reassociate floating-point sums (faster, results then depend on
    vectorization). ``check_finite`` rejects NaN/inf in data.
    """
    # codegen imports symgrad.ir; importing it here keeps `import codegen.x` free of a cycle
    from codegen.cache import cache_key, load_source
    from codegen.emit_cpu import emit_module
    from codegen.lower import Sink, lower

    if backend != "cpu":
        raise ValueError(f"backend {backend!r} is not available; this build has backend='cpu'")
    dt = _float_type(dtype)
    ft = dt.name
    stats: dict[str, Any] = {"stages": {}, "kernels_compiled": {}}
    t0 = time.perf_counter()
    fwd = build_forward(loss, output)
    t1 = time.perf_counter()
    adj_prog, adj_builder, _ = vjp(fwd.program)
    t2 = time.perf_counter()
    sig = fwd.signature
    layout = {n: (off, shape) for n, shape, off, _ in sig.params}
    data = tuple((n, role) for n, role, _, _ in sig.data)
    inputs = tuple((n, role) for n, role, _, _ in sig.data if role == "input")
    grads = tuple(Sink(f"grad:{n}", "flat", "grad", off, int(np.prod(shape)) if shape else 1)
                  for n, shape, off, _ in sig.params)
    lowered = {
        "loss": lower(fwd.program, (Sink("objective", "return"),), name="loss", float_type=ft, data=data,
              flat_leaves={"param": "theta"}, param_layout=layout,
              doc="Objective: mean over the batch of the per-sample loss."),
        "value_and_grad": lower(adj_prog, (Sink("objective", "return"),) + grads, name="value_and_grad", float_type=ft,
              data=data, flat_leaves={"param": "theta"}, param_layout=layout,
              doc="Objective and its gradient (written into grad), forward and backward fused."),
    }
    if output is not None:
        lowered["predict"] = (lower(fwd.program, (Sink("output", "rows", "out"),), name="predict",
                             float_type=ft, data=inputs, flat_leaves={"param": "theta"},
                             param_layout=layout, doc="The output expression for each sample."))
    t3 = time.perf_counter()
    title = f"{name}: loss {loss.name!r}, params {', '.join(sig.param_names) or '-'}"
    import numba
    kernels = [k for low in lowered.values() for k in low.kernels]
    source = emit_module(kernels, title=title, float_type=ft, fastmath=fastmath, version=__version__)
    t4 = time.perf_counter()
    key = cache_key(source, "cpu", ft, str(fastmath), numba.__version__, __version__, _runtime_hash())
    module, hit, path = load_source(source, key)
    t5 = time.perf_counter()
    n_fwd = len(fwd.program.body)
    stats.update({
        "ops_before_cse": fwd.requested_ops + adj_builder.requested,
        "ops_after_cse": len(adj_prog.body),
        "forward_ops": n_fwd,
        "source_lines": source.count("\n"),
        "cache": "hit" if hit else "miss",
        "cache_key": key[:16],
        "cache_file": str(path),
    })
    stats["stages"] = {"program": t1 - t0, "derivatives": t2 - t1, "lower": t3 - t2,
                       "emit": t4 - t3, "cache_import": t5 - t4}
    return Model(fwd, adj_prog, n_fwd, module, lowered, source, dt, fastmath, check_finite, stats, title)
