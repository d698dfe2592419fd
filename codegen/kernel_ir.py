"""Kernel IR: typed statements and affine index expressions, before they become text.

Lowering produces these nodes; passes (fusion, scalarization, dead-statement
removal, a staged pass's kernel split) analyse them; the emitters print them.
Nothing here is text to be parsed again: every statement says which names it
reads (:func:`uses`) and which it defines or writes (:func:`defines`), and an
array index is an :class:`Affine` expression over named integers (loop
variables, chunk offsets), so a pass can compare, shift and bound it.

Scalar work is a :class:`Compute` whose SymPy expression binds its symbols to
array elements (:class:`Ref`). Target-specific values (a GPU thread's grid
index, its block) are :class:`Builtin` names the target's emitter spells.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Union

import sympy as sp

__all__ = ["Builtin", "Affine", "Index", "index", "Ref", "Dim", "Min", "Mul", "CallExpr", "Reciprocal", "Literal", "Int", "Item", "Global",
           "Window", "Arg", "Expr", "Compute", "Loop", "Let", "Alloc", "View", "Call", "Fill", "If",
           "Return", "Barrier", "Launch", "Stmt", "Kernel", "walk_refs", "uses", "defines", "needed", "rename"]


@dataclass(frozen=True)
class Builtin:
    """A value the target provides: ``row`` (a GPU thread's grid index), ``rows_step`` (the grid
    size), ``thread`` / ``block`` (its index in the block / the block's index), ``block_dim``."""

    name: str


Name = Union[str, Builtin]


@dataclass(frozen=True, eq=False)
class Affine:
    """``sum(coef * name) + const``: an index or a loop bound, affine in named integers.

    ``terms`` keep their order (the printed form follows the lowering's), a
    name appears at most once, and ``const`` is printed first when
    ``const_first`` (an offset into a flat array: ``5 + q``), else last.
    """

    terms: tuple[tuple[Name, int], ...] = ()
    const: int = 0
    const_first: bool = False

    @staticmethod
    def of(x: int | str | Builtin | Affine) -> Affine:
        if isinstance(x, Affine):
            return x
        if isinstance(x, int):
            return Affine((), x)
        return Affine(((x, 1),))

    def __add__(self, other: int | str | Builtin | Affine) -> Affine:
        o = Affine.of(other)
        terms = dict(self.terms)
        for n, c in o.terms:
            terms[n] = terms.get(n, 0) + c
        return Affine(tuple((n, c) for n, c in terms.items() if c), self.const + o.const,
                      self.const_first or (not self.terms and bool(self.const)))

    def __radd__(self, other: int | str) -> Affine:
        return Affine.of(other) + self

    def __mul__(self, k: int) -> Affine:
        return Affine(tuple((n, c * k) for n, c in self.terms if c * k), self.const * k, self.const_first)

    def __eq__(self, other: object) -> bool:
        """The same value: terms in any order, however it prints (``const_first``)."""
        return isinstance(other, Affine) and self.const == other.const and dict(self.terms) == dict(other.terms)

    def __hash__(self) -> int:
        return hash((self.const, frozenset(self.terms)))

    def coeff(self, name: Name) -> int:
        """The coefficient of ``name`` (0 when it does not occur)."""
        return dict(self.terms).get(name, 0)

    def names(self) -> set[str]:
        """The named integers it reads (not the builtins)."""
        return {n for n, _ in self.terms if isinstance(n, str)}

    @property
    def is_const(self) -> bool:
        return not self.terms


Index = tuple[Affine, ...]


def index(*parts: int | str | Affine) -> Index:
    """An index tuple from ints, names and affine expressions."""
    return tuple(Affine.of(p) for p in parts)


@dataclass(frozen=True)
class Ref:
    """``name[index...]``, or the scalar ``name`` when ``index`` is empty."""

    name: str
    index: Index = ()

    def names(self) -> set[str]:
        return {self.name}.union(*(i.names() for i in self.index))


# ---------------------------------------------------------------------- integer and call values
@dataclass(frozen=True)
class Dim:
    """``array.shape[axis]``."""

    array: str
    axis: int = 0


@dataclass(frozen=True)
class Min:
    """``min(a, b)``."""

    a: Affine
    b: Affine


@dataclass(frozen=True)
class Mul:
    """``a * b`` of two named integers (a chunk's first row: chunk index times rows per chunk)."""

    a: str
    b: str


@dataclass(frozen=True)
class Literal:
    """A Python constant argument (a flag, a tuple of slots), printed with ``repr``."""

    value: object


@dataclass(frozen=True)
class Item:
    """``array[index]``: an element or a row (a part function's integers, read from its row of the
    module's part table)."""

    array: str
    index: Affine


@dataclass(frozen=True)
class Global:
    """A module-level constant of the generated code, by name: the part table, or a constant
    tensor's array, whose ``values`` (C order, ``shape``) the emitter prints once at module level."""

    name: str
    values: tuple[float, ...] = ()
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Int:
    """An integer argument passed as a run-time ``int64``, not a literal: Numba compiles a callee
    once per literal value it is called with (an offset into the parameters of each layer)."""

    value: int


@dataclass(frozen=True)
class Window:
    """``base[start:stop]`` as an argument (a view passed to a helper)."""

    base: str
    start: Affine
    stop: Affine


Arg = Union[str, int, Int, Affine, Literal, Window, Item]


@dataclass(frozen=True)
class CallExpr:
    """``fn(args...)``: a runtime helper's value."""

    fn: str
    args: tuple[Arg, ...] = ()


@dataclass(frozen=True)
class Reciprocal:
    """``1/name`` in the kernel's float type (1/N of the mean)."""

    name: str


Expr = Union[Affine, Dim, Min, Mul, CallExpr, Reciprocal, Item, Global]


# ---------------------------------------------------------------------- statements
@dataclass(frozen=True)
class Compute:
    """``target op expr``: ``expr`` is in the symbols bound by ``binds``; op is '=' or '+='."""

    target: Ref
    expr: sp.Expr
    binds: tuple[tuple[sp.Symbol, Ref], ...] = ()
    op: str = "="
    comment: str = ""


@dataclass(frozen=True)
class Loop:
    """``for var in range(start, stop, step)``: a GPU grid-stride loop steps by the grid size."""

    var: str
    start: Affine
    stop: Affine
    body: tuple["Stmt", ...]
    comment: str = ""
    step: Affine = Affine((), 1)


@dataclass(frozen=True)
class Let:
    """``name = value``: an integer or a helper's result (rows per chunk, the summed partials)."""

    name: str
    value: Expr
    comment: str = ""


@dataclass(frozen=True)
class Alloc:
    """An array ``name`` of ``shape``; ``dtype`` 'float' (the kernel's) or 'int64'; ``space``:
    'heap' (np.empty), 'local' (a GPU thread's), 'shared' (a GPU block's), 'device'."""

    name: str
    shape: tuple[Affine | CallExpr, ...]
    dtype: str = "float"
    space: str = "heap"
    comment: str = ""


@dataclass(frozen=True)
class View:
    """``name = base[start:stop]``, reshaped to ``shape`` when given, or ``base[start]`` when
    neither is: a view, no copy. A shape's extent may be a named integer (a chunk's ``rows``, a
    part function's extent parameter), and with a shape ``stop`` may be left out (a part's views:
    their size is a product of parameters)."""

    name: str
    base: str
    start: Affine
    stop: Affine | None = None
    shape: tuple[int | Affine, ...] | None = None
    comment: str = ""


@dataclass(frozen=True)
class Call:
    """``fn(args...)`` for its effect on ``writes`` (a BLAS product into its output, a launch
    helper); ``method``: ``args[0].fn(args[1:]...)``."""

    fn: str
    args: tuple[Arg, ...]
    writes: frozenset[str] = frozenset()
    comment: str = ""
    method: bool = False


@dataclass(frozen=True)
class Fill:
    """``array[:] = value``."""

    array: str
    value: int = 0
    comment: str = ""


@dataclass(frozen=True)
class If:
    """``if test: body``; ``test`` a SymPy relation in the symbols ``binds`` gives (array elements)
    and in plain names."""

    test: sp.Basic
    binds: tuple[tuple[sp.Symbol, Ref], ...]
    body: tuple["Stmt", ...]
    comment: str = ""


@dataclass(frozen=True)
class Return:
    """``return expr`` (a GPU kernel's early exit when None); ``binds`` as a Compute's."""

    expr: sp.Expr | None = None
    binds: tuple[tuple[sp.Symbol, Ref], ...] = ()
    comment: str = ""


@dataclass(frozen=True)
class Barrier:
    """Every thread of a GPU block waits here."""

    comment: str = ""


@dataclass(frozen=True)
class Launch:
    """``kernel[grid](args...)``: a GPU launch from host code."""

    kernel: str
    grid: tuple[str, ...]
    args: tuple[str, ...]
    comment: str = ""


Stmt = Union[Compute, Loop, Let, Alloc, View, Call, Fill, If, Return, Barrier, Launch]


@dataclass(frozen=True)
class Kernel:
    """One generated function: name, parameters, body, docstring; ``shared`` names the arrays
    every thread of a GPU block adds into (their ``+=`` is printed as an atomic add); ``host``
    marks plain Python that launches the GPU kernels (a staged CUDA pass), and ``arg_types``
    gives each parameter's type where inspection cannot infer it ("f2": 2-D float array,
    "i1": 1-D int64 array, "i": int64 scalar)."""

    name: str
    params: tuple[str, ...]
    body: tuple[Stmt, ...]
    doc: str = ""
    shared: frozenset[str] = frozenset()
    host: bool = False
    arg_types: tuple[str, ...] = ()


# ---------------------------------------------------------------------- analysis
def walk_refs(stmts: tuple[Stmt, ...] | list[Stmt]) -> Iterator[tuple[str, Ref, tuple[Loop, ...]]]:
    """Yield ('read'|'write', ref, enclosing loops) for every Ref of a Compute or If in ``stmts``."""
    def go(body: tuple[Stmt, ...] | list[Stmt], loops: tuple[Loop, ...]) -> Iterator:
        for s in body:
            if isinstance(s, Compute):
                for _, r in s.binds:
                    yield "read", r, loops
                if s.op != "=":
                    yield "read", s.target, loops
                yield "write", s.target, loops
            elif isinstance(s, Loop):
                yield from go(s.body, loops + (s,))
            elif isinstance(s, If):
                for _, r in s.binds:
                    yield "read", r, loops
                yield from go(s.body, loops)
    yield from go(stmts, ())


def _arg_names(a: Arg) -> set[str]:
    if isinstance(a, str):
        return {a}
    if isinstance(a, Affine):
        return a.names()
    if isinstance(a, Window):
        return {a.base} | a.start.names() | a.stop.names()
    if isinstance(a, Item):
        return {a.array} | a.index.names()
    return set()


def _expr_names(e: Expr) -> set[str]:
    if isinstance(e, Affine):
        return e.names()
    if isinstance(e, Dim):
        return {e.array}
    if isinstance(e, Min):
        return e.a.names() | e.b.names()
    if isinstance(e, Mul):
        return {e.a, e.b}
    if isinstance(e, CallExpr):
        return set().union(*(_arg_names(a) for a in e.args))
    if isinstance(e, Item):
        return _arg_names(e)
    if isinstance(e, Global):
        return set()
    return {e.name}   # Reciprocal


def _sym_names(e: sp.Basic, binds: tuple[tuple[sp.Symbol, Ref], ...]) -> set[str]:
    bound = {s for s, _ in binds}
    return {str(s) for s in e.free_symbols if s not in bound}.union(*(r.names() for _, r in binds))


def uses(stmts: list[Stmt] | tuple[Stmt, ...]) -> set[str]:
    """Every name the statements read: arrays, scalars, loop bounds, index variables."""
    out: set[str] = set()
    for s in stmts:
        if isinstance(s, Compute):
            out |= _sym_names(s.expr, s.binds) | set().union(*(i.names() for i in s.target.index))
            out |= {s.target.name} if s.target.index or s.op != "=" else set()
        elif isinstance(s, Loop):
            out |= s.start.names() | s.stop.names() | s.step.names() | (uses(s.body) - {s.var})
        elif isinstance(s, If):
            out |= _sym_names(s.test, s.binds) | uses(s.body)
        elif isinstance(s, Let):
            out |= _expr_names(s.value)
        elif isinstance(s, Alloc):
            out |= set().union(*(_expr_names(d) for d in s.shape))
        elif isinstance(s, View):
            out |= {s.base} | s.start.names() | (s.stop.names() if s.stop is not None else set())
            out |= set().union(*(Affine.of(d).names() for d in s.shape or ()))
        elif isinstance(s, Call):
            out |= set().union(*(_arg_names(a) for a in s.args))
        elif isinstance(s, Fill):
            out.add(s.array)
        elif isinstance(s, Return):
            out |= _sym_names(s.expr, s.binds) if s.expr is not None else set()
        elif isinstance(s, Launch):
            out |= set(s.grid) | set(s.args)
        elif not isinstance(s, Barrier):
            raise TypeError(f"uses() does not know {type(s).__name__}")
    return out


def defines(s: Stmt) -> set[str]:
    """The names ``s`` defines or writes into."""
    if isinstance(s, Compute):
        return {s.target.name}
    if isinstance(s, (Let, Alloc, View)):
        return {s.name}
    if isinstance(s, Call):
        return set(s.writes)
    if isinstance(s, Fill):
        return {s.array}
    if isinstance(s, Loop):
        return set().union(*(defines(b) for b in s.body)) - {s.var}   # its variable is its own
    if isinstance(s, If):
        return set().union(*(defines(b) for b in s.body))
    return set()


def needed(defs: list[Stmt], *users: list[Stmt]) -> list[Stmt]:
    """The statements of ``defs`` that the ``users`` need, directly or not, in order."""
    want = set().union(*(uses(u) for u in users))
    keep = []
    for s in reversed(defs):
        if defines(s) & want:
            keep.append(s)
            want |= uses([s])
    return keep[::-1]


# ---------------------------------------------------------------------- renaming
def _rn_affine(a: Affine, m: dict[str, str]) -> Affine:
    return replace(a, terms=tuple((m.get(n, n) if isinstance(n, str) else n, c) for n, c in a.terms))


def _rn_ref(r: Ref, m: dict[str, str]) -> Ref:
    return Ref(m.get(r.name, r.name), tuple(_rn_affine(i, m) for i in r.index))


def _rn_sym(e: sp.Basic, binds: tuple, m: dict[str, str]) -> tuple:
    binds = tuple((s, _rn_ref(r, m)) for s, r in binds)
    bound = {s for s, _ in binds}
    free = {s: sp.Symbol(m[str(s)], **s.assumptions0) for s in e.free_symbols if s not in bound and str(s) in m}
    return (e.xreplace(free) if free else e), binds


def _rn_arg(a: Arg, m: dict[str, str]) -> Arg:
    if isinstance(a, str):
        return m.get(a, a)
    if isinstance(a, Affine):
        return _rn_affine(a, m)
    if isinstance(a, Window):
        return Window(m.get(a.base, a.base), _rn_affine(a.start, m), _rn_affine(a.stop, m))
    if isinstance(a, Item):
        return Item(m.get(a.array, a.array), _rn_affine(a.index, m))
    return a


def _rn_expr(e: Expr, m: dict[str, str]) -> Expr:
    if isinstance(e, Affine):
        return _rn_affine(e, m)
    if isinstance(e, Dim):
        return replace(e, array=m.get(e.array, e.array))
    if isinstance(e, Min):
        return Min(_rn_affine(e.a, m), _rn_affine(e.b, m))
    if isinstance(e, Mul):
        return Mul(m.get(e.a, e.a), m.get(e.b, e.b))
    if isinstance(e, CallExpr):
        return CallExpr(e.fn, tuple(_rn_arg(a, m) for a in e.args))
    if isinstance(e, Item):
        return _rn_arg(e, m)   # type: ignore[return-value]
    if isinstance(e, Global):
        return e
    return Reciprocal(m.get(e.name, e.name))


def rename(s: Stmt, m: dict[str, str], comments: bool = True) -> Stmt:
    """``s`` (a statement of a loop nest or of a kernel's run of calls) with every name in ``m``
    replaced (arrays, scalars, loop variables; not the functions it calls), without its comments
    unless ``comments``: two statements that differ only in their names rename to the same
    canonical statement."""
    keep = {} if comments else {"comment": ""}
    g = m.get
    if isinstance(s, Compute):
        expr, binds = _rn_sym(s.expr, s.binds, m)
        return replace(s, target=_rn_ref(s.target, m), expr=expr, binds=binds, **keep)
    if isinstance(s, Loop):
        return replace(s, var=g(s.var, s.var), start=_rn_affine(s.start, m), stop=_rn_affine(s.stop, m),
                       step=_rn_affine(s.step, m), body=tuple(rename(b, m, comments) for b in s.body), **keep)
    if isinstance(s, If):
        test, binds = _rn_sym(s.test, s.binds, m)
        return replace(s, test=test, binds=binds, body=tuple(rename(b, m, comments) for b in s.body), **keep)
    if isinstance(s, Let):
        return replace(s, name=g(s.name, s.name), value=_rn_expr(s.value, m), **keep)
    if isinstance(s, View):
        return replace(s, name=g(s.name, s.name), base=g(s.base, s.base), start=_rn_affine(s.start, m),
                       stop=None if s.stop is None else _rn_affine(s.stop, m),
                       shape=None if s.shape is None else tuple(
                           _rn_affine(d, m) if isinstance(d, Affine) else d for d in s.shape), **keep)
    if isinstance(s, Call):
        return replace(s, args=tuple(_rn_arg(a, m) for a in s.args), writes=frozenset(g(w, w) for w in s.writes),
                       **keep)
    if isinstance(s, Fill):
        return replace(s, array=g(s.array, s.array), **keep)
    raise TypeError(f"only loop nests and runs of calls are renamed, not {type(s).__name__}")

