"""Indexing and shape ops of the DSL, each an affine index map (:mod:`symgrad.ops.index_map`).

NumPy's basic indexing (ints, slices with positive steps, ``...``, ``None``),
``transpose``, ``reshape`` / ``flatten`` (C order, as NumPy and
``torch.flatten``), ``pad`` (NumPy's ``pad_width``), ``concat`` and
``stack``. A reshape is the flattening of its operand (the transpose of the
map reading a flat vector in C order) followed by that map: a copy each way,
so every derived program sees only index maps.
"""
from __future__ import annotations

import math
from typing import Sequence

from .dsl import GraphError, Tensor, _apply
from .ops.index_map import AxisMap, IndexMap, IndexScatter, Map

__all__ = ["getitem", "transpose", "reshape", "flatten", "pad", "concat", "stack", "index_map"]


def _real(x: object, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.kind != "real":
        raise GraphError(f"{what}: expected a real symgrad Tensor, got {x!r}")
    return x


def index_map(x: Tensor, shape: Sequence[int], axes: Sequence[AxisMap], fill: float = 0.0,
              name: str = "index_map") -> Tensor:
    """``out[o] = x[axes(o)]`` where in bounds, ``fill`` elsewhere: the general form the other
    functions here build (and the windows of :mod:`symgrad.conv`)."""
    return Tensor(IndexMap(Map(tuple(shape), x.shape, tuple(axes)), float(fill)), (x,), name)


def _unit(n: int, k: int, coef: int = 1, const: int = 0) -> AxisMap:
    return AxisMap(tuple(coef if j == k else 0 for j in range(n)), const)


def getitem(x: Tensor, key: object) -> Tensor:
    """``x[key]`` with NumPy's basic indexing."""
    _real(x, "indexing")
    items = list(key) if isinstance(key, tuple) else [key]
    if sum(k is Ellipsis for k in items) > 1:
        raise GraphError(f"{x.name}[...]: an index can have only one Ellipsis")
    used = sum(1 for k in items if k is not None and k is not Ellipsis)
    if used > len(x.shape):
        raise GraphError(f"{x.name}{list(x.shape)}: too many indices ({used}) for {len(x.shape)} axes")
    at = items.index(Ellipsis) if Ellipsis in items else len(items)
    items[at:at + 1] = [slice(None)] * (len(x.shape) - used)
    shape: list[int] = []
    reads: list[tuple[int | None, int, int]] = []   # per source axis: (output axis, step, start)
    axis = 0
    for k in items:
        if k is None:
            shape.append(1)
            continue
        n = x.shape[axis]
        if isinstance(k, int) and not isinstance(k, bool):
            if not -n <= k < n:
                raise GraphError(f"{x.name}[...]: index {k} is out of range for axis {axis} of size {n}")
            reads.append((None, 0, k % n))
        elif isinstance(k, slice):
            if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in (k.start, k.stop, k.step)):
                raise GraphError(f"{x.name}[...]: slice {k} must have int bounds and step")
            if k.step is not None and k.step <= 0:
                raise GraphError(f"{x.name}[...]: slice step {k.step} on axis {axis}: only positive steps")
            start, stop, step = k.indices(n)
            count = len(range(start, stop, step))
            if count == 0:
                raise GraphError(f"{x.name}[...]: slice {k} of axis {axis} (size {n}) is empty")
            reads.append((len(shape), step, start))
            shape.append(count)
        else:
            raise GraphError(f"{x.name}[...]: index {k!r} is not an int, a slice, ... or None "
                             "(basic indexing only)")
        axis += 1
    n_out = len(shape)
    axes = [_unit(n_out, o, step, start) if o is not None else AxisMap((0,) * n_out, start)
            for o, step, start in reads]
    return index_map(x, shape, axes, name=f"{x.name}_item")


def transpose(x: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    """The axes of ``x`` permuted (reversed by default), as ``np.transpose``."""
    _real(x, "transpose")
    n = len(x.shape)
    perm = tuple(range(n))[::-1] if axes is None else tuple(axes)
    if sorted(a % n if isinstance(a, int) and -n <= a < n else -1 for a in perm) != list(range(n)):
        raise GraphError(f"transpose: axes {axes!r} are not a permutation of the {n} axes of {x.name}")
    perm = tuple(a % n for a in perm)
    where = {src: out for out, src in enumerate(perm)}
    return index_map(x, tuple(x.shape[a] for a in perm), [_unit(n, where[k]) for k in range(n)],
                     name=f"{x.name}_T")


def _c_order(shape: tuple[int, ...]) -> AxisMap:
    """The flat C-order position of an element of ``shape``, over its axes."""
    strides = [math.prod(shape[k + 1:]) for k in range(len(shape))]
    return AxisMap(tuple(strides))


def reshape(x: Tensor, shape: int | Sequence[int]) -> Tensor:
    """``x`` with another shape of the same size, in C order (one ``-1`` is inferred)."""
    _real(x, "reshape")
    dims = [shape] if isinstance(shape, int) else list(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in dims) \
            or dims.count(-1) > 1:
        raise GraphError(f"reshape: {shape!r} is not a shape (positive ints, at most one -1)")
    if -1 in dims:
        rest = math.prod(d for d in dims if d != -1)
        if x.size % rest:
            raise GraphError(f"reshape: cannot infer -1 in {shape!r} for {x.name} of size {x.size}")
        dims[dims.index(-1)] = x.size // rest
    new = tuple(dims)
    if math.prod(new) != x.size:
        raise GraphError(f"reshape: {x.name} of shape {x.shape} (size {x.size}) cannot become {new} "
                         f"(size {math.prod(new)})")
    if new == x.shape:
        return x
    flat = x
    if len(x.shape) > 1:   # the flat vector: the transpose of reading it back at x's shape
        flat = Tensor(IndexScatter(Map(x.shape, (x.size,), (_c_order(x.shape),))), (x,), f"{x.name}_flat")
    if len(new) == 1:
        return flat
    return index_map(flat, new, [_c_order(new)], name=f"{x.name}_reshaped")


def flatten(x: Tensor) -> Tensor:
    """All per-sample axes as one, in C order (``torch.flatten(x, 1)`` on a batch)."""
    return reshape(_real(x, "flatten"), (x.size,)) if x.shape else reshape(x, (1,))


def _pad_width(x: Tensor, pad_width: object) -> list[tuple[int, int]]:
    n = len(x.shape)

    def pair(p: object) -> tuple[int, int]:
        if isinstance(p, int) and not isinstance(p, bool):
            return p, p
        if isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in p):
            return int(p[0]), int(p[1])
        raise GraphError(f"pad: pad_width {pad_width!r} is not NumPy's (an int, a (before, after) pair, "
                         f"or one pair per axis of {x.name})")
    if isinstance(pad_width, (tuple, list)) and len(pad_width) == n and all(isinstance(p, (tuple, list)) for p in pad_width):
        out = [pair(p) for p in pad_width]
    else:
        out = [pair(pad_width)] * n
    if any(b < 0 or a < 0 for b, a in out):
        raise GraphError(f"pad: negative padding {pad_width!r}")
    return out


def pad(x: Tensor, pad_width: object, value: float = 0.0) -> Tensor:
    """``np.pad(x, pad_width, constant_values=value)`` (no gradient flows to ``value``)."""
    _real(x, "pad")
    if not x.shape:
        raise GraphError(f"pad: {x.name} is a scalar")
    widths = _pad_width(x, pad_width)
    n = len(x.shape)
    shape = tuple(d + b + a for d, (b, a) in zip(x.shape, widths))
    return index_map(x, shape, [_unit(n, k, 1, -b) for k, (b, _) in enumerate(widths)], fill=value,
                     name=f"{x.name}_pad")


def _axis(n: int, axis: object, what: str) -> int:
    if not isinstance(axis, int) or isinstance(axis, bool) or not -n <= axis < n:
        raise GraphError(f"{what}: axis {axis!r} is out of range for {n} axes")
    return axis % n


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """The tensors joined along ``axis`` (``np.concatenate``): each padded into place, then added."""
    ts = [_real(t, "concat") for t in tensors] if isinstance(tensors, (list, tuple)) else None
    if not ts:
        raise GraphError(f"concat: expected a non-empty list of tensors, got {tensors!r}")
    first = ts[0]
    if not first.shape:
        raise GraphError("concat: scalars have no axis to join along (use stack)")
    ax = _axis(len(first.shape), axis, "concat")
    for t in ts[1:]:
        if len(t.shape) != len(first.shape) or any(a != b for k, (a, b) in enumerate(zip(t.shape, first.shape)) if k != ax):
            raise GraphError(f"concat: {t.name} {t.shape} does not match {first.name} {first.shape} "
                             f"off axis {ax}")
    if len(ts) == 1:
        return first
    total = sum(t.shape[ax] for t in ts)
    placed, at = [], 0
    for t in ts:
        widths = [(0, 0)] * len(t.shape)
        widths[ax] = (at, total - at - t.shape[ax])
        placed.append(pad(t, widths))
        at += t.shape[ax]
    out = placed[0]
    for p in placed[1:]:
        out = _apply("concat", lambda a, b: a + b, (out, p))
    return out


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """The tensors, all of one shape, along a new ``axis`` (``np.stack``)."""
    ts = [_real(t, "stack") for t in tensors] if isinstance(tensors, (list, tuple)) else None
    if not ts:
        raise GraphError(f"stack: expected a non-empty list of tensors, got {tensors!r}")
    for t in ts[1:]:
        if t.shape != ts[0].shape:
            raise GraphError(f"stack: {t.name} {t.shape} and {ts[0].name} {ts[0].shape} differ")
    ax = _axis(len(ts[0].shape) + 1, axis, "stack")
    key = (slice(None),) * ax + (None,)
    return concat([getitem(t, key) for t in ts], ax)

