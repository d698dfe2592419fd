"""The program IR: a single-assignment list of tensor operations.

Every value is per sample (its ``shape``) and either *batched* (one copy per
sample; the batch axis is implicit and written ``b`` in einsum specs) or not
(parameters and what is computed from them alone).

An op is a frozen dataclass deriving from :class:`Op`; its family module in
:mod:`symgrad.ops` gives it every rule the pipeline needs (type, simplification,
vector-Jacobian and Jacobian-vector products, how the derivation prints it).
The passes here and in :mod:`symgrad.autodiff` only call those rules, so an op
family is added in its own module. The vocabulary is closed under
differentiation: derivative programs are programs of the same ops.

:class:`Builder` creates the assignments; it hash-conses them (identical op
and arguments give the same value: common-subexpression elimination) and lets
each op simplify itself (constant folding, identities) before it is emitted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence

import sympy as sp

from .names import RESERVED, is_reserved

if TYPE_CHECKING:
    from .autodiff import Pullback, Pushforward

__all__ = [
    "Typed", "Value", "Op", "Assign", "Program", "Builder", "Namer", "IRError", "Linearity",
    "arg_symbols", "ancestors", "display_name", "BATCH", "RESERVED",
]

BATCH = "b"  #: the einsum letter of the implicit batch axis


class IRError(ValueError):
    """A program that cannot be built; the message names the node and shapes."""


class Typed(Protocol):
    """What a type rule reads of an argument: an IR :class:`Value` or a DSL tensor."""

    name: str
    shape: tuple[int, ...]
    batched: bool
    kind: str


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
class Linearity:
    """How a value depends on the parameters: ``degree`` 0 constant, 1 affine, 2 piecewise
    affine (``kink`` names the first op with a kink), 3 curved. Second-order methods warn on
    an objective of degree 2: its Hessian is zero almost everywhere."""

    degree: int
    kink: str = ""


CONSTANT, AFFINE, CURVED = Linearity(0), Linearity(1), Linearity(3)


class Op:
    """Base of every IR op. A family module overrides the rules its op needs.

    ``differentiable`` False (argmax, stop-gradient) makes the op's output
    inactive: no adjoint or tangent flows through it.
    """

    differentiable = True

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        """(per-sample shape, batched, kind) of the result; raises IRError on bad arguments."""
        raise _missing(self, "type")

    def simplify(self, b: Builder, args: tuple[Value, ...]) -> Value | tuple[Op, tuple[Value, ...]]:
        """An existing value equal to the result, or the (op, args) to emit (constants folded)."""
        return self, args

    def naming(self, label: str) -> tuple[str, str]:
        """(base name of the result, provenance note) for a node the user labelled ``label``."""
        return label, ""

    def vjp(self, pb: Pullback, a: Assign, g: Value) -> None:
        """Add the contributions of ``a`` to its arguments' adjoints (``pb.add``), given the
        adjoint ``g`` of its output."""
        raise _missing(self, "vjp")

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        """The tangent of ``a``'s output from its arguments' tangents (None: zero)."""
        raise _missing(self, "jvp")

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        """How the output depends on the parameters, from how the arguments do."""
        return max(args, key=lambda x: x.degree, default=CONSTANT) if args else CONSTANT

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        """The value in NumPy, for ``n`` samples: a batched array has the batch axis first. The
        reference interpreter (:func:`symgrad.interpret.run`) that rule tests check against."""
        raise _missing(self, "evaluate")

    def format(self, a: Assign, latex: bool) -> str:
        """The assignment as a line of the derivation a user reads."""
        return f"{a.out.name} = {type(self).__name__}({', '.join(x.name for x in a.args)})"

    def mean_through(self, b: Builder, means: Callable[[int], Value], values: Callable[[int], Value],
                     note: str) -> Value | None:
        """The op applied to the batch means of its arguments (``means(k)`` builds argument k's,
        ``values(k)`` its per-sample value), where the mean over the batch commutes with the
        op; None where it does not."""
        return None

    def is_leaf(self) -> bool:
        """An argument of the program (parameters, data), not a computation."""
        return False

    def constant_value(self) -> sp.Expr | None:
        """The SymPy value of an op without arguments that is a compile-time constant."""
        return None


def _missing(op: Op, rule: str) -> IRError:
    return IRError(f"IR op {type(op).__name__} has no {rule!r} rule: its family module in symgrad/ops "
                   "must define it")


@dataclass(frozen=True)
class Assign:
    """One line of a program: ``out = op(*args)``; ``note`` says where it came from."""

    out: Value
    op: Op
    args: tuple[Value, ...]
    note: str = ""


def ancestors(roots: Iterable[str], args_of: dict[str, tuple[Value, ...]]) -> set[str]:
    """The names ``roots`` depend on, themselves included (the one reachability walk)."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(x.name for x in args_of[n])
    return seen


@dataclass(frozen=True)
class Program:
    """Leaves and assignments in dependency order, plus named outputs."""

    body: tuple[Assign, ...]
    outputs: tuple[tuple[str, Value], ...]

    @property
    def leaves(self) -> tuple[Assign, ...]:
        return tuple(a for a in self.body if a.op.is_leaf())

    def output(self, key: str) -> Value:
        for k, v in self.outputs:
            if k == key:
                return v
        raise KeyError(key)

    def depends(self, names: Iterable[str]) -> set[str]:
        """The values ``names`` are computed from, themselves included."""
        return ancestors(names, {a.out.name: a.args for a in self.body})

    def pruned(self, keys: tuple[str, ...]) -> Program:
        """The program restricted to outputs ``keys`` and the assignments they need."""
        outputs = tuple((k, v) for k, v in self.outputs if k in keys)
        live = self.depends(v.name for _, v in outputs)
        return Program(tuple(a for a in self.body if a.out.name in live), outputs)


def display_name(name: str, latex: bool) -> str:
    """A value's name as the derivation prints it (underscores escaped in LaTeX)."""
    return name.replace("_", r"\_") if latex else name


def arg_symbols(n: int) -> tuple[sp.Symbol, ...]:
    """The canonical argument symbols a0..a{n-1} of an elementwise expression (real)."""
    return tuple(sp.Symbol(f"a{i}", real=True) for i in range(n))


class Namer:
    """Unique identifiers for generated code (the one name generator): ``base`` sanitized,
    then ``base_2``, ``base_3``, ... past names already taken and the reserved ones."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self.taken = set(taken) | RESERVED

    def __call__(self, base: str) -> str:
        stem = re.sub(r"\W", "_", base) or "value"
        if stem[0].isdigit():
            stem = "v_" + stem
        name, k = stem, 1
        while name in self.taken or is_reserved(name):
            k += 1
            name = f"{stem}_{k}"
        self.taken.add(name)
        return name


@dataclass
class Builder:
    """Creates assignments with CSE (hash-consing) and per-op simplification.

    ``requested`` counts op creations asked for, ``len(body)`` those kept:
    their difference is what CSE and folding removed.
    """

    body: list[Assign] = field(default_factory=list)
    requested: int = 0
    fresh: Namer = field(default_factory=Namer)
    _memo: dict[tuple, Value] = field(default_factory=dict)
    _consts: dict[str, sp.Expr] = field(default_factory=dict)
    #: the predictions built-in losses score (Gauss-Newton split points), in order of first mark
    splits: list[Value] = field(default_factory=list)

    def mark_split(self, v: Value) -> None:
        """Record ``v`` as a prediction a loss scores (:class:`symgrad.ops.split.Scored`)."""
        if v not in self.splits:
            self.splits.append(v)

    def adopt(self, assign: Assign) -> None:
        """Append an existing assignment (copying a program into a new builder)."""
        self.fresh.taken.add(assign.out.name)
        self.body.append(assign)
        self._memo[(assign.op, assign.args)] = assign.out
        const = assign.op.constant_value() if not assign.args else None
        if const is not None:
            self._consts[assign.out.name] = const

    def constant_of(self, v: Value) -> sp.Expr | None:
        """The SymPy value of ``v`` if it is a compile-time constant."""
        return self._consts.get(v.name)

    def apply(self, op: Op, args: tuple[Value, ...], label: str, note: str = "") -> Value:
        """``op(*args)``: simplified by the op, typed by its rule, then hash-consed.

        ``label`` is what the user (or a derivative rule) calls the result; the
        op turns it into the value's base name and, where it keeps its own
        name, the provenance note.
        """
        self.requested += 1
        simple = op.simplify(self, args)
        if isinstance(simple, Value):
            return simple
        op, args = simple
        key = (op, args)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        shape, batched, kind = op.type(args)
        base, own_note = op.naming(label)
        out = Value(self.fresh(base), shape, batched, kind)
        self.body.append(Assign(out, op, args, note or own_note))
        self._memo[key] = out
        const = op.constant_value() if not args else None
        if const is not None:
            self._consts[out.name] = const
        return out

    def program(self, outputs: tuple[tuple[str, Value], ...]) -> Program:
        return Program(tuple(self.body), outputs)
