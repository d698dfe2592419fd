"""Kernel IR -> kernel IR: a CPU chunk kernel's temporaries as views of one buffer per call.

Every ``np.empty`` in a kernel costs ~6 ms of Numba compile (its allocation code and error paths
are inlined at each site) and a heap allocation per chunk at run time; a view of a flat buffer
(the runtime's ``view`` intrinsic) costs a few instructions and no branch. So the chunk loop's
temporaries, the arrays of shape ``(rows, ...)`` or of a fixed shape it allocates, become views
of one buffer per element type, allocated once per call and sized for the largest chunk
(``chunk`` rows). Temporaries whose lifetimes do not overlap share space (first fit, in order
of definition), so the buffer holds what one chunk needs at its peak, not the sum of
everything; every slot starts a multiple of 8 elements into the buffer (64 bytes in float64).

A slot of a ``(rows, ...)`` temporary starts at ``fixed + rows * offset``: with ``rows`` at
most ``chunk``, the slots of one chunk are disjoint for any row count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from symgrad.names import ARENAS

from .kernel_ir import Affine, Alloc, Kernel, Let, Loop, Stmt, View, defines, uses

__all__ = ["arena", "chunk_loop", "ALIGN"]

#: slot boundaries, in elements
ALIGN = 8


@dataclass(frozen=True)
class _Temp:
    alloc: Alloc
    per_row: bool       # its first axis is the chunk's rows
    size: int           # elements (per row when per_row), rounded up to ALIGN
    first: int          # the statement that allocates it
    last: int           # the last statement that touches it (or a view of it)


def _eligible(s: Stmt) -> tuple[bool, int] | None:
    """(per row, elements) of a heap temporary the buffer can hold, else None."""
    if not isinstance(s, Alloc) or s.space != "heap" or s.dtype not in ARENAS:
        return None
    dims = [d for d in s.shape]
    if not all(isinstance(d, Affine) for d in dims):
        return None
    per_row = bool(dims) and dims[0] == Affine.of("rows")
    rest = dims[1:] if per_row else dims
    if not all(d.is_const for d in rest):
        return None
    return per_row, math.prod(d.const for d in rest)


def _temps(body: tuple[Stmt, ...], after: set[str]) -> list[_Temp]:
    """The chunk loop's temporaries with their lifetimes (a view of one extends its life)."""
    found: dict[str, tuple[Alloc, bool, int, int]] = {}
    owner: dict[str, str] = {}
    last: dict[str, int] = {}
    for t, s in enumerate(body):
        e = _eligible(s)
        if e is not None and s.name not in after:   # type: ignore[union-attr]
            found[s.name] = (s, e[0], e[1], t)      # type: ignore[union-attr]
            owner[s.name] = s.name                  # type: ignore[union-attr]
            last[s.name] = t                        # type: ignore[union-attr]
            continue
        if isinstance(s, View) and s.base in owner:
            owner[s.name] = owner[s.base]
        for n in uses([s]) | defines(s):
            if n in owner:
                last[owner[n]] = t
    return [_Temp(a, per_row, -(-size // ALIGN) * ALIGN, first, last[name])
            for name, (a, per_row, size, first) in found.items()]


def _first_fit(temps: list[_Temp]) -> tuple[dict[str, int], int]:
    """Offsets (lowest free space not in use by a live temporary) and the extent used."""
    placed: list[tuple[int, int, int]] = []   # (offset, size, last statement)
    offsets: dict[str, int] = {}
    extent = 0
    for tmp in sorted(temps, key=lambda x: x.first):
        live = sorted((o, n) for o, n, end in placed if end >= tmp.first)
        at = 0
        for o, n in live:
            if at + tmp.size <= o:
                break
            at = max(at, o + n)
        placed.append((at, tmp.size, tmp.last))
        offsets[tmp.alloc.name] = at
        extent = max(extent, at + tmp.size)
    return offsets, extent


def chunk_loop(body: tuple[Stmt, ...]) -> int | None:
    """The position of the loop over chunks: the loop whose body defines ``rows``."""
    for pos, s in enumerate(body):
        if isinstance(s, Loop) and any(isinstance(b, Let) and b.name == "rows" for b in s.body):
            return pos
    return None


def arena(k: Kernel) -> Kernel:
    """``k`` with its chunk loop's temporaries as views of one buffer per element type (see the
    module docstring); a kernel without a chunk loop, or without temporaries, is returned as is."""
    pos = chunk_loop(k.body)
    if pos is None or k.host:
        return k
    loop = k.body[pos]
    assert isinstance(loop, Loop)
    after = uses(list(k.body[pos + 1:]))
    temps = _temps(loop.body, after)
    if not temps:
        return k
    views: dict[str, View] = {}
    buffers: list[Stmt] = []
    for dtype, buf in ARENAS.items():
        mine = [t for t in temps if t.alloc.dtype == dtype]
        if not mine:
            continue
        fixed, fixed_size = _first_fit([t for t in mine if not t.per_row])
        rowed, row_size = _first_fit([t for t in mine if t.per_row])
        for t in mine:
            a = t.alloc
            if t.per_row:
                start = replace(Affine.of(fixed_size) + Affine.of("rows") * rowed[a.name], const_first=True)
                shape: tuple[int | Affine, ...] = (Affine.of("rows"), *(d.const for d in a.shape[1:]))
                stop = start + Affine.of("rows") * math.prod(d.const for d in a.shape[1:])
            else:
                start = Affine.of(fixed[a.name])
                shape = tuple(d.const for d in a.shape)
                stop = start + math.prod(shape)
            views[a.name] = View(a.name, buf, start, stop, shape, a.comment)
        size = Affine.of(fixed_size) + Affine.of("chunk") * row_size
        buffers.append(Alloc(buf, (replace(size, const_first=True),), dtype, comment=(
            "the chunk's temporaries, as views of one buffer: sized for the largest chunk, "
            "reused by every chunk, slots shared by values whose lifetimes do not overlap")))
    body = tuple(views.get(s.name, s) if isinstance(s, Alloc) else s for s in loop.body)   # type: ignore[arg-type]
    return replace(k, body=k.body[:pos] + tuple(buffers) + (replace(loop, body=body),) + k.body[pos + 1:])
