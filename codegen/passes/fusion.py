"""Pass 4: loop fusion and scalarization inside the per-row loop of a chunk.

Each op is lowered on its own to a loop over its features. Here adjacent
loops over the same features are merged when the later one reads what the
earlier one wrote only at the same element (elementwise chains, a bias add
and its activation, a reduction over the features), and a value that is only
touched inside one merged loop (or is a per-row scalar) becomes a local
scalar instead of an array: it never goes to memory.

On the CPU one merge is refused: a loop that calls a costly function (tanh,
exp, log, ...) is not merged with one that holds an inner loop (a reduction
or contraction left as loops; products are BLAS calls there). LLVM vectorizes a flat loop of calls to the libm-free helpers,
but not a loop with a reduction nested in it: W1's first layer (``x @ W.T``
over 2 features, then tanh) took 650 µs fused and 400 µs split.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import sympy as sp

from ..kernel_ir import Affine, Compute, If, Index, Let, Loop, Ref, Stmt, defines, uses, walk_refs

if TYPE_CHECKING:
    from ..lower import Lowering

__all__ = ["run", "fuse_row_body", "drop_row_index", "reindex", "split_rows", "ROW_MOST"]

#: statements (computations, tests, lets, at any depth) of one row loop, at most, where it can be
#: cut: LLVM's time grows faster than a function's size (a CNN's fused row loop of 1,000 lines
#: took 69 s to compile), and each piece of a cut row loop is a loop function of its own
ROW_MOST = 16


def run(L: Lowering) -> None:
    """Each row group of phase B fused and scalarized, then made code by the backend (a row loop
    and its arrays; on a staged GPU pass, a row kernel)."""
    from .emission import RowGroup
    body: list = []
    for item in L.chunk_body:
        if not isinstance(item, RowGroup):
            body.append(item)
            continue
        fused, scalars = fuse_row_body(list(item.stmts), "r", set(item.local), vector=L.backend.vector)
        kept = [v for v in item.defined if L.store[v.name].name not in scalars]
        opaque = set().union(*(uses([x]) | defines(x) for x in item.stmts if not isinstance(x, (Compute, Loop))))
        body.extend(L.backend.close_rows(L, fused, kept, set(item.local), opaque))
    L.chunk_body = body


def _writes(loop: Loop) -> dict[str, Index]:
    return {r.name: r.index for kind, r, _ in walk_refs(loop.body) if kind == "write"}


#: functions cheap enough to sit in a loop LLVM does not vectorize (selects, not calls)
_CHEAP = (sp.Heaviside, sp.sign, sp.Abs, sp.Max, sp.Min, sp.DiracDelta, sp.Piecewise)


def _costly(loop: Loop) -> bool:
    """Does ``loop`` evaluate a transcendental function (a call, unless vectorized)?"""
    def go(body: tuple[Stmt, ...]) -> bool:
        for s in body:
            if isinstance(s, Compute) and any(not isinstance(f, _CHEAP) for f in s.expr.atoms(sp.Function)):
                return True
            if isinstance(s, Loop) and go(s.body):
                return True
        return False
    return go(loop.body)


def _nested(loop: Loop) -> bool:
    return any(isinstance(s, Loop) for s in loop.body)


def _can_merge(a: Loop, b: Loop, vector: bool) -> bool:
    if (a.var, a.start, a.stop, a.step) != (b.var, b.start, b.stop, b.step):
        return False
    if vector and ((_nested(a) and _costly(b)) or (_nested(b) and _costly(a))):
        return False
    written = _writes(a)
    var = Affine.of(a.var)
    # b may read what a wrote only at the same element, and only an element of the loop's own
    # iteration (a value a writes at an index without the loop variable is its last iteration's)
    return all(r.name not in written or (written[r.name] == r.index and var in r.index)
               for _, r, _ in walk_refs(b.body))


def _is_const_init(s: Stmt) -> bool:
    return isinstance(s, Compute) and s.op == "=" and not s.binds and not s.expr.free_symbols


def _merge(stmts: list[Stmt], vector: bool) -> list[Stmt]:
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Loop):
            j = len(out) - 1
            while j >= 0 and _is_const_init(out[j]):
                j -= 1
            if j >= 0 and isinstance(out[j], Loop) and _can_merge(out[j], s, vector):
                prev = out[j]
                inits = out[j + 1:]
                del out[j:]
                out.extend(inits)
                out.append(replace(prev, body=prev.body + s.body))
                continue
        out.append(s)
    return out


def reindex(stmts: tuple[Stmt, ...] | list[Stmt], names: set[str],
            keep: Callable[[Index], Index] = lambda index: ()) -> list[Stmt]:
    """References to ``names`` with their index replaced by ``keep(index)`` (default: none)."""
    def fix(r: Ref) -> Ref:
        return Ref(r.name, keep(r.index)) if r.name in names else r
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Compute):
            out.append(Compute(fix(s.target), s.expr, tuple((sym, fix(r)) for sym, r in s.binds),
                               s.op, s.comment))
        elif isinstance(s, If):
            out.append(replace(s, binds=tuple((sym, fix(r)) for sym, r in s.binds),
                               body=tuple(reindex(s.body, names, keep))))
        elif isinstance(s, Loop):
            out.append(replace(s, body=tuple(reindex(s.body, names, keep))))
        else:
            out.append(s)
    return out


def fuse_row_body(stmts: list[Stmt], row: str, candidates: set[str],
                  vector: bool = True) -> tuple[list[Stmt], set[str]]:
    """Fuse the loops of one row-loop body; scalarize the ``candidates`` that stay local.

    ``candidates`` are arrays no statement outside ``stmts`` uses; ``vector``
    keeps costly functions out of loops that cannot vectorize (the CPU; a GPU
    thread runs scalar code, where every merge saves memory). Returns the new
    body and the names that became scalars (they need no allocation).
    """
    fused = _merge(stmts, vector)
    opaque = set()   # names other statements (allocations, calls) touch stay arrays
    for s in fused:
        if not isinstance(s, (Compute, Loop)):
            opaque |= uses([s]) | defines(s)
    where: dict[str, set] = {}
    ok = {n for n in candidates if n not in opaque}
    r_ = Affine.of(row)
    for top in fused:
        for kind, r, loops in walk_refs([top]):
            if r.name not in ok:
                continue
            if r.index == (r_,):
                where.setdefault(r.name, set()).add("row")
            elif len(r.index) == 2 and r.index[0] == r_ and loops and r.index[1] == Affine.of(loops[0].var):
                where.setdefault(r.name, set()).add(id(top))
            else:
                ok.discard(r.name)
    scalars = {n for n in ok if n in where and len(where[n]) == 1}
    return reindex(fused, scalars), scalars


def _size(s: Stmt) -> int:
    if isinstance(s, Loop):
        return sum(_size(b) for b in s.body)
    if isinstance(s, If):
        return 1 + sum(_size(b) for b in s.body)
    return 1


def _scalars(s: Stmt) -> set[str]:
    """The names ``s`` holds in plain scalars (no index): a row's local values and lets."""
    if isinstance(s, Compute):
        return {s.target.name} if not s.target.index else set()
    if isinstance(s, Let):
        return {s.name}
    if isinstance(s, (Loop, If)):
        return set().union(*(_scalars(b) for b in s.body))
    return set()


def split_rows(stmts: list[Stmt], most: int = ROW_MOST) -> list[list[Stmt]]:
    """A row loop's body as pieces of about ``most`` statements, each run as its own loop over the
    rows, in order. A cut never separates a scalar's definition from its uses (arrays carry the
    values across: each row writes and reads its own row of them)."""
    if sum(_size(s) for s in stmts) <= most:
        return [stmts]
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for k, s in enumerate(stmts):
        for n in _scalars(s):
            first.setdefault(n, k)
        for n in uses([s]) | _scalars(s):
            last[n] = k
    live_after = [{n for n, f in first.items() if f <= k < last.get(n, -1)} for k in range(len(stmts))]
    pieces: list[list[Stmt]] = [[]]
    size = 0
    for k, s in enumerate(stmts):
        pieces[-1].append(s)
        size += _size(s)
        if size >= most and not live_after[k] and k + 1 < len(stmts):
            pieces.append([])
            size = 0
    return pieces


def drop_row_index(stmts: list[Stmt], names: set[str], row: str) -> list[Stmt]:
    """``name[row, ...]`` -> ``name[...]`` for ``names``: arrays that hold one row at a time (a GPU
    thread's local arrays, reused for each of its rows)."""
    r_ = (Affine.of(row),)
    return reindex(stmts, names, lambda index: index[1:] if index[:1] == r_ else index)
