"""The program IR: a single-assignment list of tensor operations.

Every value is per sample (its ``shape``) and either *batched* (one copy per
sample; the batch axis is implicit and written ``b`` in einsum specs) or not
(parameters and what is computed from them alone). The op vocabulary is small
and closed under differentiation: the adjoint and tangent of each op is again
a short sequence of these ops, so derivative programs are programs too.

- ``Elementwise``: a SymPy expression of scalars applied element by element,
  with scalars broadcast (arithmetic, activations, losses' pointwise parts).
- ``Einsum``: every linear contraction (matrix products, sums over axes or
  over the batch, outer products, broadcasts).
- ``ArgMax`` / ``Gather`` / ``Scatter``: the index ops behind max, class
  labels and their adjoints. ``Detach``: identity without derivative.

:class:`Builder` creates the assignments; it hash-conses them (identical
op and arguments give the same value: common-subexpression elimination) and
folds constants into elementwise expressions.
"""
from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass, field
from typing import Union

import sympy as sp

__all__ = [
    "Value", "Leaf", "ScalarFn", "Elementwise", "Einsum", "ArgMax", "Gather", "Scatter",
    "Detach", "Op", "Assign", "Program", "Builder", "IRError", "arg_symbols", "BATCH",
]

BATCH = "b"  #: the einsum letter of the implicit batch axis

#: names generated code uses for itself; IR values never take them
RESERVED = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {
    "math", "np", "njit", "prange", "sigmoid", "softplus", "xlogy", "tanh", "expm1", "chunk_rows",
    "dot_nn", "dot_nt", "dot_tn", "dot_tt", "add_into", "sum_rows",
    "theta", "v", "grad", "out", "hv", "partials", "acc", "total", "chunk", "n_samples", "inv_n",
    "c", "c0", "c1", "r", "r0", "r1", "rows", "i", "j", "k", "l", "m", "p", "q", "best", "best_at",
    "cuda", "float32", "float64", "int64", "result", "reduce_partials",
    # the host driver of a staged CUDA pass (symgrad.cuda_runtime)
    "gemm", "zero", "add_partials", "slot_index", "blocks_for", "stage_rows", "THREADS_PER_BLOCK", "blocks"}


class IRError(ValueError):
    """A program that cannot be built; the message names the node and shapes."""


@dataclass(frozen=True)
class Value:
    """A named SSA value: per-sample ``shape``, ``batched`` flag, ``kind`` real or index."""

    name: str
    shape: tuple[int, ...]
    batched: bool
    kind: str = "real"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Leaf:
    """An argument of the program: a parameter, a data array, or a runtime scalar.

    ``role`` is one of param, input, target, labels, tangent (a direction
    vector for forward mode, laid out like the parameters), cotangent (a
    per-sample seed for the output's adjoint: the Jacobian's rows), batch_scale
    (1/N, the mean over samples).
    """

    role: str
    label: str
    init: object = None
    classes: int = 0


@dataclass(frozen=True)
class ScalarFn:
    """A scalar SymPy expression in the symbols ``a0..a{k-1}`` (one per argument)."""

    name: str
    expr: sp.Expr
    arity: int

    def __str__(self) -> str:
        return self.name


def arg_symbols(n: int) -> tuple[sp.Symbol, ...]:
    """The canonical argument symbols a0..a{n-1} of a ScalarFn (real)."""
    return tuple(sp.Symbol(f"a{i}", real=True) for i in range(n))


@dataclass(frozen=True)
class Elementwise:
    fn: ScalarFn


@dataclass(frozen=True)
class Einsum:
    """``spec`` like ``'ij,bj->bi'``; output letters absent from the inputs broadcast."""

    spec: str


@dataclass(frozen=True)
class ArgMax:
    """Index of the largest element of a vector (first one on ties)."""


@dataclass(frozen=True)
class Gather:
    """``v[idx]`` for a vector v and an index value."""


@dataclass(frozen=True)
class Scatter:
    """A vector of length ``size``, zero but for ``a`` at position ``idx``."""

    size: int


@dataclass(frozen=True)
class Detach:
    """Identity whose derivative is zero (the max-shift of log-sum-exp)."""


Op = Union[Leaf, Elementwise, Einsum, ArgMax, Gather, Scatter, Detach]


@dataclass(frozen=True)
class Assign:
    """One line of a program: ``out = op(*args)``; ``note`` says where it came from."""

    out: Value
    op: Op
    args: tuple[Value, ...]
    note: str = ""


@dataclass(frozen=True)
class Program:
    """Leaves and assignments in dependency order, plus named outputs."""

    body: tuple[Assign, ...]
    outputs: tuple[tuple[str, Value], ...]

    @property
    def leaves(self) -> tuple[Assign, ...]:
        return tuple(a for a in self.body if isinstance(a.op, Leaf))

    def output(self, key: str) -> Value:
        for k, v in self.outputs:
            if k == key:
                return v
        raise KeyError(key)

    def pruned(self, keys: tuple[str, ...]) -> Program:
        """The program restricted to outputs ``keys`` and the assignments they need."""
        outputs = tuple((k, v) for k, v in self.outputs if k in keys)
        args = {a.out.name: a.args for a in self.body}
        live, stack = set(), [v.name for _, v in outputs]
        while stack:
            n = stack.pop()
            if n not in live:
                live.add(n)
                stack.extend(x.name for x in args[n])
        return Program(tuple(a for a in self.body if a.out.name in live), outputs)


_SPEC = re.compile(r"^[a-z]*(,[a-z]*)*->[a-z]*$")


def _parse_spec(spec: str) -> tuple[list[str], str]:
    if not _SPEC.match(spec):
        raise IRError(f"malformed einsum spec {spec!r}")
    lhs, out = spec.split("->")
    return lhs.split(","), out


@dataclass
class Builder:
    """Creates assignments with CSE (hash-consing) and constant folding.

    ``requested`` counts op creations asked for, ``len(body)`` those kept:
    their difference is what CSE and folding removed.
    """

    body: list[Assign] = field(default_factory=list)
    requested: int = 0
    _memo: dict[tuple, Value] = field(default_factory=dict)
    _names: set[str] = field(default_factory=lambda: set(RESERVED))
    _consts: dict[str, sp.Expr] = field(default_factory=dict)

    def fresh(self, base: str) -> str:
        """A unique identifier derived from ``base`` (sanitized for generated code)."""
        stem = re.sub(r"\W", "_", base) or "value"
        if stem[0].isdigit():
            stem = "v_" + stem
        name, k = stem, 1
        while name in self._names:
            k += 1
            name = f"{stem}_{k}"
        self._names.add(name)
        return name

    def adopt(self, assign: Assign) -> None:
        """Append an existing assignment (copying a program into a new builder)."""
        self._names.add(assign.out.name)
        self.body.append(assign)
        if not isinstance(assign.op, Leaf):
            self._memo[(assign.op, assign.args, assign.out.shape)] = assign.out
        else:
            self._memo[(assign.op,)] = assign.out
        if isinstance(assign.op, Elementwise) and not assign.args:
            self._consts[assign.out.name] = assign.op.fn.expr

    def constant_of(self, v: Value) -> sp.Expr | None:
        """The SymPy value of ``v`` if it is a compile-time constant."""
        return self._consts.get(v.name)

    def _emit(self, op: Op, args: tuple[Value, ...], shape: tuple[int, ...], batched: bool,
              kind: str, name: str, note: str) -> Value:
        self.requested += 1
        key = (op, args, shape) if not isinstance(op, Leaf) else (op,)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        out = Value(self.fresh(name), shape, batched, kind)
        self.body.append(Assign(out, op, args, note))
        self._memo[key] = out
        return out

    def leaf(self, role: str, label: str, shape: tuple[int, ...], batched: bool, *,
             kind: str = "real", init: object = None, classes: int = 0, name: str = "") -> Value:
        """``label`` identifies the argument (a parameter's label also places its tangent in
        ``v``); ``name`` is the variable's base name, the label by default."""
        return self._emit(Leaf(role, label, init, classes), (), shape, batched, kind, name or label, role)

    def elementwise(self, name: str, expr: sp.Expr, args: tuple[Value, ...], note: str = "") -> Value:
        """``expr`` in a0..a{k-1}; constants among ``args`` are folded into it."""
        shape = _broadcast_shape(name, args)
        batched = any(a.batched for a in args)
        syms = arg_symbols(len(args))
        subs, keep = {}, []
        for s, a in zip(syms, args):
            c = self.constant_of(a)
            if c is not None:
                subs[s] = c
            elif s in expr.free_symbols:
                keep.append((s, a))
        if subs:
            expr = expr.xreplace(subs)
        # renumber the kept symbols to a0..a{m-1}; drop arguments the expression ignores
        new_syms = arg_symbols(len(keep))
        expr = expr.xreplace({s: n for (s, _), n in zip(keep, new_syms)})
        args = tuple(a for _, a in keep)
        if len(args) == 1 and expr == new_syms[0] and args[0].shape == shape:
            return args[0]
        if not args:
            batched = False  # a constant is the same for every sample
        out = self._emit(Elementwise(ScalarFn(name, expr, len(args))), args, shape, batched, "real",
                         name, note)
        if not args:
            self._consts[out.name] = expr
        return out

    def constant(self, value: sp.Expr | float) -> Value:
        return self.elementwise("const", sp.sympify(value), ())

    def einsum(self, name: str, spec: str, args: tuple[Value, ...], shape: tuple[int, ...],
               note: str = "") -> Value:
        """A contraction; ``shape`` is the per-sample output shape (needed for broadcasts)."""
        ins, out = _parse_spec(spec)
        if len(ins) != len(args):
            raise IRError(f"einsum {name}: spec {spec!r} has {len(ins)} operands, got {len(args)}")
        sizes: dict[str, int] = {}
        for letters, a in zip(ins, args):
            dims = ((None,) if a.batched else ()) + a.shape
            if len(letters) != len(dims) or (BATCH in letters) != a.batched:
                raise IRError(f"einsum {name}: operand {a.name} of shape {a.shape} "
                              f"(batched={a.batched}) does not match {letters!r} in {spec!r}")
            for ch, d in zip(letters, dims):
                if d is None:
                    continue
                if sizes.setdefault(ch, d) != d:
                    raise IRError(f"einsum {name}: index {ch!r} has sizes {sizes[ch]} and {d} in {spec!r}")
        batched = BATCH in out
        if len(out) - batched != len(shape):
            raise IRError(f"einsum {name}: output shape {shape} does not match {out!r}")
        if len(args) == 1 and ins[0] == out:
            return args[0]
        return self._emit(Einsum(spec), args, tuple(shape), batched, "real", name, note)

    def argmax(self, name: str, v: Value) -> Value:
        return self._emit(ArgMax(), (v,), (), v.batched, "index", name, "")

    def gather(self, name: str, v: Value, idx: Value, note: str = "") -> Value:
        return self._emit(Gather(), (v, idx), v.shape[:-1], v.batched or idx.batched, "real", name, note)

    def scatter(self, name: str, a: Value, idx: Value, size: int, note: str = "") -> Value:
        return self._emit(Scatter(size), (a, idx), a.shape + (size,), a.batched or idx.batched,
                          "real", name, note)

    def detach(self, name: str, v: Value) -> Value:
        return self._emit(Detach(), (v,), v.shape, v.batched, v.kind, name, "")

    def program(self, outputs: tuple[tuple[str, Value], ...]) -> Program:
        return Program(tuple(self.body), outputs)


def _broadcast_shape(name: str, args: tuple[Value, ...]) -> tuple[int, ...]:
    shapes = {a.shape for a in args if a.shape != ()}
    if len(shapes) > 1:
        detail = ", ".join(f"{a.name}{a.shape}" for a in args)
        raise IRError(f"{name}: shapes do not broadcast ({detail}); only scalars broadcast")
    return shapes.pop() if shapes else ()
