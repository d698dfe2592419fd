"""Symbolic reverse accumulation over a program (the adjoint program).

The chain rule runs over the assignment list, never over an inlined network:
each op has a vector-Jacobian rule that emits ordinary IR ops, and the only
place SymPy differentiates is an elementwise op's small scalar expression.
Derivation time therefore grows with the number of ops, not with widths.

An elementwise derivative that contains the op's own expression (tanh' =
1 - tanh^2, sigmoid' = s(1-s)) is rewritten in terms of the stored output, so
the backward pass reuses the forward value instead of recomputing it.
"""
from __future__ import annotations

from collections import defaultdict

import sympy as sp

from .ir import (BATCH, ArgMax, Assign, Builder, Detach, Einsum, Elementwise, Gather, IRError, Leaf,
                 Program, Scatter, Value, arg_symbols)

__all__ = ["vjp", "elementwise_partials", "DerivativeError"]


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


def _reduce_to(b: Builder, g: Value, target: Value, note: str) -> Value:
    """Sum ``g`` (shaped like an op's output) down to ``target``'s shape and batching."""
    if g.shape == target.shape and g.batched == target.batched:
        return g
    letters = "ijklmnopq"[:len(g.shape)]
    src = (BATCH if g.batched else "") + letters
    dst = (BATCH if target.batched else "") + (letters if target.shape == g.shape else "")
    if target.shape not in ((), g.shape):  # pragma: no cover - broadcasting only adds scalars
        raise IRError(f"cannot reduce {g.shape} to {target.shape}")
    return b.einsum(f"{target.name}_sum", f"{src}->{dst}", (g,), target.shape, note=note)


def _einsum_adjoint(spec: str, k: int) -> str:
    ins, out = spec.split("->")
    parts = ins.split(",")
    new_ins = [out] + [p for i, p in enumerate(parts) if i != k]
    return ",".join(new_ins) + "->" + parts[k]


def vjp(program: Program, seed: str = "objective", wrt: tuple[str, ...] = ("param",),
        builder: Builder | None = None) -> tuple[Program, Builder, dict[str, Value]]:
    """The adjoint program: the forward body, then the backward assignments.

    Returns the program (outputs: the forward ones plus ``grad:<leaf label>``
    for each leaf whose role is in ``wrt``), the builder (for further
    transformation, e.g. forward mode over it) and the adjoint map.
    """
    b = builder or Builder()
    if builder is None:
        for a in program.body:
            b.adopt(a)
    y = program.output(seed)
    # only values that depend on a leaf in ``wrt`` need adjoints (no gradient for the data)
    active: set[str] = set()
    for a in program.body:
        if (isinstance(a.op, Leaf) and a.op.role in wrt) or any(x.name in active for x in a.args):
            if not isinstance(a.op, (Detach, ArgMax)):
                active.add(a.out.name)
    adj: dict[str, list[Value]] = defaultdict(list)
    adj[y.name].append(b.constant(1))

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
        g = total(a.out)
        if g is None:
            continue
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
                adj[x.name].append(_reduce_to(b, contrib, x, note=f"adjoint of {x.name}"))
        elif isinstance(op, Einsum):
            for k, x in enumerate(args):
                if x.name not in active:
                    continue
                others = tuple(v for i, v in enumerate(args) if i != k)
                if any(b.constant_of(o) == 0 for o in others):
                    continue
                contrib = b.einsum(f"d_{x.name}", _einsum_adjoint(op.spec, k), (g,) + others, x.shape,
                                   note=f"d {a.out.name} / d {x.name}")
                adj[x.name].append(contrib)
        elif isinstance(op, Gather):
            v, idx = args
            if v.name not in active:
                continue
            contrib = b.scatter(f"d_{v.name}", g, idx, v.shape[-1], note=f"d {a.out.name} / d {v.name}")
            adj[v.name].append(_reduce_to(b, contrib, v, note=f"adjoint of {v.name}"))
        elif isinstance(op, Scatter):
            x, idx = args
            if x.name not in active:
                continue
            contrib = b.gather(f"d_{x.name}", g, idx, note=f"d {a.out.name} / d {x.name}")
            adj[x.name].append(_reduce_to(b, contrib, x, note=f"adjoint of {x.name}"))
        elif isinstance(op, (Detach, ArgMax)):
            continue
        else:  # pragma: no cover
            raise IRError(f"no adjoint rule for {op!r}")

    outputs = list(program.outputs)
    grads: dict[str, Value] = {}
    for a in program.body:
        if isinstance(a.op, Leaf) and a.op.role in wrt:
            g = total(a.out)
            if g is None:
                g = b.elementwise(f"zero_{a.out.name}", sp.S.Zero, ())
            grads[a.op.label] = g
            outputs.append((f"grad:{a.op.label}", g))
    return b.program(tuple(outputs)), b, grads
