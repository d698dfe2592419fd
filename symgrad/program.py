"""DSL graph -> forward program.

Walks the user's graph once, emits one IR assignment per node (shared nodes
once), lays the parameters out in declaration order, and builds the
objective: the mean over the batch of the per-sample loss. The mean is pushed
through affine elementwise nodes, so a parameter-only penalty added to the
loss is not summed N times and divided by N again.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.core.function import AppliedUndef

from .dsl import GraphError, Tensor
from .ir import BATCH, Builder, Leaf, Program, Value, arg_symbols

__all__ = ["Signature", "Forward", "build_forward"]


@dataclass(frozen=True)
class Signature:
    """Where each parameter sits in theta, and the data arguments in call order."""

    params: tuple[tuple[str, tuple[int, ...], int, object], ...]   # (name, shape, offset, init)
    data: tuple[tuple[str, str, tuple[int, ...], int], ...]       # (name, role, shape, classes)
    size: int                                                      # len(theta)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p[0] for p in self.params)

    @property
    def data_names(self) -> tuple[str, ...]:
        return tuple(d[0] for d in self.data)


@dataclass(frozen=True)
class Forward:
    """The forward program and its signature.

    Outputs: ``objective``; ``output`` if asked; ``split:<k>`` for each
    prediction a built-in loss scores (or the output when no built-in loss is
    used): where the Gauss-Newton product separates network from loss.
    """

    program: Program
    signature: Signature
    requested_ops: int


def _leaves(roots: list[Tensor]) -> list[Tensor]:
    seen: dict[int, Tensor] = {}
    stack = list(roots)
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen[id(t)] = t
        stack.extend(t.args)
    return sorted((t for t in seen.values() if t.kind == "leaf"), key=lambda t: t.serial)


def _heads(loss: Tensor) -> list[Tensor]:
    """Predictions scored by built-in losses in ``loss``'s graph, in creation order."""
    seen: set[int] = set()
    heads: dict[int, Tensor] = {}
    stack = [loss]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t.head is not None:
            heads[id(t.head)] = t.head
        stack.extend(t.args)
    return sorted(heads.values(), key=lambda t: t.serial)


def _signature(roots: list[Tensor]) -> Signature:
    leaves = _leaves(roots)
    by_name: dict[str, Tensor] = {}
    for t in leaves:
        if t.name in by_name and by_name[t.name] is not t:
            raise GraphError(f"duplicate name {t.name!r}: two different {t.payload.role}/"
                             f"{by_name[t.name].payload.role} leaves share it")
        by_name[t.name] = t
    params, offset = [], 0
    for t in leaves:
        if t.payload.role == "param":
            params.append((t.name, t.shape, offset, t.payload.init))
            offset += t.size
    data = [t for t in leaves if t.payload.role != "param"]
    data.sort(key=lambda t: (t.payload.role != "input", t.serial))
    return Signature(tuple(params), tuple((t.name, t.payload.role, t.shape, t.payload.classes)
                                          for t in data), offset)


def _check_expr(t: Tensor, expr: sp.Expr) -> None:
    undefined = sorted({str(f.func) for f in expr.atoms(AppliedUndef)})
    if undefined:
        raise GraphError(f"elementwise node {t.name!r}: undefined SymPy function(s) {undefined} in "
                         f"{expr}; SymPy cannot differentiate them and Numba cannot evaluate them")
    if not isinstance(expr, sp.Expr) or expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise GraphError(f"elementwise node {t.name!r}: {expr} is not a finite scalar expression")


class _Emitter:
    def __init__(self) -> None:
        self.b = Builder()
        self.memo: dict[int, Value] = {}

    def emit(self, t: Tensor) -> Value:
        hit = self.memo.get(id(t))
        if hit is not None:
            return hit
        args = tuple(self.emit(a) for a in t.args)
        b = self.b
        if t.kind == "leaf":
            leaf: Leaf = t.payload
            v = b.leaf(leaf.role, t.name, t.shape, t.batched, kind=t.dtype, init=leaf.init,
                       classes=leaf.classes)
        elif t.kind == "elementwise":
            fname, expr = t.payload
            _check_expr(t, expr)
            v = b.elementwise(fname, expr, args, note=t.name)
        elif t.kind == "einsum":
            v = b.einsum(t.name, t.payload, args, t.shape)
        elif t.kind == "argmax":
            v = b.argmax(t.name, args[0])
        elif t.kind == "gather":
            v = b.gather(t.name, args[0], args[1])
        elif t.kind == "detach":
            v = b.detach(t.name, args[0])
        else:  # pragma: no cover - the DSL creates no other kinds
            raise GraphError(f"unknown node kind {t.kind!r}")
        self.memo[id(t)] = v
        return v

    def objective(self, t: Tensor) -> Value:
        """mean over the batch of ``t``, pushed through affine elementwise nodes."""
        if not t.batched:
            return self.emit(t)
        if t.kind == "elementwise":
            _, expr = t.payload
            syms = arg_symbols(len(t.args))
            if all(not sp.diff(expr, s).free_symbols for s in syms):
                parts = tuple(self.objective(a) for a in t.args)
                return self.b.elementwise("objective", expr, parts, note=f"mean of {t.name}")
        per_sample = self.emit(t)
        total = self.b.einsum("loss_sum", f"{BATCH}->", (per_sample,), (), note=f"sum of {t.name}")
        inv_n = self.b.leaf("batch_scale", "inv_n", (), False)
        return self.b.elementwise("objective", arg_symbols(2)[0] * arg_symbols(2)[1],
                                  (total, inv_n), note=f"mean of {t.name}")


def build_forward(loss: Tensor, output: Tensor | None = None) -> Forward:
    """The forward program of ``loss`` (a per-sample scalar) and optionally ``output``."""
    if not isinstance(loss, Tensor):
        raise GraphError(f"loss must be a symgrad Tensor, got {type(loss).__name__}")
    if loss.shape != () or loss.dtype != "real":
        raise GraphError(f"loss must be a per-sample scalar; node {loss.name!r} has shape {loss.shape}"
                         " (reduce it with sg.sum or sg.mean)")
    if output is not None and not isinstance(output, Tensor):
        raise GraphError(f"output must be a symgrad Tensor, got {type(output).__name__}")
    roots = [loss] + ([output] if output is not None else [])
    sig = _signature(roots)
    em = _Emitter()
    # leaves first, in signature order, so every kernel sees them in the same order
    for t in _leaves(roots):
        em.emit(t)
    outputs = [("objective", em.objective(loss))]
    if output is not None:
        out = em.emit(output)
        outputs.append(("output", out))
    splits = _heads(loss) or ([output] if output is not None else [])
    outputs += [(f"split:{k}", em.emit(t)) for k, t in enumerate(splits)]
    return Forward(em.b.program(tuple(outputs)), sig, em.b.requested)
