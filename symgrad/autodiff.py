"""Symbolic derivative programs: reverse accumulation (vjp) and forward tangents (jvp).

The chain rule runs over the assignment list, never over an inlined network.
Both passes are generic loops: each op's family module (:mod:`symgrad.ops`)
gives its vector-Jacobian and Jacobian-vector rule, which emits ordinary IR
ops, and the only place SymPy differentiates is an elementwise op's small
scalar expression. Derivation time therefore grows with the number of ops,
not with widths.

Second order is forward over reverse (Pearlmutter's R-operator): :func:`jvp`
runs over the adjoint program, so every backward assignment gets its tangent
rule from the same SymPy partials; sigma'' and the softmax-CE Hessian fall
out of it, and nothing is written by hand per function. The generalized
Gauss-Newton product is the same pass with the curvature of the network's
backward assignments switched off (``frozen``).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import sympy as sp

from .ir import Assign, Builder, Program, Value
from .ops.einsum import reduce_to
from .ops.elementwise import add, constant, elementwise

__all__ = ["vjp", "jvp", "Adjoint", "Pullback", "Pushforward"]


@dataclass
class Pullback:
    """What a vector-Jacobian rule works with: the builder, which values need adjoints, and
    where contributions go (``add`` sums a broadcast operand's down to its shape)."""

    b: Builder
    active: set[str]
    per_sample: bool
    adj: dict[str, list[Value]] = field(default_factory=lambda: defaultdict(list))

    def is_active(self, v: Value) -> bool:
        return v.name in self.active

    def add(self, x: Value, contrib: Value) -> None:
        """Add ``contrib`` (shaped like the op's output or like ``x``) to ``x``'s adjoint."""
        self.adj[x.name].append(reduce_to(self.b, contrib, x, f"adjoint of {x.name}", self.per_sample))

    def total(self, v: Value) -> Value | None:
        """The adjoint of ``v`` so far: the sum of its contributions (None: zero)."""
        parts = self.adj.get(v.name)
        return add(self.b, parts, f"d_{v.name}", f"adjoint of {v.name}") if parts else None


@dataclass
class Pushforward:
    """What a Jacobian-vector rule works with: the builder and the leaf roles differentiated."""

    b: Builder
    wrt: tuple[str, ...]


@dataclass
class Adjoint:
    """What :func:`vjp` built: the program, its builder, the gradient value per leaf label,
    and for each backward value the forward value whose rule created it (``origin``)."""

    program: Program
    builder: Builder
    grads: dict[str, Value]
    origin: dict[str, str] = field(default_factory=dict)


def active_values(body: tuple[Assign, ...], wrt: tuple[str, ...]) -> set[str]:
    """The values that depend on a leaf whose role is in ``wrt`` through differentiable ops."""
    active: set[str] = set()
    for a in body:
        if (a.op.is_leaf() and a.op.role in wrt) or any(x.name in active for x in a.args):
            if a.op.differentiable:
                active.add(a.out.name)
    return active


def vjp(program: Program, seeds: dict[str, Value | None] | None = None,
        wrt: tuple[str, ...] = ("param",), builder: Builder | None = None,
        per_sample: bool = False, prefix: str = "grad") -> Adjoint:
    """The adjoint program: the forward body, then the backward assignments.

    ``seeds`` maps output keys to the adjoint they start with (``None``: 1);
    by default the objective. The program's outputs are the forward ones plus
    ``<prefix>:<leaf label>`` for each leaf whose role is in ``wrt``. With
    ``per_sample`` the leaves' adjoints keep the batch axis (one gradient per
    sample, the rows of a Jacobian) instead of being summed over the batch.
    """
    b = builder or Builder()
    if builder is None:
        for a in program.body:
            b.adopt(a)
    seeds = {"objective": None} if seeds is None else seeds
    pb = Pullback(b, active_values(program.body, wrt), per_sample)
    for key, value in seeds.items():
        pb.adj[program.output(key).name].append(constant(b, 1) if value is None else value)
    origin: dict[str, str] = {}
    for a in reversed(program.body):
        if a.op.is_leaf() or not pb.is_active(a.out):
            continue
        g = pb.total(a.out)
        if g is None:
            continue
        first = len(b.body)
        a.op.vjp(pb, a, g)
        for new in b.body[first:]:
            origin[new.out.name] = a.out.name
    outputs = list(program.outputs)
    grads: dict[str, Value] = {}
    for a in program.body:
        if a.op.is_leaf() and a.op.role in wrt:
            g = pb.total(a.out)
            if g is None:
                g = elementwise(b, f"zero_{a.out.name}", sp.S.Zero, ())
            grads[a.op.label] = g
            outputs.append((f"{prefix}:{a.op.label}", g))
    return Adjoint(b.program(tuple(outputs)), b, grads, origin)


def jvp(body: tuple[Assign, ...], b: Builder, wrt: tuple[str, ...] = ("param",),
        frozen: Callable[[Assign], bool] | None = None,
        constant: frozenset[str] = frozenset()) -> dict[str, Value]:
    """Forward tangents of every value of ``body`` in the direction of the ``wrt`` leaves.

    Each ``wrt`` leaf gets a ``tangent`` leaf of its label (``v`` laid out like
    ``theta``). Where ``frozen(assign)`` is true, the arguments named in
    ``constant`` count as constants in that assignment: their tangents are
    dropped there (and only there). Returns the tangent of each value that
    has one; a value missing from the map has tangent zero.
    """
    pf = Pushforward(b, wrt)
    dot: dict[str, Value] = {}
    for a in body:
        drop = constant if frozen is not None and frozen(a) else frozenset()
        tans = [None if x.name in drop else dot.get(x.name) for x in a.args]
        if not a.op.is_leaf() and all(t is None for t in tans):
            continue
        t = a.op.jvp(pf, a, tans)
        if t is not None and b.constant_of(t) != 0:
            dot[a.out.name] = t
    return dot
