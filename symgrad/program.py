"""DSL graph -> forward program.

Walks the user's graph once, emits one IR assignment per node (shared nodes
once), lays the parameters out in declaration order, and builds the
objective: the mean over the batch of the per-sample loss. The mean is pushed
through affine elementwise nodes, so a parameter-only penalty added to the
loss is not summed N times and divided by N again.
"""
from __future__ import annotations

from dataclasses import dataclass

from .dsl import GraphError, Tensor
from .ir import BATCH, Builder, IRError, Program, Value, arg_symbols
from .ops.einsum import einsum
from .ops.elementwise import elementwise
from .ops.leaf import leaf

__all__ = ["Signature", "Forward", "build_forward"]


@dataclass(frozen=True)
class Signature:
    """Where each parameter sits in theta, and the data arguments in call order."""

    params: tuple[tuple[str, tuple[int, ...], int, object], ...]   # (name, shape, offset, init)
    data: tuple[tuple[str, str, tuple[int, ...], int], ...]       # (name, role, shape, classes)
    size: int                                                      # len(theta)
    #: the data the loss's graph and the output's graph declare (data_names order): what the
    #: objective's kinds and the output's kinds (predict, jacobian) take
    loss_data: tuple[str, ...] = ()
    output_data: tuple[str, ...] = ()

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


def _nodes(roots: list[Tensor]) -> list[Tensor]:
    """Every node ``roots`` reach, in creation order."""
    seen: dict[int, Tensor] = {}
    stack = list(roots)
    while stack:
        t = stack.pop()
        if id(t) not in seen:
            seen[id(t)] = t
            stack.extend(t.args)
    return sorted(seen.values(), key=lambda t: t.serial)


def _leaves(roots: list[Tensor]) -> list[Tensor]:
    return [t for t in _nodes(roots) if t.op.is_leaf()]


def _signature(loss: Tensor, output: Tensor | None) -> Signature:
    leaves = _leaves([loss] + ([output] if output is not None else []))
    by_name: dict[str, Tensor] = {}
    for t in leaves:
        if t.name in by_name and by_name[t.name] is not t:
            raise GraphError(f"duplicate name {t.name!r}: two different {t.op.role}/"
                             f"{by_name[t.name].op.role} leaves share it")
        by_name[t.name] = t
    params, offset = [], 0
    for t in leaves:
        if t.op.role == "param":
            params.append((t.name, t.shape, offset, t.op.init))
            offset += t.size
    data = [t for t in leaves if t.op.role != "param"]
    data.sort(key=lambda t: (t.op.role != "input", t.serial))
    order = [t.name for t in data]

    def declared(root: Tensor | None) -> tuple[str, ...]:
        names = {t.name for t in _leaves([root])} if root is not None else set()
        return tuple(n for n in order if n in names)
    return Signature(tuple(params), tuple((t.name, t.op.role, t.shape, t.op.classes) for t in data), offset,
                     declared(loss), declared(output))


class _Emitter:
    def __init__(self) -> None:
        self.b = Builder()
        self.memo: dict[int, Value] = {}

    def emit(self, t: Tensor) -> Value:
        """The value of ``t``, emitting every node it needs first, in creation order (no
        recursion: a graph of any depth)."""
        if id(t) not in self.memo:
            for n in _nodes([t]):
                if id(n) not in self.memo:
                    try:
                        self.memo[id(n)] = self.b.apply(n.op, tuple(self.memo[id(a)] for a in n.args), n.name)
                    except IRError as e:
                        raise GraphError(f"node {n.name!r}: {e}") from e
        return self.memo[id(t)]

    def objective(self, t: Tensor) -> Value:
        """mean over the batch of ``t``, pushed through affine elementwise nodes."""
        if not t.batched:
            return self.emit(t)
        pushed = t.op.mean_through(self.b, lambda k: self.objective(t.args[k]), lambda k: self.emit(t.args[k]),
                                   note=f"mean of {t.name}")
        if pushed is not None:
            return pushed
        per_sample = self.emit(t)
        total = einsum(self.b, "loss_sum", f"{BATCH}->", (per_sample,), (), note=f"sum of {t.name}")
        inv_n = leaf(self.b, "batch_scale", "inv_n", (), False)
        return elementwise(self.b, "objective", arg_symbols(2)[0] * arg_symbols(2)[1], (total, inv_n),
                           note=f"mean of {t.name}")


def build_forward(loss: Tensor, output: Tensor | None = None) -> Forward:
    """The forward program of ``loss`` (a per-sample scalar) and optionally ``output``."""
    if not isinstance(loss, Tensor):
        raise GraphError(f"loss must be a symgrad Tensor, got {type(loss).__name__}")
    if loss.shape != () or loss.kind != "real":
        raise GraphError(f"loss must be a per-sample scalar; node {loss.name!r} has shape {loss.shape}"
                         " (reduce it with sg.sum or sg.mean)")
    if output is not None and not isinstance(output, Tensor):
        raise GraphError(f"output must be a symgrad Tensor, got {type(output).__name__}")
    roots = [loss] + ([output] if output is not None else [])
    sig = _signature(loss, output)
    em = _Emitter()
    # leaves first, in signature order, so every kernel sees them in the same order
    for t in _leaves(roots):
        em.emit(t)
    outputs = [("objective", em.objective(loss))]
    # the predictions built-in losses score, as the builder recorded them, in program order
    order = {a.out.name: k for k, a in enumerate(em.b.body)}
    splits = sorted(em.b.splits, key=lambda v: order[v.name])
    if output is not None:
        out = em.emit(output)
        outputs.append(("output", out))
        splits = splits or [out]
    outputs += [(f"split:{k}", v) for k, v in enumerate(splits)]
    return Forward(em.b.program(tuple(outputs)), sig, em.b.requested)
