"""Data arguments: each checked and converted once, with errors that name the argument.

A model's data arrays are (N, *shape) per argument (labels (N,)); the value
checks (finite, labels in range) are O(N), so an array used as is is
remembered and not checked again when the same object comes back (an
optimizer's loop).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .cuda_runner import on_device

__all__ = ["DataError", "DataSpec"]


class DataError(ValueError):
    """Arguments that do not match the model: names the argument, expected and actual shapes."""


class DataSpec:
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
