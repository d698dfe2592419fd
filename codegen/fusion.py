"""Loop fusion and scalarization inside the per-row loop of a chunk.

Each op is lowered on its own to a loop over its features. Here adjacent
loops over the same features are merged when the later one reads what the
earlier one wrote only at the same element (elementwise chains, a bias add
and its activation, a reduction over the features), and a value that is only
touched inside one merged loop (or is a per-row scalar) becomes a local
scalar instead of an array: it never goes to memory.
"""
from __future__ import annotations

from typing import Callable

from .kernel_ir import Compute, Line, Loop, Ref, Stmt, walk_refs

__all__ = ["fuse_row_body", "drop_row_index"]


def _writes(loop: Loop) -> dict[str, tuple[str, ...]]:
    return {r.name: r.index for kind, r, _ in walk_refs(loop.body) if kind == "write"}


def _can_merge(a: Loop, b: Loop) -> bool:
    if (a.var, a.start, a.stop) != (b.var, b.start, b.stop):
        return False
    written = _writes(a)
    return all(written.get(r.name, r.index) == r.index for _, r, _ in walk_refs(b.body))


def _is_const_init(s: Stmt) -> bool:
    return isinstance(s, Compute) and s.op == "=" and not s.binds


def _merge(stmts: list[Stmt]) -> list[Stmt]:
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Loop):
            j = len(out) - 1
            while j >= 0 and _is_const_init(out[j]):
                j -= 1
            if j >= 0 and isinstance(out[j], Loop) and _can_merge(out[j], s):
                prev = out[j]
                inits = out[j + 1:]
                del out[j:]
                out.extend(inits)
                out.append(Loop(prev.var, prev.start, prev.stop, prev.body + s.body, prev.comment))
                continue
        out.append(s)
    return out


def _rename(stmts: tuple[Stmt, ...] | list[Stmt], names: set[str],
            keep: Callable[[tuple[str, ...]], tuple[str, ...]] = lambda index: ()) -> list[Stmt]:
    """References to ``names`` with their index replaced by ``keep(index)`` (default: none)."""
    def fix(r: Ref) -> Ref:
        return Ref(r.name, keep(r.index)) if r.name in names else r
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Compute):
            out.append(Compute(fix(s.target), s.expr, tuple((sym, fix(r)) for sym, r in s.binds),
                               s.op, s.comment))
        elif isinstance(s, Loop):
            out.append(Loop(s.var, s.start, s.stop, tuple(_rename(s.body, names, keep)), s.comment))
        else:
            out.append(s)
    return out


def fuse_row_body(stmts: list[Stmt], row: str, candidates: set[str]) -> tuple[list[Stmt], set[str]]:
    """Fuse the loops of one row-loop body; scalarize the ``candidates`` that stay local.

    ``candidates`` are arrays no statement outside ``stmts`` uses. Returns the
    new body and the names that became scalars (they need no allocation).
    """
    fused = _merge(stmts)
    in_lines = set()
    for s in fused:
        if isinstance(s, Line):
            in_lines |= s.reads | s.writes
    where: dict[str, set] = {}
    ok = {n for n in candidates if n not in in_lines}
    for top in fused:
        for kind, r, loops in walk_refs([top]):
            if r.name not in ok:
                continue
            if r.index == (row,):
                where.setdefault(r.name, set()).add("row")
            elif len(r.index) == 2 and r.index[0] == row and loops and r.index[1] == loops[0].var:
                where.setdefault(r.name, set()).add(id(top))
            else:
                ok.discard(r.name)
    scalars = {n for n in ok if n in where and len(where[n]) == 1}
    return _rename(fused, scalars), scalars


def drop_row_index(stmts: list[Stmt], names: set[str], row: str) -> list[Stmt]:
    """``name[row, ...]`` -> ``name[...]`` for ``names``: arrays that hold one row at a time (a GPU
    thread's local arrays, reused for each of its rows)."""
    return _rename(stmts, names, lambda index: index[1:] if index[:1] == (row,) else index)
