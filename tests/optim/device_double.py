"""A stand-in for a GPU array library (CuPy) and for a CUDA model's objective, on the CPU.

``DeviceArray`` dispatches NumPy functions and operators the way CuPy does
(NEP 13/18/35: results are DeviceArrays), refuses an implicit conversion to
a NumPy array and a NumPy array mixed into its operations, and counts the
explicit host copies (``get``). Scalars may
come back (``float``, ``bool``): that is a scalar's transfer, which the
optimizers may make. ``DeviceObjective`` answers as a CUDA model does for a
device theta: vectors in, vectors out on the "device"; dense matrices on the
host.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from symgrad.model import Objective


class DeviceArray(np.lib.mixins.NDArrayOperatorsMixin):
    host_copies = 0   # explicit device -> host copies of arrays (get), over all instances

    def __init__(self, a: Any) -> None:
        self._a = np.asarray(a)

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    T = property(lambda self: DeviceArray(self._a.T))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("implicit conversion of a device array to NumPy (a host transfer); use .get()")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        _refuse_host_arrays(inputs)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        res = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        return out[0] if out is not None and len(out) == 1 else _wrap(res)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if func not in (np.asarray, np.array):   # (like=: the explicit host-to-device copy)
            _refuse_host_arrays((args, kwargs))
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def get(self) -> np.ndarray:
        DeviceArray.host_copies += 1
        return self._a.copy()

    def copy(self) -> DeviceArray:
        return DeviceArray(self._a.copy())

    def astype(self, dtype: Any, copy: bool = True) -> DeviceArray:
        return DeviceArray(self._a.astype(dtype, copy=copy))

    def reshape(self, *shape: Any) -> DeviceArray:
        return DeviceArray(self._a.reshape(*shape))

    def ravel(self) -> DeviceArray:
        return DeviceArray(self._a.ravel())

    def min(self) -> DeviceArray:
        return DeviceArray(self._a.min())

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key)] = _unwrap(value)

    def __float__(self) -> float:
        return float(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __len__(self) -> int:
        return len(self._a)

    def __repr__(self) -> str:
        return f"DeviceArray({self._a!r})"


def _refuse_host_arrays(x: Any) -> None:
    """CuPy does not mix its arrays with NumPy arrays (only with scalars): neither does the double."""
    if isinstance(x, np.ndarray) and x.ndim:
        raise TypeError("a NumPy array mixed with a device array (an implicit host-to-device transfer)")
    if isinstance(x, (list, tuple)):
        for v in x:
            _refuse_host_arrays(v)
    elif isinstance(x, dict):
        for v in x.values():
            _refuse_host_arrays(v)


def _unwrap(x: Any) -> Any:
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x: Any) -> Any:
    if isinstance(x, (np.ndarray, np.generic)):   # reductions give 0-d device arrays, as in CuPy
        return DeviceArray(x)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x


class DeviceObjective(Objective):
    """A bound CPU objective answering like a CUDA model's for a device theta (see the module doc):
    the kernels read the device arrays in place, so no copy is counted for them."""

    def __init__(self, inner: Objective) -> None:
        super().__init__(inner.model, list(inner.data))

    def start(self, theta0: Any) -> DeviceArray:
        assert isinstance(theta0, DeviceArray)
        return theta0.copy()

    def subset(self, rows: Any) -> DeviceObjective:
        return DeviceObjective(super().subset(rows))

    def loss(self, theta: Any) -> float:
        return super().loss(_unwrap(theta))

    def value_and_grad(self, theta: Any) -> tuple[float, DeviceArray]:
        f, g = super().value_and_grad(_unwrap(theta))
        return f, DeviceArray(g)

    def _product(self, kind: str, theta: Any, v: Any) -> DeviceArray:
        return DeviceArray(super()._product(kind, _unwrap(theta), _unwrap(v)))

    def value_grad_hvp(self, theta: Any, v: Any) -> tuple[float, DeviceArray, DeviceArray]:
        f, g, hv = super().value_grad_hvp(_unwrap(theta), _unwrap(v))
        return f, DeviceArray(g), DeviceArray(hv)

    def predict(self, theta: Any) -> DeviceArray:
        return DeviceArray(super().predict(_unwrap(theta)))

    def jacobian(self, theta: Any) -> DeviceArray:
        return DeviceArray(super().jacobian(_unwrap(theta)))

    def _dense(self, kind: str, what: str, theta: Any, max_params: int) -> np.ndarray:
        return super()._dense(kind, what, _unwrap(theta), max_params)
