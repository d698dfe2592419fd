"""Program -> kernel IR: the lowering's context, and the driver that runs its passes in order.

A kernel runs in three phases. Phase A computes what depends on parameters
alone. Phase B runs over the batch in fixed-size chunks (``<kind>_chunks``,
run by symgrad.runner in parallel threads); each chunk accumulates its share
of every batch reduction (the parameter gradients, the loss sum) into its own
row of ``partials``, and the partial sums are added in chunk order
afterwards, so results do not depend on the thread count. Phase C finishes
what depends on those sums.

The passes (:data:`PASSES`, each a module of :mod:`codegen.passes`, each
timed in ``Lowered.timings``) fill in one :class:`Lowering`: ``classify``
(phases, shared accumulators), ``storage`` (how each value is held, the
kernel arguments), ``emission`` (each op through its family's lowering rule,
:mod:`codegen.ops`; the target's backend is chosen here), ``fusion`` (row
loops merged and scalarized) and ``finishing`` (the target's kernels). What
differs between the CPU, a fused GPU pass and a staged one is the backend's
(:mod:`codegen.target_cpu`, :mod:`codegen.target_cuda`); this module and the
passes hold no target branch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import sympy as sp

from symgrad.ir import Assign, Namer, Program, Value, arg_symbols

from .kernel_ir import Affine, Alloc, Kernel, Loop, Ref, Stmt, View, index
from .ops import rule_for
from .targets import Target, target_of

if TYPE_CHECKING:
    from .targets import Backend

__all__ = ["Sink", "Store", "Lowered", "Lowering", "lower", "PASSES", "loop_vars", "c_order", "flat_view"]


@dataclass(frozen=True)
class Sink:
    """Where a program output goes: ``return``ed, into a ``flat`` vector at an offset, or
    into the ``rows`` of a per-sample output array."""

    key: str
    kind: str
    array: str = ""
    offset: int = 0
    size: int = 0


@dataclass
class Store:
    """How a value is held in the generated code."""

    kind: str              # array | scalar | const | acc | map
    name: str = ""
    expr: sp.Expr | None = None
    acc_slot: int = 0      # first index in the accumulator (kind acc)
    over: Any = None       # kind map: (operand, index map): read through, never stored


@dataclass(frozen=True)
class Lowered:
    """One kernel kind: ``chunks`` runs phases A and B for chunks c0..c1 (None when nothing is
    per-sample), ``finish`` adds the partial sums in chunk order and runs phase C."""

    chunks: Kernel | None
    finish: Kernel
    n_acc: int
    block_sums: bool = False   # CUDA: partials has one row per block (shared-memory sums), not per thread
    stages: tuple[Kernel, ...] = ()   # CUDA, staged: the row kernels ``chunks`` (host code) launches
    timings: dict[str, float] = field(default_factory=dict)   # seconds per pass of ``lower`` (PASSES)

    @property
    def staged(self) -> bool:
        return bool(self.stages)

    @property
    def kernels(self) -> list[Kernel]:
        return [*self.stages] + ([self.chunks] if self.chunks is not None else []) + [self.finish]


class Lowering:
    """One lowering: the program, what each pass has decided so far, and the helpers the op
    families' lowering rules call (``ref``, ``bind``, ``target``, ``loops``, ``index_vars``)."""

    def __init__(self, program: Program, sinks: tuple[Sink, ...], float_type: str, target: Target, *,
                 name: str, doc: str, data: tuple[tuple[str, str], ...], flat_leaves: dict[str, str],
                 param_layout: dict[str, tuple[int, tuple[int, ...]]]) -> None:
        self.program, self.sinks, self.ft = program, sinks, float_type
        self.limits = target      # the target's thresholds and capacity limits
        self.kernel_name, self.doc = name, doc
        self.data, self.flat_leaves, self.param_layout = data, flat_leaves, param_layout
        self.flat_roles = frozenset(flat_leaves)   # leaf roles held in a flat vector (param -> theta)
        self.by_name = {a.out.name: a for a in program.body}
        self.live = program.depends(program.output(s.key).name for s in sinks)
        self.assigns = [a for a in program.body if a.out.name in self.live]
        self.name = Namer(a.out.name for a in program.body)
        self.consumers: dict[str, list[Assign]] = {}
        for a in self.assigns:
            for x in a.args:
                self.consumers.setdefault(x.name, []).append(a)
        # classify
        self.phase: dict[str, str] = {}
        self.alias: dict[str, str] = {}
        # storage
        self.store: dict[str, Store] = {}
        self.n_acc = 0
        self.inputs: list[str] = []
        self.data_args: list[tuple[str, Assign | None]] = []
        self.head: list[Stmt] = []
        # emission (the backend is the target's, for this lowering) and fusion
        self.backend: Backend
        self.phase_of_emit = "A"
        self.phase_a: list[Stmt] = []
        self.sink_rows: list[tuple[Sink, Value]] = []
        self.chunk_body: list = []   # statements, row groups (emission) and row stages (fusion)
        # finishing
        self.result: Lowered | None = None

    # ------------------------------------------------------------------ questions
    def is_reduction(self, a: Assign) -> bool:
        """A sum over the batch: a value for all samples computed from per-sample ones."""
        return not a.out.batched and any(x.batched for x in a.args)

    @property
    def rows_are_local(self) -> bool:
        """Each thread keeps its current row of a per-sample value in local arrays (the row index
        dropped): a fused GPU pass."""
        return self.backend.rows_are_local

    def acc_views(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """``<name>_acc`` -> (first slot, shape): the views of the accumulator that phase B adds
        array-valued batch sums into (an alias adds into its leader's)."""
        return {f"{self.store[a.out.name].name}_acc": (self.store[a.out.name].acc_slot, a.out.shape)
                for a in self.assigns if a.out.name in self.store and self.store[a.out.name].kind == "acc"
                and a.out.shape and self.phase[a.out.name] == "B" and a.out.name not in self.alias}

    def chunk_slices(self) -> list[View]:
        """``x_c = x[r0:r1]``: the chunk's rows of each data argument the kind reads."""
        return [View(self.store[a.out.name].name, arg, Affine.of("r0"), Affine.of("r1"))
                for arg, a in self.data_args if a is not None and a.out.name in self.store]

    # ------------------------------------------------------------------ references
    def ref(self, v: Value, idx: tuple[str | Affine, ...], row: str | None) -> Ref | sp.Expr:
        """The element of ``v`` at per-sample index ``idx`` (row ``row`` if batched)."""
        st = self.store[v.name]
        if st.kind == "const":
            return st.expr
        if st.kind == "scalar":
            return Ref(st.name)
        if st.kind == "map":   # an index map read through: its operand at the mapped index
            base, m = st.over
            return self.ref(base, tuple(_compose(ax, idx) for ax in m.axes), row)
        lead = (row,) if v.batched else ()
        if not v.shape:
            return Ref(st.name, index(*lead))
        return Ref(st.name, index(*lead, *idx))

    def bind(self, expr: sp.Expr, args: tuple[Value, ...], idx_of: list[tuple[str, ...]],
             row: str | None) -> tuple[sp.Expr, tuple[tuple[sp.Symbol, Ref], ...]]:
        """``expr`` in the symbols a0, a1, ... bound to the elements of ``args`` at ``idx_of``
        (constants substituted)."""
        subs, binds = {}, []
        for s, x, idx in zip(arg_symbols(len(args)), args, idx_of):
            r = self.ref(x, idx, row)
            if isinstance(r, Ref):
                binds.append((s, r))
            else:
                subs[s] = r
        return (expr.xreplace(subs) if subs else expr), tuple(binds)

    def target(self, a: Assign, idx: tuple[str | Affine, ...], row: str | None) -> tuple[Ref, str]:
        """Where ``a``'s element at ``idx`` is written, and how ('=' or '+=' into an accumulator)."""
        st = self.store[a.out.name]
        if st.kind == "acc" and self.phase_of_emit == "B":
            if not a.out.shape:
                return Ref("acc", index(st.acc_slot)), "+="
            return Ref(f"{st.name}_acc", index(*idx)), "+="
        r = self.ref(a.out, idx, row)
        assert isinstance(r, Ref)
        return r, "="

    def loops(self, shape: tuple[int, ...], names: tuple[str, ...], body: list[Stmt]) -> list[Stmt]:
        """``body`` in loops over ``shape``, outermost first."""
        for n, var in reversed(list(zip(shape, names))):
            body = [Loop(var, Affine(), Affine.of(n), tuple(body))]
        return body

    def index_vars(self, n: int) -> tuple[str, ...]:
        """Loop variables over a value's ``n`` per-sample axes: i, j, then i2, i3, ..."""
        return loop_vars(("i", "j"), "i", n)

    def reduction_vars(self, n: int) -> tuple[str, ...]:
        """Loop variables over an einsum's ``n`` summed axes: k, l, m, p, then k4, k5, ..."""
        return loop_vars(("k", "l", "m", "p"), "k", n)

    # ------------------------------------------------------------------ op emission
    def emit(self, a: Assign, row: str | None) -> list[Stmt]:
        """The statements of ``a`` (its op family's lowering rule, :mod:`codegen.ops`)."""
        return rule_for(a.op).emit(self, a, row)

    def gemm_plan(self, a: Assign, per_row: bool) -> tuple[str, bool, str, bool] | None:
        """(first, transpose it, second, transpose it) when ``a`` is a GEMM worth a BLAS call."""
        plan = rule_for(a.op).gemm_plan
        return plan(self, a, per_row) if plan is not None else None

    def rows_plan(self, a: Assign) -> tuple | None:
        """The per-sample BLAS product ``a`` is, if its rule finds one (:mod:`codegen.ops`)."""
        plan = rule_for(a.op).rows_plan
        return plan(a) if plan is not None else None

    def alloc(self, v: Value, rows: str | None, name: str = "") -> Alloc | None:
        """The allocation of ``v``'s array (under ``name`` if given), as the backend holds it."""
        return self.backend.alloc(self, v, rows, name or self.store[v.name].name)


def _compose(ax: Any, idx: tuple[str | Affine, ...]) -> Affine:
    """``sum(coefs[j] * idx[j]) + const``: an index map's axis at the given indices."""
    out = Affine.of(ax.const)
    for c, i in zip(ax.coefs, idx):
        if c:
            out = out + Affine.of(i) * c
    return out


def loop_vars(first: tuple[str, ...], stem: str, n: int) -> tuple[str, ...]:
    """``n`` loop variables: the ``first`` ones, then ``stem`` numbered by position (any rank)."""
    return tuple(first[k] if k < len(first) else f"{stem}{k}" for k in range(n))


def c_order(offset: int, idx: tuple[str, ...], shape: tuple[int, ...]) -> Affine:
    """The flat position ``offset + sum(idx[k] * stride[k])`` of an element, C order."""
    terms, stride = [], 1
    for var, d in reversed(list(zip(idx, shape))):
        terms.append(Affine(((var, stride),)))
        stride *= d
    pos = Affine.of(offset)
    for t in terms[::-1]:
        pos = pos + t
    return pos


def flat_view(name: str, arr: str, offset: int, shape: tuple[int, ...], comment: str = "") -> View:
    """``name = arr[offset:offset+size]``, reshaped to ``shape``."""
    return View(name, arr, Affine.of(offset), Affine.of(offset + math.prod(shape)), shape, comment)


def _passes() -> tuple[tuple[str, object], ...]:
    from .passes import classify, emission, finishing, fusion, storage
    return (("classify", classify.run), ("storage", storage.run), ("emission", emission.run),
            ("fusion", fusion.run), ("finishing", finishing.run))


#: the passes of ``lower``, in order: each is timed in ``Lowered.timings`` (and ``model.stats``)
PASSES = ("classify", "storage", "emission", "fusion", "finishing")


def lower(program: Program, sinks: tuple[Sink, ...], *, name: str, float_type: str,
          data: tuple[tuple[str, str], ...], flat_leaves: dict[str, str],
          param_layout: dict[str, tuple[int, tuple[int, ...]]], doc: str = "",
          target: str | Target = "cpu") -> Lowered:
    """Lower ``program`` to its kernels by running :data:`PASSES` in order.

    ``data``: (label, role) of the per-sample arguments the kernel takes, in order.
    ``flat_leaves``: role -> flat argument holding all leaves of that role (param -> theta,
    tangent -> v), laid out by ``param_layout`` (label -> (offset, shape)).
    ``target``: "cpu" (``<name>_chunks`` over chunks c0..c1 in threads) or "cuda" (one GPU
    thread per chunk of ``chunk`` rows, or, staged, host code that launches the row kernels
    ``Lowered.stages`` and the tiled GEMMs), or a configured :class:`~codegen.targets.Target`.
    """
    t0 = time.perf_counter()
    L = Lowering(program, sinks, float_type, target_of(target), name=name, doc=doc, data=data,
                 flat_leaves=flat_leaves, param_layout=param_layout)
    timings: dict[str, float] = {}
    for pass_name, run in _passes():
        run(L)   # type: ignore[operator]
        t1 = time.perf_counter()
        timings[pass_name] = t1 - t0
        t0 = t1
    assert L.result is not None
    return replace(L.result, timings=timings)

