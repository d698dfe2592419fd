"""Kernel IR -> kernel IR: a long chunk loop's runs of calls as functions of bounded size, one per
distinct run, called in loops where they repeat.

After :mod:`codegen.arena` and :mod:`codegen.outline`, a chunk loop is mostly a run of calls (BLAS
products, loop functions) on views: of the parameters, of the chunk's buffer, of its
accumulator. LLVM's function passes take superlinear time in a function's size (measured: 400
views and calls in one function, 1.9 s of function passes; 200, 0.57 s), so when a chunk loop's
runs hold more than :data:`LONG` statements together, each run is cut into parts of at most about :data:`MOST` statements, each a
function ``part1``, ``part2``, ... that makes the views it needs itself, from their base array.

A part's integers (where each view starts, its extents, the trip counts of the loop functions
it calls) are not in its code: it reads them from its row of the module's table ``PART_INTS``.
Parts that differ only in names and integers therefore share one function (a deep network's
hidden layers, of any widths, compile one part for the forward pass and one for the backward
pass), across the kinds of a module; and consecutive calls of one part on the same arrays
become a loop over their rows of the table, so the kernel's own code stays short however deep
the network. (Integers as arguments would cost more: Numba compiles a function once per
literal argument value, and each ``np.int64(...)`` cast costs ~1.5 ms of typing per call.)

A part defines nothing its kernel reads afterwards: every value it writes lives in a buffer the
kernel holds. Cuts prefer the start of a group of products (a BLAS call after other work) once
a part has :data:`FEWEST` statements, so a repeated layer falls on the same cut in every
repetition. A piece shorter than that (a run between two statements parts cannot hold, the
end of a run) becomes a part only where a part of its form exists already: a function of its
own would serve one call.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from symgrad.names import OUTLINED, PART_TABLE, PART_TABLE_LOCAL, extent_name, offset_name, part_function
from symgrad.runtime import BLAS_HELPERS

from .arena import chunk_loop
from .kernel_ir import Affine, Call, Fill, Global, Int, Item, Kernel, Let, Loop, Mul, Stmt, View, Window, rename, uses

__all__ = ["parts", "Parts", "LONG", "MOST", "FEWEST", "REPEATS", "HUGE", "TABLE"]

#: a chunk loop whose runs of calls hold more than this together (statements, with the views
#: they need) has every run cut into parts
LONG = 64
#: a part's statements, at most (a single call with more views is a part of its own)
MOST = 40
#: a part's statements before a cut at the start of a group of products; a shorter piece of a
#: form no part has yet stays inline
FEWEST = 16
#: parts are kept when each new part function serves this many calls on average (or the run is
#: longer than HUGE): every function costs a fixed ~70 ms, and Numba links (and optimizes again)
#: a callee's code into each caller, so parts that do not repeat make a kernel slower to compile
#: (a model of ten different activations side by side: hvp 10.4 s inline, 23 s in parts)
REPEATS = 2
HUGE = 3000
#: the module's table of the parts' integers (one row per call), and a kernel's local name for it
TABLE, LOCAL_TABLE = PART_TABLE, PART_TABLE_LOCAL

_BLAS = frozenset(BLAS_HELPERS.values())


@dataclass(frozen=True)
class Parts:
    """A module's functions after this pass, and its part table (one row per part call)."""

    functions: list[Kernel]
    table: tuple[tuple[int, ...], ...] = ()


def _movable(s: Stmt) -> bool:
    """A statement a part may hold: a call or a fill (each writes only arrays it is given)."""
    return (isinstance(s, Call) and not s.method) or isinstance(s, Fill)


def _flat_view(s: Stmt) -> bool:
    """A view a part can make again from its base: a flat one, whose start is a constant plus a
    multiple of ``rows``."""
    return isinstance(s, View) and s.shape is not None and s.start.names() <= {"rows"}


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
        order = list(params)
        for s in body:
            for n in sorted(uses([s]) | ({s.name} if isinstance(s, (View, Let)) else set())):
                if n not in order:
                    order.append(n)
        canon = {n: f"n{j}" for j, n in enumerate(order)}
        key = (tuple(rename(s, canon, comments=False) for s in body), tuple(canon[p] for p in params))
        fn = self.functions.get(key)
        if fn is None:
            fn = self.functions[key] = Kernel(part_function(len(self.functions) + 1), params, body, doc)
        return fn


@dataclass
class _Call:
    """A part call before the kernel is put together: its function, arguments, table row."""

    fn: str
    args: tuple[str, ...]
    ints: tuple[int, ...]
    writes: frozenset[str]
    comment: str


class _Builder:
    """One part's body: the views it makes and the integers it reads from its table row."""

    def __init__(self, views: dict[str, View]) -> None:
        self.views = views
        self.params: list[str] = []
        self.head: list[Stmt] = []
        self.ints: list[int] = []
        self.seen: set[str] = set()

    def integer(self, value: int, name: str) -> str:
        """A name for an integer of the table row, read at the part's start."""
        self.head.append(Let(name, Item(LOCAL_TABLE, Affine.of(len(self.ints)))))
        self.ints.append(value)
        return name

    def need(self, n: str) -> None:
        if n in self.seen:
            return
        self.seen.add(n)
        v = self.views.get(n)
        if v is None:
            self.params.append(n)
            return
        self.need(v.base)
        shape: list[Affine] = []
        for d in v.shape or ():
            if isinstance(d, int):
                shape.append(Affine.of(self.integer(d, extent_name(len(self.ints) + 1))))
                continue
            shape.append(d)
            for m in sorted(d.names()):
                self.need(m)
        k = sum(isinstance(s, View) for s in self.head) + 1
        start = Affine.of(self.integer(v.start.const, offset_name(2 * k - 1)))
        if v.start.coeff("rows") or any(not isinstance(d, int) and d.names() for d in v.shape or ()):   # per row
            self.need("rows")
            step = self.integer(v.start.coeff("rows"), offset_name(2 * k))
            self.head.append(Let(f"{step}_rows", Mul("rows", step)))
            start = start + f"{step}_rows"
        self.head.append(replace(v, start=start, stop=None, shape=tuple(shape)))

    def call(self, s: Stmt) -> Stmt:
        """``s`` with its integer arguments (a loop function's trip counts) read from the row."""
        if not isinstance(s, Call) or not any(isinstance(a, Int) for a in s.args):
            return s
        return replace(s, args=tuple(Affine.of(self.integer(a.value, extent_name(len(self.ints) + 1)))
                                     if isinstance(a, Int) else a for a in s.args))


def _part(k: Kernel, run: list[Stmt], views: dict[str, View], reg: _Registry) -> _Call:
    """The call of the part function of ``run`` (found or made)."""
    b = _Builder(views)
    for s in run:
        for n in _names(s):
            b.need(n)
    body = [b.call(s) for s in run]
    written = list(dict.fromkeys(w for s in run for w in sorted(uses([s]) if isinstance(s, Fill) else s.writes)))
    what = ", ".join(written[:6]) + (", ..." if len(written) > 6 else "")
    params = tuple(b.params) + (LOCAL_TABLE,)
    fn = reg.function(tuple(b.head + body), params,
                      f"From {k.name}: {len(run)} calls; writes {what}. Its integers: its row of {TABLE}.")
    bases = frozenset(views[w].base if w in views else w for w in written)
    return _Call(fn.name, tuple(b.params), tuple(b.ints), bases, f"writes {what}")


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


def _calls(calls: list[_Call], table: list[tuple[int, ...]]) -> list[Stmt]:
    """The kernel's statements for a run's part calls: consecutive calls of one function on the
    same arrays as one loop over their rows of the table."""
    out: list[Stmt] = []
    j = 0
    while j < len(calls):
        c, n = calls[j], 1
        while j + n < len(calls) and (calls[j + n].fn, calls[j + n].args) == (c.fn, c.args):
            n += 1
        first = len(table)
        table += [x.ints for x in calls[j:j + n]]
        if n == 1:
            out.append(Call(c.fn, c.args + (Item(LOCAL_TABLE, Affine.of(first)),), c.writes, c.comment))
        else:
            row = Affine.of("q")
            out.append(Loop("q", Affine.of(first), Affine.of(first + n), (
                Call(c.fn, c.args + (Item(LOCAL_TABLE, row),), c.writes),),
                f"{n} calls of {c.fn}, one per row {first}..{first + n - 1} of {TABLE}; the first {c.comment}"))
        j += n
    return out


def _live_views(body: list[Stmt], live: set[str]) -> list[Stmt]:
    """``body`` without the views nothing after them reads."""
    keep: list[Stmt] = []
    for s in reversed(body):
        if isinstance(s, View) and s.name not in live:
            continue
        keep.append(s)
        live |= uses([s])
    return keep[::-1]


def _kernel(k: Kernel, reg: _Registry, table: list[tuple[int, ...]]) -> Kernel:
    pos = chunk_loop(k.body)
    if pos is None:
        return k
    head, loop, tail = list(k.body[:pos]), k.body[pos], list(k.body[pos + 1:])
    assert isinstance(loop, Loop)
    views = {s.name: s for s in head + list(loop.body) if _flat_view(s)}   # type: ignore[union-attr, misc]
    # runs: the movable statements between the others, each with the views made among them
    # (which the kernel keeps before the run where it still reads them itself)
    segments: list[tuple[list[Stmt], list[Stmt]] | Stmt] = []
    for s in loop.body:
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
    known, rows = dict(reg.functions), len(table)
    body: list[Stmt] = []
    calls = short = 0
    for g in segments:
        if not isinstance(g, tuple):
            body.append(g)
            continue
        made, run = g
        body += made
        cut: list[_Call] = []
        for piece in _cut(run, views):
            before = len(reg.functions)
            call = _part(k, piece, views, reg)
            if len(reg.functions) > before and sum(_cost(s, views) for s in piece) < FEWEST:
                reg.functions.popitem()   # a short piece of a form met first here stays inline
                body += _calls(cut, table) + piece
                cut = []
                short += 1
                continue
            cut.append(call)
            calls += 1
        body += _calls(cut, table)
    # (an inline piece is weighed as a function: keeping a small kernel whole compiles faster)
    if calls < REPEATS * (len(reg.functions) - len(known) + short) and total <= HUGE:
        reg.functions = known   # parts that do not repeat cost more than they save: the kernel stays
        del table[rows:]
        return k
    new_loop = replace(loop, body=tuple(_live_views(body, uses(tail))))
    new_head = _live_views(head, uses([new_loop] + tail))
    local = Let(LOCAL_TABLE, Global(TABLE), "the parts' integers: one reference to the module's table")
    return replace(k, body=tuple(new_head + [local, new_loop] + tail))


def parts(fns: list[Kernel]) -> Parts:
    """The part functions of the kernels among ``fns`` (see the module docstring), after the
    loop functions and before the kernels, which call them, and the table of their integers.
    Host code is left as it is."""
    reg = _Registry()
    table: list[tuple[int, ...]] = []
    done = [f if f.host or OUTLINED.fullmatch(f.name) else _kernel(f, reg, table) for f in fns]
    loops = [f for f in done if OUTLINED.fullmatch(f.name)]
    return Parts(loops + list(reg.functions.values()) + [f for f in done if not OUTLINED.fullmatch(f.name)],
                 tuple(table))
