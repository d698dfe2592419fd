"""Kernel IR -> kernel IR: a long chunk loop's runs of calls as functions of bounded size, one per
distinct run.

After :mod:`codegen.arena` and :mod:`codegen.outline`, a chunk loop is mostly a run of calls (BLAS
products, loop functions) on views: of the parameters, of the chunk's buffer, of its
accumulator. LLVM's function passes take superlinear time in a function's size (measured: 400
views and calls in one function, 1.9 s of function passes; 200, 0.57 s), so a run longer than
:data:`LONG` statements is cut into parts of at most about :data:`MOST` statements, each a
function ``part1``, ``part2``, ... that makes the views it needs itself, from their base array
and an offset it is passed as a run-time integer. A part therefore defines nothing its kernel
reads afterwards: every value it writes lives in a buffer the kernel holds. Parts that differ
only in names and offsets share one function (a deep network's repeated layers compile one part
for the forward pass and one for the backward pass), across the kinds of a module.

Cuts prefer the start of a group of products (a BLAS call after other work) once a part has
:data:`FEWEST` statements: a repeated layer then falls on the same cut in every repetition,
which is what lets parts repeat.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from symgrad.names import OUTLINED, part_function
from symgrad.runtime import BLAS_HELPERS

from .arena import chunk_loop
from .kernel_ir import Affine, Call, Fill, Int, Kernel, Stmt, View, Window, rename, uses

__all__ = ["parts", "LONG", "MOST", "FEWEST"]

#: a run of calls longer than this (statements, with the views it needs) is cut into parts
LONG = 64
#: a part's statements, at most (a single call with more views is a part of its own)
MOST = 40
#: a part's statements before a cut at the start of a group of products
FEWEST = 16

_BLAS = frozenset(BLAS_HELPERS.values())


def _movable(s: Stmt) -> bool:
    """A statement a part may hold: a call or a fill (each writes only arrays it is given)."""
    return (isinstance(s, Call) and not s.method) or isinstance(s, Fill)


def _flat_view(s: Stmt) -> bool:
    """A view a part can make again from its base and offset."""
    return isinstance(s, View) and s.shape is not None and s.stop is not None


def _names(s: Stmt) -> list[str]:
    """The names ``s`` reads or writes, in order of appearance."""
    if isinstance(s, Fill):
        return [s.array]
    assert isinstance(s, Call)
    out: list[str] = []
    for a in s.args:
        if isinstance(a, str):
            out.append(a)
        elif isinstance(a, Affine):
            out += [n for n, _ in a.terms if isinstance(n, str)]
        elif isinstance(a, Window):
            out += [a.base] + [n for n, _ in a.start.terms + a.stop.terms if isinstance(n, str)]
    return out


@dataclass
class _Registry:
    """The part functions found so far, by canonical form."""

    functions: dict[tuple, Kernel] = field(default_factory=dict)

    def function(self, body: tuple[Stmt, ...], params: tuple[str, ...], doc: str) -> Kernel:
        order: list[str] = []
        for s in body:
            for n in sorted(uses([s]) | ({s.name} if isinstance(s, View) else set())):
                if n not in order:
                    order.append(n)
        for p in params:
            if p not in order:
                order.append(p)
        canon = {n: f"n{j}" for j, n in enumerate(params + tuple(n for n in order if n not in params))}
        key = (tuple(rename(s, canon, comments=False) for s in body), tuple(canon[p] for p in params))
        fn = self.functions.get(key)
        if fn is None:
            fn = self.functions[key] = Kernel(part_function(len(self.functions) + 1), params, body, doc)
        return fn


def _part(k: Kernel, run: list[Stmt], views: dict[str, View], reg: _Registry) -> Call:
    """The call of the part function of ``run`` (found or made)."""
    params: list[str] = []
    args: list = []
    made: list[Stmt] = []
    seen: set[str] = set()

    def need(n: str) -> None:
        if n in seen:
            return
        seen.add(n)
        v = views.get(n)
        if v is None:
            params.append(n)
            args.append(n)
            return
        need(v.base)
        for d in v.shape or ():
            for m in sorted(Affine.of(d).names()):
                need(m)
        at = f"at{sum(isinstance(s, View) for s in made) + 1}"
        params.append(at)
        args.append(Int(v.start.const) if v.start.is_const else v.start)
        assert v.stop is not None
        made.append(replace(v, start=Affine.of(at), stop=Affine.of(at) + (v.stop + v.start * -1)))

    for s in run:
        for n in _names(s):
            need(n)
    written = list(dict.fromkeys(w for s in run for w in sorted(uses([s]) if isinstance(s, Fill) else s.writes)))
    what = ", ".join(written[:6]) + (", ..." if len(written) > 6 else "")
    fn = reg.function(tuple(made) + tuple(run), tuple(params), f"From {k.name}: {len(run)} calls; writes {what}.")
    bases = frozenset(views[w].base if w in views else w for w in written)
    return Call(fn.name, tuple(args), bases, f"writes {what}")


def _cost(s: Stmt, views: dict[str, View]) -> int:
    return 1 + sum(n in views for n in set(_names(s)))


def _cut(run: list[Stmt], views: dict[str, View]) -> list[list[Stmt]]:
    """``run`` in parts (see the module docstring)."""
    out: list[list[Stmt]] = []
    cur: list[Stmt] = []
    size = 0
    for j, s in enumerate(run):
        starts_products = isinstance(s, Call) and s.fn in _BLAS and j > 0 and \
            not (isinstance(run[j - 1], Call) and run[j - 1].fn in _BLAS)   # type: ignore[union-attr]
        if cur and (size >= MOST or (size >= FEWEST and starts_products)):
            out.append(cur)
            cur, size = [], 0
        cur.append(s)
        size += _cost(s, views)
    return out + ([cur] if cur else [])


def _live_views(body: list[Stmt], live: set[str]) -> list[Stmt]:
    """``body`` without the views nothing after them reads."""
    keep: list[Stmt] = []
    for s in reversed(body):
        if isinstance(s, View) and s.name not in live:
            continue
        keep.append(s)
        live |= uses([s])
    return keep[::-1]


def _kernel(k: Kernel, reg: _Registry) -> Kernel:
    pos = chunk_loop(k.body)
    if pos is None:
        return k
    head, loop, tail = list(k.body[:pos]), k.body[pos], list(k.body[pos + 1:])
    views = {s.name: s for s in head + list(loop.body) if _flat_view(s)}   # type: ignore[union-attr, misc]
    # runs: the movable statements between the others, each with the views made among them
    # (which the kernel keeps before the run where it still reads them itself)
    segments: list[tuple[list[Stmt], list[Stmt]] | Stmt] = []
    for s in loop.body:   # type: ignore[union-attr]
        if _movable(s):
            if not segments or not isinstance(segments[-1], tuple):
                segments.append(([], []))
            segments[-1][1].append(s)   # type: ignore[union-attr]
        elif isinstance(s, View) and s.name in views and segments and isinstance(segments[-1], tuple):
            segments[-1][0].append(s)   # type: ignore[union-attr]
        else:
            segments.append(s)
    total = sum(_cost(s, views) for g in segments if isinstance(g, tuple) for s in g[1])
    if total <= LONG:
        return k
    body: list[Stmt] = []
    for g in segments:
        if not isinstance(g, tuple):
            body.append(g)
            continue
        made, run = g
        body += made + [_part(k, p, views, reg) for p in _cut(run, views)]
    new_loop = replace(loop, body=tuple(_live_views(body, set())))
    new_head = _live_views(head, uses([new_loop] + tail))
    return replace(k, body=tuple(new_head + [new_loop] + tail))


def parts(fns: list[Kernel]) -> list[Kernel]:
    """The part functions of the kernels among ``fns`` (see the module docstring), after the
    loop functions and before the kernels, which call them. Host code is left as it is."""
    reg = _Registry()
    done = [f if f.host or OUTLINED.fullmatch(f.name) else _kernel(f, reg) for f in fns]
    loops = [f for f in done if OUTLINED.fullmatch(f.name)]
    return loops + list(reg.functions.values()) + [f for f in done if not OUTLINED.fullmatch(f.name)]
