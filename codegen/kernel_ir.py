"""Kernel IR: loops, scalar computations and BLAS calls, before they become text.

Lowering produces these nodes; the emitters print them. Scalar work is a
:class:`Compute` whose SymPy expression binds its symbols to array elements
(:class:`Ref`), so passes such as loop fusion and scalarization can see every
read and write without parsing text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union

import sympy as sp

__all__ = ["Ref", "Compute", "Line", "Loop", "Stmt", "Kernel", "walk_refs"]


@dataclass(frozen=True)
class Ref:
    """``name[index...]``, or the scalar ``name`` when ``index`` is empty."""

    name: str
    index: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name}[{', '.join(self.index)}]" if self.index else self.name


@dataclass(frozen=True)
class Compute:
    """``target op expr``: ``expr`` is in the symbols bound by ``binds``; op is '=' or '+='."""

    target: Ref
    expr: sp.Expr
    binds: tuple[tuple[sp.Symbol, Ref], ...] = ()
    op: str = "="
    comment: str = ""


@dataclass(frozen=True)
class Line:
    """A statement given as text (allocations, views, BLAS calls, argmax scans).

    ``reads``/``writes`` name the arrays it touches, for the fusion passes.
    """

    text: str
    comment: str = ""
    reads: frozenset[str] = field(default_factory=frozenset)
    writes: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Loop:
    """``for var in range(start, stop, step)``: a GPU grid-stride loop steps by the grid size."""

    var: str
    start: str
    stop: str
    body: tuple["Stmt", ...]
    comment: str = ""
    step: str = "1"


Stmt = Union[Compute, Line, Loop]


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


def walk_refs(stmts: tuple[Stmt, ...] | list[Stmt]) -> Iterator[tuple[str, Ref, tuple[Loop, ...]]]:
    """Yield ('read'|'write', ref, enclosing loops) for every Ref in ``stmts``."""
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
    yield from go(stmts, ())
