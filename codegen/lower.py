"""Program -> kernel IR: phases, batch chunks, loop nests, BLAS calls, fusion.

A kernel runs in three phases. Phase A computes what depends on parameters
alone. Phase B runs over the batch in fixed-size chunks (``<kind>_chunks``,
run by symgrad.runner in parallel threads); each chunk accumulates its share
of every batch reduction (the parameter gradients, the loss sum) into its own
row of ``partials``, and the partial sums are
added in chunk order afterwards, so results do not depend on the thread
count. Phase C finishes what depends on those sums.

Inside a chunk, contractions big enough to pay for a BLAS call become one
``np.dot`` over the chunk; everything else runs in a loop over the chunk's
rows, where adjacent loops over the same features are fused and
intermediates that never leave the fused loop become scalars (see
:mod:`codegen.fusion`).

``target="cuda"`` lowers the same program to the same IR for
:mod:`codegen.emit_cuda`, in one of two ways. A narrow network is fused: a
chunk is one GPU thread's rows, every contraction is a loop, per-row
intermediates are the thread's local arrays (the row index dropped), and
per-sample outputs are written row by row inside the row loop. A network
with a wide layer (or more sums than a block's shared memory holds) is
staged (``_staged_pass``): each fused row loop is a kernel of its own, the
wide contractions are tiled GEMM launches, and generated host code runs
them in order. Either way the finish kernel reads the sums already reduced
on the device (``total``) and writes its scalar result into ``result[0]``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import sympy as sp

from symgrad.ir import Assign, IRError, Namer, Program, Value, arg_symbols
from symgrad.cuda_runner import THREADS_PER_BLOCK
from symgrad.runtime import BLAS_HELPERS

from .fusion import drop_row_index, fuse_row_body, reindex
from .kernel_ir import (Affine, Alloc, Barrier, Builtin, Call, CallExpr, Compute, Dim, Fill, If, Kernel, Launch, Let,
                        Literal, Loop, Min, Mul, Reciprocal, Ref, Return, Stmt, View, Window, defines, index,
                        needed, uses, walk_refs)
from .ops import rule_for
from .targets import CPU, Target, target_of

__all__ = ["Sink", "Store", "Lowered", "Lowering", "lower", "PASSES"]


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

    kind: str              # array | scalar | const | acc
    name: str = ""
    expr: sp.Expr | None = None
    acc_slot: int = 0      # first index in the accumulator (kind acc)


@dataclass(frozen=True)
class _RowStage:
    """Staged CUDA: one fused loop over a chunk's rows, which becomes a row kernel (one GPU thread
    per sample), and the allocations of its thread-local arrays."""

    allocs: tuple[Alloc, ...]
    loop: Loop


class Lowering:
    def __init__(self, program: Program, sinks: tuple[Sink, ...], float_type: str,
                 flat_roles: frozenset[str], target: Target = CPU) -> None:
        self.program, self.sinks, self.ft = program, sinks, float_type
        self.limits = target      # the target's thresholds and capacity limits
        self.cuda = target.name == "cuda"
        self.staged = False       # CUDA: a sequence of launches (row kernels, tiled GEMMs), see lower()
        self.globals: dict[str, Value] = {}        # staged: per-sample arrays held in device memory
        self.gemm_sums: set[str] = set()           # staged: accumulator views a GEMM adds into
        self.local_elements = 0   # CUDA: elements of thread-local arrays allocated so far
        self.dtype = f"np.{float_type}"
        self.flat_roles = flat_roles          # leaf roles held in a flat vector (param -> theta)
        by_name = {a.out.name: a for a in program.body}
        self.by_name = by_name
        self.live = program.depends(program.output(s.key).name for s in sinks)
        self.assigns = [a for a in program.body if a.out.name in self.live]
        self.name = Namer(a.out.name for a in program.body)
        self.store: dict[str, Store] = {}
        self.phase: dict[str, str] = {}
        self.consumers: dict[str, list[Assign]] = {}
        for a in self.assigns:
            for x in a.args:
                self.consumers.setdefault(x.name, []).append(a)
        self._classify()
        self.alias = self._shared_sums({program.output(s.key).name for s in sinks})

    # ------------------------------------------------------------------ analysis
    def is_reduction(self, a: Assign) -> bool:
        """A sum over the batch: a value for all samples computed from per-sample ones."""
        return not a.out.batched and any(x.batched for x in a.args)

    def _classify(self) -> None:
        after: dict[str, bool] = {}
        for a in self.assigns:
            dep = any(after[x.name] for x in a.args)
            if a.op.is_leaf():
                self.phase[a.out.name] = "B" if a.out.batched else "A"
            elif a.out.batched:
                if dep:
                    raise IRError(f"{a.out.name}: a per-sample value depends on a sum over the batch "
                                  "(batch statistics need a second pass, which is not supported)")
                self.phase[a.out.name] = "B"
            elif self.is_reduction(a):
                self.phase[a.out.name] = "B"
                dep = True
            else:
                self.phase[a.out.name] = "C" if dep else "A"
            after[a.out.name] = dep

    def _shared_sums(self, outputs: set[str]) -> dict[str, str]:
        """Batch reductions that are only ever added together accumulate into one accumulator.

        ``d_W = sum_b g x + sum_b g' x'`` (a weight used twice, or the tangent of
        a weight gradient) then costs one accumulator, not one per term plus an
        addition afterwards: less to zero, reduce and add in every chunk. Returns
        alias -> the value whose accumulator it shares (the add's output included).
        """
        group: dict[str, str] = {}
        for a in self.assigns:
            v = a.out
            if not v.shape or v.batched:
                continue
            is_sum = rule_for(a.op).is_sum
            if self.phase[v.name] == "B" and not a.op.is_leaf():
                group[v.name] = v.name
            elif (is_sum is not None and is_sum(a)
                    and all(x.name in group and x.name not in outputs and x.shape == v.shape
                            and len(self.consumers.get(x.name, [])) == 1 for x in a.args)):
                leader = group[a.args[0].name]
                for x in a.args[1:]:
                    old = group[x.name]
                    for k, g in group.items():
                        if g == old:
                            group[k] = leader
                group[v.name] = leader
        return {k: g for k, g in group.items() if k != g}

    def acc_views(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """``<name>_acc`` -> (first slot, shape): the views of the accumulator that phase B adds
        array-valued batch sums into (an alias adds into its leader's)."""
        return {f"{self.store[a.out.name].name}_acc": (self.store[a.out.name].acc_slot, a.out.shape)
                for a in self.assigns if a.out.name in self.store and self.store[a.out.name].kind == "acc"
                and a.out.shape and self.phase[a.out.name] == "B" and a.out.name not in self.alias}

    def chunk_slices(self, data_args: list[tuple[str, Assign | None]]) -> list[View]:
        """``x_c = x[r0:r1]``: the chunk's rows of each data argument the kind reads."""
        return [View(self.store[a.out.name].name, arg, Affine.of("r0"), Affine.of("r1")) for arg, a in data_args
                if a is not None and a.out.name in self.store]

    # ------------------------------------------------------------------ references
    def ref(self, v: Value, idx: tuple[str | Affine, ...], row: str | None) -> Ref | sp.Expr:
        """The element of ``v`` at per-sample index ``idx`` (row ``row`` if batched)."""
        st = self.store[v.name]
        if st.kind == "const":
            return st.expr
        if st.kind == "scalar":
            return Ref(st.name)
        lead = (row,) if v.batched else ()
        if not v.shape:
            return Ref(st.name, index(*lead))
        return Ref(st.name, index(*lead, *idx))

    def bind(self, expr: sp.Expr, args: tuple[Value, ...], idx_of: list[tuple[str, ...]],
             row: str | None) -> tuple[sp.Expr, tuple[tuple[sp.Symbol, Ref], ...]]:
        subs, binds = {}, []
        for s, x, idx in zip(arg_symbols(len(args)), args, idx_of):
            r = self.ref(x, idx, row)
            if isinstance(r, Ref):
                binds.append((s, r))
            else:
                subs[s] = r
        return (expr.xreplace(subs) if subs else expr), tuple(binds)

    # ------------------------------------------------------------------ op emission
    def target(self, a: Assign, idx: tuple[str | Affine, ...], row: str | None) -> tuple[Ref, str]:
        st = self.store[a.out.name]
        if st.kind == "acc" and self.phase_of_emit == "B":
            if not a.out.shape:
                return Ref("acc", index(st.acc_slot)), "+="
            return Ref(f"{st.name}_acc", index(*idx)), "+="
        r = self.ref(a.out, idx, row)
        assert isinstance(r, Ref)
        return r, "="

    def loops(self, shape: tuple[int, ...], names: tuple[str, ...], body: list[Stmt]) -> list[Stmt]:
        for n, var in reversed(list(zip(shape, names))):
            body = [Loop(var, Affine(), Affine.of(n), tuple(body))]
        return body

    def gemm(self, a: Assign) -> list[Stmt] | None:
        """The contraction as one BLAS call over the chunk (a tiled GPU GEMM in a staged CUDA
        pass), if it is a GEMM worth calling."""
        if self.cuda and (not self.staged or self.phase_of_emit != "B"):
            return None   # (a staged pass's host driver runs phase B only; phases A and C are device code)
        plan = self.gemm_plan(a, self.staged)
        if plan is None:
            return None
        first, t1, second, t2 = plan
        st = self.store[a.out.name]
        comment = f"{a.out.name} = einsum('{a.op.spec}', {a.args[0].name}, {a.args[1].name})"
        if self.staged:   # every term of a batch sum adds into its slots of total
            out = f"{st.name}_acc" if st.kind == "acc" else st.name
            if st.kind == "acc":
                self.gemm_sums.add(out)
            else:
                self.globals.setdefault(st.name, a.out)
            return [Call("gemm", (first, second, out, Literal(t1), Literal(t2), Literal(st.kind == "acc")),
                         frozenset({out}), comment)]
        helper = BLAS_HELPERS[(t1, t2)]   # symgrad.runtime: compiled once per machine
        if st.kind != "acc":
            alloc = self.alloc(a.out, "rows" if a.out.batched else None)
            return [replace(alloc, comment=comment), Call(helper, (first, second, st.name), frozenset({st.name}))]
        acc = f"{st.name}_acc"
        if a.out.name not in self.alias and a.out.name not in self.alias.values():
            # the only term of this batch sum in the chunk: BLAS writes it in place
            return [Call(helper, (first, second, acc), frozenset({acc}), comment)]
        term = self.name(f"{a.out.name}_term")   # one of several terms: computed, then added
        alloc = self.alloc(a.out, None, term)
        return [replace(alloc, comment=comment), Call(helper, (first, second, term), frozenset({term})),
                Call("add_into", (acc, term), frozenset({acc}))]

    def emit(self, a: Assign, row: str | None) -> list[Stmt]:
        """The statements of ``a`` (its op family's lowering rule, :mod:`codegen.ops`)."""
        return rule_for(a.op).emit(self, a, row)

    def gemm_plan(self, a: Assign, per_row: bool) -> tuple[str, bool, str, bool] | None:
        """(first, transpose it, second, transpose it) when ``a`` is a GEMM worth a BLAS call."""
        plan = rule_for(a.op).gemm_plan
        return plan(self, a, per_row) if plan is not None else None

    def index_vars(self, n: int) -> tuple[str, ...]:
        """Loop variables over a value's ``n`` per-sample axes: i, j, then i2, i3, ..."""
        return loop_vars(("i", "j"), "i", n)

    def reduction_vars(self, n: int) -> tuple[str, ...]:
        """Loop variables over an einsum's ``n`` summed axes: k, l, m, p, then k4, k5, ..."""
        return loop_vars(("k", "l", "m", "p"), "k", n)

    @property
    def rows_are_local(self) -> bool:
        """A fused GPU pass: each thread keeps its current row of a per-sample value in local
        arrays (the row index dropped); a staged pass keeps them in device memory."""
        return self.cuda and not self.staged

    # ------------------------------------------------------------------ storage
    def alloc(self, v: Value, rows: str | None, name: str = "") -> Alloc | None:
        """Allocation of ``v``'s array (under ``name`` if given)."""
        name = name or self.store[v.name].name
        if self.cuda:   # a thread's own array: one row of a per-sample value, or a parameter-only one
            if not v.shape:
                return None   # a per-row scalar is a plain local variable
            size = 1
            for d in v.shape:
                size *= d
            self.local_elements += size
            if self.local_elements > self.limits.local_max:
                raise IRError(f"backend 'cuda': {v.name!r} (shape {v.shape}) brings a thread's local arrays "
                              f"to {self.local_elements} elements (at most {self.limits.local_max}, CUDA's local "
                              "memory per thread). Only the values that cross a staged pass's kernels "
                              "live in device memory, and a pass is staged only for a network with a "
                              "GEMM-sized layer or more sums than shared memory holds")
            return Alloc(name, index(*v.shape), "int64" if v.kind == "index" else "float", "local")
        dims = ((rows,) if v.batched and rows else ()) + v.shape
        return Alloc(name, index(*dims), "int64" if v.kind == "index" else "float")

    def plan_storage(self) -> int:
        """Decide how each live value is held; returns the accumulator length."""
        slots = 0
        for a in self.assigns:
            v, op = a.out, a.op
            hook = rule_for(op).store
            chosen = hook(self, a) if hook is not None else None
            if chosen is not None:
                self.store[v.name] = chosen
            elif v.name in self.alias:
                self.store[v.name] = self.store[self.alias[v.name]]
            elif self.phase[v.name] == "B" and not v.batched:
                self.store[v.name] = Store("acc", v.name, acc_slot=slots)
                size = 1
                for d in v.shape:
                    size *= d
                slots += size
            elif not v.batched and not v.shape:
                self.store[v.name] = Store("scalar", v.name)
            else:
                self.store[v.name] = Store("array", v.name)
        return slots

    # ------------------------------------------------------------------ phases
    def unbatched_phase(self, phase: str) -> list[Stmt]:
        self.phase_of_emit = phase
        out: list[Stmt] = []
        for a in self.assigns:
            if self.phase[a.out.name] != phase or not rule_for(a.op).computes:
                continue
            st = self.store[a.out.name]
            if st.kind == "const" or (a.out.name in self.alias and phase == "C"):
                continue  # an alias's add happened in the shared accumulator
            g = self.gemm(a)
            if g is not None:
                out.extend(g)
                continue
            if st.kind == "array":
                line = self.alloc(a.out, None)
                out += [line] if line is not None else []
            out.extend(self.emit(a, None))
        return out

    def batched_phase(self, sink_rows: list[tuple[Sink, Value]]) -> list[Stmt | _RowStage]:
        self.phase_of_emit = "B"
        body: list[Stmt | _RowStage] = []
        group: list[tuple[Assign, list[Stmt]]] = []
        protected = {self.store[v.name].name for _, v in sink_rows}

        def flush(tail: list[Stmt]) -> None:
            if not group and not tail:
                return
            stmts = [s for _, ss in group for s in ss] + tail
            defined = [a.out for a, _ in group if self.store[a.out.name].kind == "array"]
            local_names = {self.store[v.name].name for v in defined
                           if all(id(c) in members for c in self.consumers.get(v.name, []))
                           and self.store[v.name].name not in protected}
            fused, scalars = fuse_row_body(stmts, "r", local_names, vector=not self.cuda)
            kept = [v for v in defined if self.store[v.name].name not in scalars]
            if self.staged:   # a row kernel: its own rows in thread-local arrays, the rest in device memory
                opaque = set().union(*(uses([x]) | defines(x) for x in stmts if not isinstance(x, (Compute, Loop))))
                own = [v for v in kept if self.store[v.name].name in local_names - opaque]
                for v in kept:
                    if v not in own:
                        self.globals.setdefault(self.store[v.name].name, v)
                fused = drop_row_index(fused, {self.store[v.name].name for v in own}, "r")
                self.local_elements = 0
                allocs = [ln for ln in (self.alloc(v, "rows") for v in own) if ln is not None]
                body.append(_RowStage(tuple(allocs), Loop("r", Affine.of(Builtin("row")), Affine.of("rows"),
                                                          tuple(fused), step=Affine.of(Builtin("rows_step")))))
                group.clear()
                members.clear()
                return
            if self.cuda:
                fused = drop_row_index(fused, {self.store[v.name].name for v in kept}, "r")
            for v in kept:
                line = self.alloc(v, "rows")
                body.extend([line] if line is not None else [])
            body.append(Loop("r", Affine(), Affine.of("rows"), tuple(fused)))
            group.clear()
            members.clear()

        members: set[int] = set()
        for a in self.assigns:
            if self.phase[a.out.name] != "B" or not rule_for(a.op).computes:
                continue
            if self.store[a.out.name].kind == "const":
                continue
            g = self.gemm(a)
            if g is not None:
                flush([])
                body.extend(g)
                continue
            group.append((a, self.emit(a, "r")))
            members.add(id(a))
        if self.cuda:   # per-sample outputs row by row, inside the row loop
            flush([s for sink, v in sink_rows for s in self.row_sink_loops(sink, v)])
            return body
        flush([])
        for sink, v in sink_rows:   # element loops: an array-to-slice assignment costs ~2 s to compile
            body.append(Loop("r", Affine(), Affine.of("rows"), tuple(self.row_sink_loops(sink, v))))
        return body

    def row_sink_loops(self, sink: Sink, v: Value) -> list[Stmt]:
        """Row r of a per-sample output, element by element: all of it, or, with ``size``,
        columns offset..offset+size of a (N, width) array (a Jacobian row block), broadcasting
        values that do not vary per sample."""
        idx = self.index_vars(len(v.shape))
        row = Affine.of("r0") + "r"
        s = sp.Symbol("a0", real=True)
        val = self.ref(v, idx, "r")
        binds = ((s, val),) if isinstance(val, Ref) else ()
        expr = s if binds else val
        if sink.size > 1 and not v.shape:   # a scalar (a constant 0, say) fills the whole column block
            target = Ref(sink.array, (row, Affine.of(sink.offset) + "q"))
            return [Loop("q", Affine(), Affine.of(sink.size),
                         (Compute(target, expr, binds, "=", f"{sink.key}: row r"),))]
        # a column block of a (N, width) array, elements in C order
        target = Ref(sink.array, (row, c_order(sink.offset, idx, v.shape)) if sink.size else (row, *index(*idx)))
        return self.loops(v.shape, idx, [Compute(target, expr, binds, "=", f"{sink.key}: row r")])

    def sink_stmt(self, sink: Sink, v: Value) -> Stmt:
        st = self.store[v.name]
        s = sp.Symbol("a0", real=True)
        if sink.kind == "return":
            expr, binds = ((st.expr, ()) if st.kind == "const" else
                           (s, ((s, Ref("total", index(st.acc_slot)) if st.kind == "acc" else Ref(st.name)),)))
            if self.cuda:
                return Compute(Ref("result", index(0)), expr, binds, "=", sink.key)
            return Return(expr, binds, sink.key)
        q = Affine.of(sink.offset) + "q"
        if st.kind == "acc" and v.shape:   # a batch sum: its slots of total, already in C order
            return Loop("q", Affine(), Affine.of(sink.size), (Compute(
                Ref(sink.array, (q,)), s, ((s, Ref("total", (Affine.of(st.acc_slot) + "q",))),)),), sink.key)
        # element by element, in C order (an array-to-slice assignment costs ~2 s to compile on the CPU)
        idx = self.index_vars(len(v.shape))
        ref = self.ref(v, idx, None) if st.kind != "const" else st.expr
        binds = ((s, ref),) if isinstance(ref, Ref) else ()
        if not v.shape:   # a scalar, broadcast over the sink's slots
            body = Compute(Ref(sink.array, (q,)), s if binds else ref, binds, "=", "")
            return Loop("q", Affine(), Affine.of(max(sink.size, 1)), (body,), sink.key)
        body = Compute(Ref(sink.array, (c_order(sink.offset, idx, v.shape),)), s if binds else ref, binds, "=", "")
        return replace(self.loops(v.shape, idx, [body])[0], comment=sink.key)


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


def lower(program: Program, sinks: tuple[Sink, ...], *, name: str, float_type: str,
          data: tuple[tuple[str, str], ...], flat_leaves: dict[str, str],
          param_layout: dict[str, tuple[int, tuple[int, ...]]], doc: str = "",
          target: str | Target = "cpu") -> Lowered:
    """Lower ``program`` to its kernels.

    ``data``: (label, role) of the per-sample arguments the kernel takes, in order.
    ``flat_leaves``: role -> flat argument holding all leaves of that role (param -> theta,
    tangent -> v), laid out by ``param_layout`` (label -> (offset, shape)).
    ``target``: "cpu" (``<name>_chunks`` over chunks c0..c1 in threads) or "cuda" (or a
    configured :class:`~codegen.targets.Target`)
    (``<name>_chunks`` is one GPU thread per chunk of ``chunk`` rows, or, staged, the host
    code that launches the row kernels ``Lowered.stages`` and the tiled GEMMs).
    """
    tgt = target_of(target)
    timings: dict[str, float] = {}

    def timed(name: str, step: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = step()
        timings[name] = time.perf_counter() - t0
        return out
    L = timed("analysis", lambda: Lowering(program, sinks, float_type, frozenset(flat_leaves), tgt))
    n_acc, inputs, data_args, head = timed("storage", lambda: _storage(L, data, flat_leaves, param_layout))
    block_sums, phase_a, sink_rows, chunk_body = timed("emission", lambda: _emission(L, n_acc))
    low = timed("finishing", lambda: _finishing(L, name, doc, flat_leaves, n_acc, inputs, data_args, head,
                                                block_sums, phase_a, sink_rows, chunk_body))
    return replace(low, timings=timings)


#: the passes of ``lower``, in order: each is timed in ``Lowered.timings`` (and ``model.stats``)
PASSES = ("analysis", "storage", "emission", "finishing")


def _storage(L: Lowering, data: tuple[tuple[str, str], ...], flat_leaves: dict[str, str],
             param_layout: dict[str, tuple[int, tuple[int, ...]]]
             ) -> tuple[int, list[str], list[tuple[str, Assign | None]], list[Stmt]]:
    """How each value is held (accumulator slots), the kernel arguments, and the head that binds
    them (1/N, the parameter views)."""
    float_type, cuda = L.ft, L.cuda
    n_acc = L.plan_storage()
    leaves = {a.op.label: a for a in L.assigns if a.op.is_leaf()}
    inputs: list[str] = list(flat_leaves.values())
    data_args = []
    for label, role in data:
        a = leaves.get(label)
        arg = a.out.name if a is not None else L.name(label.replace(".", "_"))
        data_args.append((arg, a))
        inputs.append(arg)
    head: list[Stmt] = []
    if data_args:
        head.append(Let("n_samples", Dim(data_args[0][0], 0)))
    if any(a.op.is_leaf() and a.op.role == "batch_scale" for a in L.assigns):
        head.append(Let("inv_n", Reciprocal("n_samples"), "1/N: the objective is a mean"))
    for role, arr in flat_leaves.items():
        for a in L.assigns:
            if a.op.is_leaf() and a.op.role == role:
                off, shape = param_layout[a.op.label]
                comment = f"{role} {a.op.label!r}"
                head.append(View(a.out.name, arr, Affine.of(off), None, None, comment) if not shape
                            else _view(a.out.name, arr, off, shape, comment))
    return n_acc, inputs, data_args, head


def _emission(L: Lowering, n_acc: int) -> tuple[bool, list[Stmt], list[tuple[Sink, Value]], list]:
    """Phases A and B as statements: what the parameters alone give, then the per-sample work
    in row loops (fused and scalarized there, :mod:`codegen.fusion`) and product calls. The
    target decides here whether a CUDA pass is staged."""
    float_type, cuda, program, sinks = L.ft, L.cuda, L.program, L.sinks
    itemsize = 8 if float_type == "float64" else 4
    # CUDA: a wide layer, or more sums than a block's shared memory holds, makes a staged pass
    L.staged = cuda and (n_acc * itemsize > L.limits.shared_acc_bytes or any(
        L.phase[a.out.name] == "B" and L.gemm_plan(a, True) is not None for a in L.assigns))
    block_sums = cuda and not L.staged and 0 < n_acc * itemsize <= L.limits.shared_acc_bytes
    phase_a = L.unbatched_phase("A")
    sink_rows = [(s, program.output(s.key)) for s in sinks if s.kind == "rows"]
    chunk_body = L.batched_phase(sink_rows)
    return block_sums, phase_a, sink_rows, chunk_body


def _finishing(L: Lowering, name: str, doc: str, flat_leaves: dict[str, str], n_acc: int, inputs: list[str],
               data_args: list[tuple[str, Assign | None]], head: list[Stmt], block_sums: bool,
               phase_a: list[Stmt], sink_rows: list[tuple[Sink, Value]], chunk_body: list) -> Lowered:
    """The target's kernels: the chunk kernel (CPU threads, one GPU thread per chunk, or a
    staged pass's host driver and row kernels), the reduction of the sums, phase C and the
    outputs in the finish kernel."""
    float_type, cuda, program, sinks = L.ft, L.cuda, L.program, L.sinks
    out_arrays = list(dict.fromkeys(s.array for s in sinks if s.kind != "return"))
    chunks = None
    stage_kernels: list[Kernel] = []
    reduction: list[Stmt] = []
    views: list[Stmt] = []
    if chunk_body:
        if not data_args:
            raise IRError("per-sample values but no data arguments")
    # staged: gradient blocks that are batch sums as they stand are copied on the device by the
    # host driver (cuMemcpy), not element by element in the single-thread finish
    copied = [s for s in sinks if L.staged and s.kind == "flat" and program.output(s.key).shape
              and L.store[program.output(s.key).name].kind == "acc"]
    if chunk_body and L.staged:
        flat_out = [a for a in out_arrays if a not in [s.array for s, _ in sink_rows]]
        chunks, stage_kernels = _staged_pass(L, name, chunk_body, head, phase_a, data_args,
                                             list(flat_leaves.values()), sink_rows, n_acc, float_type,
                                             flat_out, [(s, L.store[program.output(s.key).name].acc_slot)
                                                        for s in copied])
    elif chunk_body:
        pre: list[Stmt] = [Let("r0", Mul("c", "chunk")), Let("r1", Min(Affine.of("r0") + "chunk", Affine.of("n_samples"))),
                           Let("rows", Affine.of("r1") + Affine.of("r0") * -1), *L.chunk_slices(data_args)]
        acc_views = L.acc_views() if n_acc else {}
        if n_acc and not block_sums:   # the CPU (a GPU pass with more sums than a block holds is staged)
            pre.append(View("acc", "partials", Affine.of("c"), None, None,
                            "this chunk's private share of every sum over the batch"))
            pre.append(Fill("acc"))
        pre += [_view(v, "acc", slot, shape) for v, (slot, shape) in acc_views.items()]
        rows_out = list(dict.fromkeys(s.array for s, _ in sink_rows))
        if block_sums:   # no early return: every thread must reach the barriers
            opening, closing = _shared_block_sums(n_acc, float_type, "partials")
            body = head + needed(phase_a, pre, chunk_body) + [
                *opening, Let("c", Affine.of(Builtin("row")), "this thread's chunk of rows (none past the batch's end)"),
                *pre, *chunk_body, *closing]
            params = inputs + rows_out + ["partials", "chunk"]
            chunk_doc = (f"Rows c*chunk..(c+1)*chunk of {name} in GPU thread c, all its per-sample work "
                         "fused; the threads of a block add their sums atomically in shared memory, and "
                         "the block writes them to partials[block].")
        elif cuda:
            body = head + needed(phase_a, pre, chunk_body) + [
                Let("c", Affine.of(Builtin("row")), "this thread's chunk of rows"),
                If(sp.Symbol("c") * sp.Symbol("chunk") >= sp.Symbol("n_samples"), (), (Return(),)),
                *pre, *chunk_body]
            params = inputs + rows_out + ["chunk"]
            chunk_doc = (f"Rows c*chunk..(c+1)*chunk of {name} in GPU thread c, all its per-sample work "
                         "fused (no sums over the batch: each thread writes its own rows).")
        else:
            body = head + phase_a + [
                Let("chunk", CallExpr("chunk_rows", ("n_samples", n_acc)),
                    "rows per chunk: depends on N and the accumulator size, never on threads"),
                Loop("c", Affine.of("c0"), Affine.of("c1"), tuple(pre + chunk_body))]
            params = inputs + rows_out + ["partials", "c0", "c1"]
            chunk_doc = (f"Chunks c0..c1 of {name}, all its per-sample work fused; chunk c writes its "
                   "sums to partials[c] and nothing else, so chunks may run in parallel.")
        chunks = Kernel(f"{name}_chunks", tuple(params), tuple(body), chunk_doc,
                        frozenset({"acc", *acc_views}) if block_sums else frozenset())
    if chunk_body and n_acc:
        if not cuda:   # on the GPU the partial sums are reduced by a kernel of their own
            reduction.append(Let("total", CallExpr("sum_rows", ("partials",)),
                                 "chunk sums added in chunk order: reproducible for any thread count"))
        viewed = set()
        for a in L.assigns:
            st = L.store.get(a.out.name)
            if st is not None and st.kind == "acc" and a.out.shape:
                if st.name not in viewed:
                    viewed.add(st.name)
                    views.append(_view(st.name, "total", st.acc_slot, a.out.shape))
            elif st is not None and st.kind == "acc":
                views.append(View(st.name, "total", Affine.of(st.acc_slot)))
                L.store[a.out.name] = Store("scalar", st.name)
    phase_c = L.unbatched_phase("C")
    outs = [s for s in sinks if s.kind in ("flat", "return")]
    tail = phase_c + [L.sink_stmt(s, program.output(s.key)) for s in outs
                      if s.kind == "flat" and s not in copied] + \
        [L.sink_stmt(s, program.output(s.key)) for s in outs if s.kind == "return"]
    # only the views and phase-A values the finish reads (a gradient sum goes to grad as a flat slice)
    defs = head + views + (phase_a if chunk_body else [])
    keep = {id(st) for st in needed(defs, tail, [] if chunk_body else phase_a)}
    finish = [st for st in head if id(st) in keep] + reduction + [st for st in views if id(st) in keep] + (
        [st for st in phase_a if id(st) in keep] if chunk_body else phase_a) + tail
    params = inputs + [a for a in out_arrays if a not in [s.array for s, _ in sink_rows]]
    if chunk_body and n_acc:
        params.append("total" if cuda else "partials")
    if cuda and any(s.kind == "return" for s in sinks):
        params.append("result")
    fin = Kernel(name, tuple(dict.fromkeys(params)), tuple(finish), doc)
    return Lowered(chunks, fin, n_acc, block_sums and chunks is not None, tuple(stage_kernels))


def _staged_pass(L: Lowering, name: str, stages: list[Stmt | _RowStage], head: list[Stmt],
                 phase_a: list[Stmt], data_args: list[tuple[str, Assign | None]], flat: list[str],
                 sink_rows: list[tuple[Sink, Value]], n_acc: int, ft: str, flat_out: list[str],
                 copies: list[tuple[Sink, int]]) -> tuple[Kernel, list[Kernel]]:
    """A staged CUDA pass: one device kernel per row loop, and the host driver that runs them,
    with the tiled GEMMs between them, over chunks of the batch.

    Intermediates that cross a kernel boundary live in device memory, one row per sample. A row
    kernel's sums go to block sums (in shared memory when they fit, else in the block's row of
    partials), which ``add_partials`` adds into ``total`` in block order; a GEMM over the batch
    adds its product into ``total`` itself. ``total`` is zeroed once. The blocks, chunks, GEMM
    terms and the k order inside a GEMM are fixed by the batch size; only the order of the
    atomic adds inside a block varies from run to run.
    """
    itemsize = 8 if ft == "float64" else 4
    views = L.acc_views()
    slices = L.chunk_slices(data_args)
    types = dict.fromkeys(flat, "f1") | {"r0": "i", "r1": "i"}
    for arg, a in data_args:
        types[arg] = "i1" if a is None or a.out.kind == "index" else f"f{1 + len(a.out.shape)}"
    for g, v in L.globals.items():
        types[g] = ("i" if v.kind == "index" else "f") + str(1 + len(v.shape))
    rows_out = list(dict.fromkeys(s.array for s, _ in sink_rows))
    for s, v in sink_rows:
        types[s.array] = "f2" if s.size else f"f{1 + len(v.shape)}"
    from_driver = flat + [arg for arg, _ in data_args] + list(L.globals) + rows_out
    kernels: list[Kernel] = []
    allocs: list[Stmt] = []
    launches: list[Stmt] = []
    part_bytes = 0
    for st in stages:
        if not isinstance(st, _RowStage):
            launches.append(st)
            continue
        kname = f"{name}_rows{len(kernels) + 1}"
        part, slots = L.name(f"partials_{len(kernels) + 1}"), L.name(f"slots_{len(kernels) + 1}")
        sums: list[tuple[int, int, str]] = []   # (first slot, slots, view name or "") this kernel adds to
        for kind, r, _ in walk_refs([st.loop]):
            if kind == "write" and r.name == "acc":
                sums.append((r.index[0].const, 1, ""))
            elif kind == "write" and r.name in views:
                sums.append((views[r.name][0], math.prod(views[r.name][1]), r.name))
        sums = sorted(set(sums))
        local, view_lines, n_sums = {}, [], 0
        for g, size, v in sums:
            if v:
                view_lines.append(_view(v, "acc", n_sums, views[v][1]))
            else:
                local[Affine.of(g)] = Affine.of(n_sums)
            n_sums += size
        loop = reindex([st.loop], {"acc"}, lambda index: (local.get(index[0], index[0]),))[0]
        core: list[Stmt] = [*st.allocs, *view_lines, loop]
        pre = head + phase_a + [Let("rows", Affine.of("r1") + Affine.of("r0") * -1)] + slices
        fits = n_sums * itemsize <= L.limits.shared_acc_bytes
        if n_sums and fits:
            opening, closing = _shared_block_sums(n_sums, ft, part)
            core = [*opening, *core, *closing]
        elif n_sums:
            core = [View("acc", part, Affine.of(Builtin("block")), None, None, "this block's sums (too many for shared memory): "
                         "its row of partials, zeroed by the driver"), *core]
        body = needed(pre, core) + core
        used = uses(body)
        params = [p for p in from_driver + ([part] if n_sums else []) if p in used] + ["r0", "r1"]
        types[part] = "f2"
        what = (f"its block sums to {part}[block] ({'shared memory' if fits else 'device memory'}, "
                "added atomically)") if n_sums else "no sums"
        kernels.append(Kernel(kname, tuple(params), tuple(body),
                              f"Row kernel {len(kernels) + 1} of {name}: rows r0..r1 of the batch, one GPU "
                              f"thread per sample (grid-stride), the per-sample work fused; {what}.",
                              frozenset({"acc", *(v for _, _, v in sums if v)}) if n_sums else frozenset(),
                              arg_types=tuple(types[p] for p in params)))
        if n_sums:
            allocs += [Alloc(part, (CallExpr("blocks_for", ("chunk",)), Affine.of(n_sums)), space="device"),
                       Let(slots, CallExpr("slot_index", (Literal(tuple((g, k) for g, k, _ in sums)),)),
                            "where its block sums go in total")]
            part_bytes += -(-n_sums * itemsize // THREADS_PER_BLOCK)   # per row: a row per block
        blocks = Window(part, Affine(), Affine.of("blocks"))
        launches += ([Call("zero", (blocks,), frozenset({part}))] if n_sums and not fits else []) + [
            Launch(kname, ("blocks", "THREADS_PER_BLOCK"), tuple(params))] + (
            [Call("add_partials", (blocks, "total", slots), frozenset({"total"}))] if n_sums else [])
    row_bytes = part_bytes
    bufs: list[Stmt] = []
    buf = {g: L.name(f"{g}_buf") for g in L.globals}
    for g, v in L.globals.items():
        row_bytes += (8 if v.kind == "index" else itemsize) * math.prod(v.shape)
        bufs.append(Alloc(buf[g], index("chunk", *v.shape), "int64" if v.kind == "index" else "float", "device"))
    used = uses(launches)
    rows = Affine.of("rows")
    loop = Loop("r0", Affine(), Affine.of("n_samples"), tuple(
        [Let("r1", Min(Affine.of("r0") + "chunk", Affine.of("n_samples"))),
         Let("rows", Affine.of("r1") + Affine.of("r0") * -1), Let("blocks", CallExpr("blocks_for", ("rows",)))]
        + [v for v in slices if v.name in used]
        + [View(g, buf[g], Affine(), rows) for g in L.globals] + launches),
        "chunks of the batch, in order", step=Affine.of("chunk"))
    sums_of_gemms = [_view(v, "total", *views[v]) for v in sorted(L.gemm_sums)]
    setup: list[Stmt] = [Let("chunk", CallExpr("stage_rows", ("n_samples", row_bytes)),
                             "rows per chunk: what the device-memory budget holds (depends on N only)"),
                         *bufs, *allocs] + ([Call("zero", ("total",), frozenset({"total"}))] if n_acc else []) + sums_of_gemms
    copy = [Call("copy_to_device", (Window(s.array, Affine.of(s.offset), Affine.of(s.offset + s.size)),
                                    Window("total", Affine.of(slot), Affine.of(slot + s.size))),
                 frozenset({s.array}), s.key, method=True) for s, slot in copies]
    body = needed(head, setup + [loop]) + setup + [loop] + copy
    params = flat + [arg for arg, _ in data_args] + rows_out + flat_out + (["total"] if n_acc else [])
    driver = Kernel(f"{name}_chunks", tuple(params), tuple(body),
                    f"Host side of {name} on the GPU: over chunks of the batch, the row kernels (one thread "
                    "per sample) and the tiled GEMMs between them, in order; sums over the batch end in "
                    "total, and those that are outputs as they stand are copied on the device.", host=True)
    return driver, kernels


def _shared_block_sums(n: int, ft: str, partials: str) -> tuple[list[Stmt], list[Stmt]]:
    """A GPU block's ``n`` sums in shared memory: the opening (allocate, zero together, barrier)
    and the closing (barrier, then the block's row of ``partials``). No thread may return
    between them: every thread must reach the barriers."""
    q, a0 = Affine.of("q"), sp.Symbol("a0", real=True)

    def each(body: Compute) -> Loop:   # the block's threads share the slots out
        return Loop("q", Affine.of(Builtin("thread")), Affine.of(n), (body,), step=Affine.of(Builtin("block_dim")))
    return ([Alloc("acc", index(n), space="shared", comment="the block's sums over its threads' rows, in shared memory"),
             each(Compute(Ref("acc", (q,)), sp.S.Zero)), Barrier()],
            [Barrier("the block's sums: its row of partials"),
             each(Compute(Ref(partials, (Affine.of(Builtin("block")), q)), a0, ((a0, Ref("acc", (q,))),)))])


def _view(name: str, arr: str, offset: int, shape: tuple[int, ...], comment: str = "") -> View:
    """``name = arr[offset:offset+size]``, reshaped to ``shape``."""
    return View(name, arr, Affine.of(offset), Affine.of(offset + math.prod(shape)), shape, comment)


def loop_vars(first: tuple[str, ...], stem: str, n: int) -> tuple[str, ...]:
    """``n`` loop variables: the ``first`` ones, then ``stem`` numbered by position (any rank)."""
    return tuple(first[k] if k < len(first) else f"{stem}{k}" for k in range(n))


def c_order(offset: int, idx: tuple[str, ...], shape: tuple[int, ...]) -> Affine:
    """The flat position ``offset + sum(idx[k] * stride[k])`` of an element, C order."""
    pos, stride = Affine.of(offset), 1
    terms = []
    for var, d in reversed(list(zip(idx, shape))):
        terms.append(Affine(((var, stride),)))
        stride *= d
    for t in terms[::-1]:
        pos = pos + t
    return pos
