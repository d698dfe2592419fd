"""Symbolic derivative programs: reverse accumulation (vjp) and forward tangents (jvp).

The chain rule runs over the assignment list, never over an inlined network:
each op has a vector-Jacobian rule that emits ordinary IR ops, and the only
place SymPy differentiates is an elementwise op's small scalar expression.
Derivation time therefore grows with the number of ops, not with widths.

An elementwise derivative that contains the op's own expression (tanh' =
1 - tanh^2, sigmoid' = s(1-s)) is rewritten in terms of the stored output, so
the backward pass reuses the forward value instead of recomputing it.

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

from .ir import (BATCH, ArgMax, Assign, Builder, Detach, Einsum, Elementwise, Gather, IRError, Leaf,
                 Program, Scatter, Value, arg_symbols)

__all__ = ["vjp", "jvp", "Adjoint", "elementwise_partials", "DerivativeError"]


class DerivativeError(IRError):
    """SymPy could not differentiate an expression; names the op."""


def _clean(expr: sp.Expr) -> sp.Expr:
    """Drop DiracDelta terms: they vanish almost everywhere (relu'' = 0)."""
    if expr.has(sp.DiracDelta):
        expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    return expr


def elementwise_partials(name: str, expr: sp.Expr, arity: int) -> list[sp.Expr]:
    """d expr / d a_i for each argument, in a0..a{k-1} and a{k}, which stands for the op's output."""
    syms = arg_symbols(arity + 1)
    out = syms[arity]
    res = []
    for s in syms[:arity]:
        try:
            d = _clean(sp.diff(expr, s))
        except Exception as e:  # SymPy raises many types for undifferentiable input
            raise DerivativeError(f"elementwise {name!r}: SymPy cannot differentiate {expr} "
                                  f"with respect to {s}: {e}") from e
        if d.has(sp.Derivative, sp.Subs):
            raise DerivativeError(f"elementwise {name!r}: derivative of {expr} with respect to {s} "
                                  f"is not closed-form ({d}); define the function with its own fdiff")
        if not (expr.is_Symbol or expr.is_Number):
            d = d.subs(expr, out)
        res.append(d)
    return res


def _reduce_to(b: Builder, g: Value, target: Value, note: str, per_sample: bool = False) -> Value:
    """Sum ``g`` (shaped like an op's output) down to ``target``'s shape and batching
    (keeping the batch axis when ``per_sample``)."""
    keep_batch = target.batched or (per_sample and g.batched)
    if g.shape == target.shape and g.batched == keep_batch:
        return g
    letters = "ijklmnopq"[:len(g.shape)]
    src = (BATCH if g.batched else "") + letters
    dst = (BATCH if keep_batch else "") + (letters if target.shape == g.shape else "")
    if target.shape not in ((), g.shape):  # pragma: no cover - broadcasting only adds scalars
        raise IRError(f"cannot reduce {g.shape} to {target.shape}")
    return b.einsum(f"{target.name}_sum", f"{src}->{dst}", (g,), target.shape, note=note)


def _einsum_adjoint(spec: str, k: int, per_sample: bool) -> str:
    ins, out = spec.split("->")
    parts = ins.split(",")
    new_ins = [out] + [p for i, p in enumerate(parts) if i != k]
    dst = parts[k]
    if per_sample and BATCH not in dst and any(BATCH in p for p in new_ins):
        dst = BATCH + dst
    return ",".join(new_ins) + "->" + dst


@dataclass
class Adjoint:
    """What :func:`vjp` built: the program, its builder, the gradient value per leaf label,
    and for each backward value the forward value whose rule created it (``origin``)."""

    program: Program
    builder: Builder
    grads: dict[str, Value]
    origin: dict[str, str] = field(default_factory=dict)


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
    # only values that depend on a leaf in ``wrt`` need adjoints (no gradient for the data)
    active: set[str] = set()
    for a in program.body:
        if (isinstance(a.op, Leaf) and a.op.role in wrt) or any(x.name in active for x in a.args):
            if not isinstance(a.op, (Detach, ArgMax)):
                active.add(a.out.name)
    adj: dict[str, list[Value]] = defaultdict(list)
    for key, value in seeds.items():
        adj[program.output(key).name].append(b.constant(1) if value is None else value)
    origin: dict[str, str] = {}

    def total(v: Value) -> Value | None:
        parts = adj.get(v.name)
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        syms = arg_symbols(len(parts))
        return b.elementwise(f"d_{v.name}", sp.Add(*syms), tuple(parts), note=f"adjoint of {v.name}")

    for a in reversed(program.body):
        if isinstance(a.op, Leaf) or a.out.name not in active:
            continue
        first = len(b.body)
        _backward(b, a, total(a.out), active, adj, per_sample)
        for new in b.body[first:]:
            origin[new.out.name] = a.out.name

    outputs = list(program.outputs)
    grads: dict[str, Value] = {}
    for a in program.body:
        if isinstance(a.op, Leaf) and a.op.role in wrt:
            g = total(a.out)
            if g is None:
                g = b.elementwise(f"zero_{a.out.name}", sp.S.Zero, ())
            grads[a.op.label] = g
            outputs.append((f"{prefix}:{a.op.label}", g))
    return Adjoint(b.program(tuple(outputs)), b, grads, origin)


def _backward(b: Builder, a: Assign, g: Value | None, active: set[str], adj: dict[str, list[Value]],
              per_sample: bool) -> None:
    """Append the adjoint contributions of assignment ``a`` given its output adjoint ``g``."""
    if g is None:
        return
    op, args = a.op, a.args
    if isinstance(op, Elementwise):
        partials = elementwise_partials(op.fn.name, op.fn.expr, len(args))
        g_s = arg_symbols(len(args) + 2)[-1]  # a0..a{k-1} args, a{k} the output, then g
        for i, d in enumerate(partials):
            x = args[i]
            if x.name not in active or d == 0:
                continue
            if d == 1:
                contrib = g
            else:
                contrib = b.elementwise(f"d_{x.name}", g_s * d, args + (a.out, g),
                                        note=f"d {a.out.name} / d {x.name}")
            adj[x.name].append(_reduce_to(b, contrib, x, f"adjoint of {x.name}", per_sample))
    elif isinstance(op, Einsum):
        for k, x in enumerate(args):
            if x.name not in active:
                continue
            others = tuple(v for i, v in enumerate(args) if i != k)
            if any(b.constant_of(o) == 0 for o in others):
                continue
            contrib = b.einsum(f"d_{x.name}", _einsum_adjoint(op.spec, k, per_sample), (g,) + others,
                               x.shape, note=f"d {a.out.name} / d {x.name}")
            adj[x.name].append(contrib)
    elif isinstance(op, Gather):
        v, idx = args
        if v.name in active:
            contrib = b.scatter(f"d_{v.name}", g, idx, v.shape[-1], note=f"d {a.out.name} / d {v.name}")
            adj[v.name].append(_reduce_to(b, contrib, v, f"adjoint of {v.name}", per_sample))
    elif isinstance(op, Scatter):
        x, idx = args
        if x.name in active:
            contrib = b.gather(f"d_{x.name}", g, idx, note=f"d {a.out.name} / d {x.name}")
            adj[x.name].append(_reduce_to(b, contrib, x, f"adjoint of {x.name}", per_sample))
    elif not isinstance(op, (Detach, ArgMax)):  # pragma: no cover
        raise IRError(f"no adjoint rule for {op!r}")


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
    dot: dict[str, Value] = {}
    for a in body:
        op, args = a.op, a.args
        drop = constant if frozen is not None and frozen(a) else frozenset()
        tans = [None if x.name in drop else dot.get(x.name) for x in args]
        t: Value | None = None
        if isinstance(op, Leaf):
            if op.role in wrt:
                t = b.leaf("tangent", op.label, a.out.shape, False, name=f"v_{a.out.name}")
        elif isinstance(op, Elementwise):
            t = _elementwise_tangent(b, a, tans)
        elif isinstance(op, Einsum):
            parts = [b.einsum(f"t_{a.out.name}", op.spec, args[:k] + (tk,) + args[k + 1:], a.out.shape,
                              note=f"tangent of {a.out.name} through {args[k].name}")
                     for k, tk in enumerate(tans) if tk is not None]
            t = _sum(b, parts, a.out)
        elif isinstance(op, Gather):
            if tans[0] is not None:
                t = b.gather(f"t_{a.out.name}", tans[0], args[1], note=f"tangent of {a.out.name}")
        elif isinstance(op, Scatter):
            if tans[0] is not None:
                t = b.scatter(f"t_{a.out.name}", tans[0], args[1], op.size, note=f"tangent of {a.out.name}")
        elif not isinstance(op, (Detach, ArgMax)):  # pragma: no cover
            raise IRError(f"no tangent rule for {op!r}")
        if t is not None and b.constant_of(t) != 0:
            dot[a.out.name] = t
    return dot


def _elementwise_tangent(b: Builder, a: Assign, tans: list[Value | None]) -> Value | None:
    """sum_i d f / d a_i * tangent_i, one elementwise op (SymPy derives the partials)."""
    fn, args = a.op.fn, a.args
    live = [i for i, t in enumerate(tans) if t is not None]
    if not live:
        return None
    partials = elementwise_partials(fn.name, fn.expr, len(args))
    syms = arg_symbols(len(args) + 1 + len(live))
    tan_syms = syms[len(args) + 1:]
    expr = sp.Add(*(partials[i] * s for i, s in zip(live, tan_syms)))
    if expr == 0:
        return None
    return b.elementwise(f"t_{a.out.name}", expr, args + (a.out,) + tuple(tans[i] for i in live),
                         note=f"tangent of {a.out.name} = {fn.name}")


def _sum(b: Builder, parts: list[Value], like: Value) -> Value | None:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return b.elementwise(f"t_{like.name}", sp.Add(*arg_symbols(len(parts))), tuple(parts),
                         note=f"tangent of {like.name}")
