"""A model's objective on fixed data, checked once: what the optimizers call."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .cuda_runner import on_device
from .data import DataError
from .device import as_caller

if TYPE_CHECKING:
    from .model import Model

__all__ = ["Objective", "sample_count"]


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
        self.n_samples = sample_count(data)

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
        return float(f), as_caller(g, theta)

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
        return float(f), as_caller(g, theta), as_caller(hv, theta)

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
        return as_caller(out, theta)

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


def sample_count(d: list[np.ndarray]) -> int:
    return d[0].shape[0] if d else 1
