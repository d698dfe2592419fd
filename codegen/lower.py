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
from .kernel_ir import Compute, Kernel, Line, Loop, Ref, Stmt, walk_refs
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

    allocs: tuple[Line, ...]
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

    def chunk_slices(self, data_args: list[tuple[str, Assign | None]]) -> list[Line]:
        """``x_c = x[r0:r1]``: the chunk's rows of each data argument the kind reads."""
        return [Line(f"{self.store[a.out.name].name} = {arg}[r0:r1]") for arg, a in data_args
                if a is not None and a.out.name in self.store]

    # ------------------------------------------------------------------ references
    def ref(self, v: Value, idx: tuple[str, ...], row: str | None) -> Ref | sp.Expr:
        """The element of ``v`` at per-sample index ``idx`` (row ``row`` if batched)."""
        st = self.store[v.name]
        if st.kind == "const":
            return st.expr
        if st.kind == "scalar":
            return Ref(st.name)
        lead = (row,) if v.batched else ()
        if not v.shape:
            return Ref(st.name, lead)
        return Ref(st.name, lead + idx)

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
    def target(self, a: Assign, idx: tuple[str, ...], row: str | None) -> tuple[Ref, str]:
        st = self.store[a.out.name]
        if st.kind == "acc" and self.phase_of_emit == "B":
            if not a.out.shape:
                return Ref("acc", (str(st.acc_slot),)), "+="
            return Ref(f"{st.name}_acc", idx), "+="
        r = self.ref(a.out, idx, row)
        assert isinstance(r, Ref)
        return r, "="

    def loops(self, shape: tuple[int, ...], names: tuple[str, ...], body: list[Stmt]) -> list[Stmt]:
        for n, var in reversed(list(zip(shape, names))):
            body = [Loop(var, "0", str(n), tuple(body))]
        return body

    def gemm(self, a: Assign) -> Line | None:
        """The contraction as one BLAS call over the chunk (a tiled GPU GEMM in a staged CUDA
        pass), if it is a GEMM worth calling."""
        if self.cuda and (not self.staged or self.phase_of_emit != "B"):
            return None   # (a staged pass's host driver runs phase B only; phases A and C are device code)
        plan = self.gemm_plan(a, self.staged)
        if plan is None:
            return None
        first, t1, second, t2 = plan
        st = self.store[a.out.name]
        reads = frozenset({first, second})
        comment = f"{a.out.name} = einsum('{a.op.spec}', {a.args[0].name}, {a.args[1].name})"
        if self.staged:   # every term of a batch sum adds into its slots of total
            out = f"{st.name}_acc" if st.kind == "acc" else st.name
            if st.kind == "acc":
                self.gemm_sums.add(out)
            else:
                self.globals.setdefault(st.name, a.out)
            return Line(f"gemm({first}, {second}, {out}, {t1}, {t2}, {st.kind == 'acc'})", comment, reads,
                        frozenset({out}))
        helper = BLAS_HELPERS[(t1, t2)]   # symgrad.runtime: compiled once per machine
        if st.kind != "acc":
            alloc = self.alloc(a.out, "rows" if a.out.batched else None)
            return Line(f"{alloc.text}\n{helper}({first}, {second}, {st.name})", comment, reads,
                        frozenset({st.name}))
        acc = f"{st.name}_acc"
        if a.out.name not in self.alias and a.out.name not in self.alias.values():
            # the only term of this batch sum in the chunk: BLAS writes it in place
            return Line(f"{helper}({first}, {second}, {acc})", comment, reads, frozenset({acc}))
        term = self.name(f"{a.out.name}_term")   # one of several terms: computed, then added
        alloc = self.alloc(a.out, None, term)
        return Line(f"{alloc.text}\n{helper}({first}, {second}, {term})\nadd_into({acc}, {term})", comment,
                    reads, frozenset({acc}))

    def emit(self, a: Assign, row: str | None) -> list[Stmt]:
        """The statements of ``a`` (its op family's lowering rule, :mod:`codegen.ops`)."""
        return rule_for(a.op).emit(self, a, row)

    def gemm_plan(self, a: Assign, per_row: bool) -> tuple[str, bool, str, bool] | None:
        """(first, transpose it, second, transpose it) when ``a`` is a GEMM worth a BLAS call."""
        plan = rule_for(a.op).gemm_plan
        return plan(self, a, per_row) if plan is not None else None

    def index_vars(self, n: int) -> tuple[str, ...]:
        """Loop variables over a value's ``n`` per-sample axes."""
        return self._vars(("i", "j"), n, "axes")

    def reduction_vars(self, n: int) -> tuple[str, ...]:
        """Loop variables over an einsum's ``n`` summed axes."""
        return self._vars(("k", "l", "m", "p"), n, "summed axes")

    @staticmethod
    def _vars(names: tuple[str, ...], n: int, what: str) -> tuple[str, ...]:
        if n > len(names):
            raise IRError(f"a value with {n} {what}: the lowering supports at most {len(names)}")
        return names[:n]

    @property
    def rows_are_local(self) -> bool:
        """A fused GPU pass: each thread keeps its current row of a per-sample value in local
        arrays (the row index dropped); a staged pass keeps them in device memory."""
        return self.cuda and not self.staged

    # ------------------------------------------------------------------ storage
    def alloc(self, v: Value, rows: str | None, name: str = "") -> Line | None:
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
            shape = str(v.shape[0]) if len(v.shape) == 1 else str(tuple(v.shape))
            dt = "int64" if v.kind == "index" else self.ft
            return Line(f"{name} = cuda.local.array({shape}, {dt})", "", frozenset(), frozenset({name}))
        dims = ((rows,) if v.batched else ()) + tuple(str(d) for d in v.shape)
        shape = dims[0] if len(dims) == 1 else "(" + ", ".join(dims) + ")"
        dt = "np.int64" if v.kind == "index" else self.dtype
        return Line(f"{name} = np.empty({shape}, dtype={dt})", "", frozenset(), frozenset({name}))

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
                out.append(g)
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
                in_lines = set().union(*(x.reads | x.writes for x in stmts if isinstance(x, Line)))
                own = [v for v in kept if self.store[v.name].name in local_names - in_lines]
                for v in kept:
                    if v not in own:
                        self.globals.setdefault(self.store[v.name].name, v)
                fused = drop_row_index(fused, {self.store[v.name].name for v in own}, "r")
                self.local_elements = 0
                allocs = [ln for ln in (self.alloc(v, "rows") for v in own) if ln is not None]
                body.append(_RowStage(tuple(allocs), Loop("r", "cuda.grid(1)", "rows", tuple(fused),
                                                          step="cuda.gridsize(1)")))
                group.clear()
                members.clear()
                return
            if self.cuda:
                fused = drop_row_index(fused, {self.store[v.name].name for v in kept}, "r")
            for v in kept:
                line = self.alloc(v, "rows")
                body.extend([line] if line is not None else [])
            body.append(Loop("r", "0", "rows", tuple(fused)))
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
                body.append(g)
                continue
            group.append((a, self.emit(a, "r")))
            members.add(id(a))
        if self.cuda:   # per-sample outputs row by row, inside the row loop
            flush([s for sink, v in sink_rows for s in self.row_sink_loops(sink, v)])
            return body
        flush([])
        for sink, v in sink_rows:   # element loops: an array-to-slice assignment costs ~2 s to compile
            body.append(Loop("r", "0", "rows", tuple(self.row_sink_loops(sink, v))))
        return body

    def row_sink_loops(self, sink: Sink, v: Value) -> list[Stmt]:
        """Row r of a per-sample output, element by element: all of it, or, with ``size``,
        columns offset..offset+size of a (N, width) array (a Jacobian row block), broadcasting
        values that do not vary per sample."""
        idx = ("i", "j", "k", "l")[:len(v.shape)]
        col = ""
        if sink.size:   # a column block of a (N, width) array, elements in C order
            flat, stride = [], 1
            for var, d in reversed(list(zip(idx, v.shape))):
                flat.append(f"{var}*{stride}" if stride != 1 else var)
                stride *= d
            col = " + ".join([str(sink.offset)] + flat[::-1])
        s = sp.Symbol("a0", real=True)
        val = self.ref(v, idx, "r")
        binds = ((s, val),) if isinstance(val, Ref) else ()
        expr = s if binds else val
        if sink.size > 1 and not v.shape:   # a scalar (a constant 0, say) fills the whole column block
            target = Ref(sink.array, ("r0 + r", f"{sink.offset} + q"))
            return [Loop("q", "0", str(sink.size), (Compute(target, expr, binds, "=", f"{sink.key}: row r"),))]
        target = Ref(sink.array, ("r0 + r",) + ((col,) if sink.size else idx))
        return self.loops(v.shape, idx, [Compute(target, expr, binds, "=", f"{sink.key}: row r")])

    def sink_stmt(self, sink: Sink, v: Value) -> Stmt:
        st = self.store[v.name]
        if st.kind == "const":
            from .printer import NumbaPrinter
            val = NumbaPrinter(self.ft).doprint_expr(st.expr)
        elif st.kind == "acc" and not v.shape:
            val = f"total[{st.acc_slot}]"
        else:
            val = st.name
        if sink.kind == "return":
            return Line(f"result[0] = {val}" if self.cuda else f"return {val}", sink.key)
        s = sp.Symbol("a0", real=True)
        if st.kind == "acc" and v.shape:   # a batch sum: its slots of total, already in C order
            return Loop("q", "0", str(sink.size), (Compute(
                Ref(sink.array, (f"{sink.offset} + q",)), s, ((s, Ref("total", (f"{st.acc_slot} + q",))),)),),
                sink.key)
        # element by element, in C order (an array-to-slice assignment costs ~2 s to compile on the CPU)
        idx = ("i", "j", "k", "l")[:len(v.shape)]
        flat, stride = [], 1
        for var, d in reversed(list(zip(idx, v.shape))):
            flat.append(f"{var}*{stride}" if stride != 1 else var)
            stride *= d
        pos = " + ".join([str(sink.offset)] + flat[::-1])
        ref = self.ref(v, idx, None) if st.kind != "const" else st.expr
        binds = ((s, ref),) if isinstance(ref, Ref) else ()
        if not v.shape:   # a scalar, broadcast over the sink's slots
            body = Compute(Ref(sink.array, (f"{sink.offset} + q",)), s if binds else ref, binds, "=", "")
            return Loop("q", "0", str(max(sink.size, 1)), (body,), sink.key)
        body = Compute(Ref(sink.array, (pos,)), s if binds else ref, binds, "=", "")
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
        head.append(Line(f"n_samples = {data_args[0][0]}.shape[0]"))
    if any(a.op.is_leaf() and a.op.role == "batch_scale" for a in L.assigns):
        cast = float_type if cuda else f"np.{float_type}"
        head.append(Line(f"inv_n = {cast}(1.0 / n_samples)", "1/N: the objective is a mean"))
    for role, arr in flat_leaves.items():
        for a in L.assigns:
            if a.op.is_leaf() and a.op.role == role:
                off, shape = param_layout[a.op.label]
                view = f"{arr}[{off}]" if not shape else _view(arr, off, shape)
                head.append(Line(f"{a.out.name} = {view}", f"{role} {a.op.label!r}"))
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
        pre: list[Stmt] = [Line("r0 = c * chunk"), Line("r1 = min(r0 + chunk, n_samples)"),
                           Line("rows = r1 - r0"), *L.chunk_slices(data_args)]
        acc_views = L.acc_views() if n_acc else {}
        if n_acc and not block_sums:   # the CPU (a GPU pass with more sums than a block holds is staged)
            pre.append(Line("acc = partials[c]", "this chunk's private share of every sum over the batch"))
            pre.append(Line("acc[:] = 0"))
        pre += [Line(f"{v} = {_view('acc', slot, shape)}") for v, (slot, shape) in acc_views.items()]
        rows_out = list(dict.fromkeys(s.array for s, _ in sink_rows))
        if block_sums:   # no early return: every thread must reach the barriers
            opening, closing = _shared_block_sums(n_acc, float_type, "partials")
            body = head + _needed(phase_a, pre, chunk_body) + [
                opening, Line("c = cuda.grid(1)", "this thread's chunk of rows (none past the batch's end)"),
                *pre, *chunk_body, closing]
            params = inputs + rows_out + ["partials", "chunk"]
            chunk_doc = (f"Rows c*chunk..(c+1)*chunk of {name} in GPU thread c, all its per-sample work "
                         "fused; the threads of a block add their sums atomically in shared memory, and "
                         "the block writes them to partials[block].")
        elif cuda:
            body = head + _needed(phase_a, pre, chunk_body) + [
                Line("c = cuda.grid(1)", "this thread's chunk of rows"),
                Line("if c * chunk >= n_samples:\n    return"), *pre, *chunk_body]
            params = inputs + rows_out + ["chunk"]
            chunk_doc = (f"Rows c*chunk..(c+1)*chunk of {name} in GPU thread c, all its per-sample work "
                         "fused (no sums over the batch: each thread writes its own rows).")
        else:
            body = head + phase_a + [
                Line(f"chunk = chunk_rows(n_samples, {n_acc})",
                     "rows per chunk: depends on N and the accumulator size, never on threads"),
                Loop("c", "c0", "c1", tuple(pre + chunk_body))]
            params = inputs + rows_out + ["partials", "c0", "c1"]
            chunk_doc = (f"Chunks c0..c1 of {name}, all its per-sample work fused; chunk c writes its "
                   "sums to partials[c] and nothing else, so chunks may run in parallel.")
        chunks = Kernel(f"{name}_chunks", tuple(params), tuple(body), chunk_doc,
                        frozenset({"acc", *acc_views}) if block_sums else frozenset())
    if chunk_body and n_acc:
        if not cuda:   # on the GPU the partial sums are reduced by a kernel of their own
            reduction.append(Line("total = sum_rows(partials)",
                                  "chunk sums added in chunk order: reproducible for any thread count"))
        viewed = set()
        for a in L.assigns:
            st = L.store.get(a.out.name)
            if st is not None and st.kind == "acc" and a.out.shape:
                if st.name not in viewed:
                    viewed.add(st.name)
                    views.append(Line(f"{st.name} = {_view('total', st.acc_slot, a.out.shape)}"))
            elif st is not None and st.kind == "acc":
                views.append(Line(f"{st.name} = total[{st.acc_slot}]"))
                L.store[a.out.name] = Store("scalar", st.name)
    phase_c = L.unbatched_phase("C")
    outs = [s for s in sinks if s.kind in ("flat", "return")]
    tail = phase_c + [L.sink_stmt(s, program.output(s.key)) for s in outs
                      if s.kind == "flat" and s not in copied] + \
        [L.sink_stmt(s, program.output(s.key)) for s in outs if s.kind == "return"]
    # only the views and phase-A values the finish reads (a gradient sum goes to grad as a flat slice)
    defs = head + views + (phase_a if chunk_body else [])
    keep = {id(st) for st in _needed(defs, tail, [] if chunk_body else phase_a)}
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
        if isinstance(st, Line):
            launches.append(st)
            continue
        kname = f"{name}_rows{len(kernels) + 1}"
        part, slots = L.name(f"partials_{len(kernels) + 1}"), L.name(f"slots_{len(kernels) + 1}")
        sums: list[tuple[int, int, str]] = []   # (first slot, slots, view name or "") this kernel adds to
        for kind, r, _ in walk_refs([st.loop]):
            if kind == "write" and r.name == "acc":
                sums.append((int(r.index[0]), 1, ""))
            elif kind == "write" and r.name in views:
                sums.append((views[r.name][0], math.prod(views[r.name][1]), r.name))
        sums = sorted(set(sums))
        local, view_lines, n_sums = {}, [], 0
        for g, size, v in sums:
            if v:
                view_lines.append(Line(f"{v} = {_view('acc', n_sums, views[v][1])}"))
            else:
                local[str(g)] = str(n_sums)
            n_sums += size
        loop = reindex([st.loop], {"acc"}, lambda index: (local.get(index[0], index[0]),))[0]
        core: list[Stmt] = [*st.allocs, *view_lines, loop]
        pre = head + phase_a + [Line("rows = r1 - r0")] + slices
        fits = n_sums * itemsize <= L.limits.shared_acc_bytes
        if n_sums and fits:
            opening, closing = _shared_block_sums(n_sums, ft, part)
            core = [opening, *core, closing]
        elif n_sums:
            core = [Line(f"acc = {part}[cuda.blockIdx.x]", "this block's sums (too many for shared memory): "
                         "its row of partials, zeroed by the driver"), *core]
        body = _needed(pre, core) + core
        used = _names_in(body)
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
            allocs += [Line(f"{part} = cuda.device_array((blocks_for(chunk), {n_sums}), np.{ft})"),
                       Line(f"{slots} = slot_index({tuple((g, k) for g, k, _ in sums)})",
                            "where its block sums go in total")]
            part_bytes += -(-n_sums * itemsize // THREADS_PER_BLOCK)   # per row: a row per block
        launches += ([Line(f"zero({part}[:blocks])")] if n_sums and not fits else []) + [
            Line(f"{kname}[blocks, THREADS_PER_BLOCK]({', '.join(params)})")] + (
            [Line(f"add_partials({part}[:blocks], total, {slots})")] if n_sums else [])
    row_bytes = part_bytes
    bufs: list[Stmt] = []
    buf = {g: L.name(f"{g}_buf") for g in L.globals}
    for g, v in L.globals.items():
        row_bytes += (8 if v.kind == "index" else itemsize) * math.prod(v.shape)
        shape = ", ".join(("chunk",) + tuple(str(d) for d in v.shape))
        bufs.append(Line(f"{buf[g]} = cuda.device_array(({shape}{',' if not v.shape else ''}), "
                         f"np.{'int64' if v.kind == 'index' else ft})"))
    used = _names_in(launches)
    loop = Loop("r0", "0", "n_samples", tuple(
        [Line("r1 = min(r0 + chunk, n_samples)"), Line("rows = r1 - r0"), Line("blocks = blocks_for(rows)")]
        + [ln for ln in slices if ln.text.split(" = ")[0] in used]
        + [Line(f"{g} = {buf[g]}[:rows]") for g in L.globals] + launches),
        "chunks of the batch, in order", step="chunk")
    sums_of_gemms = [Line(f"{v} = {_view('total', *views[v])}") for v in sorted(L.gemm_sums)]
    setup: list[Stmt] = [Line(f"chunk = stage_rows(n_samples, {row_bytes})",
                              "rows per chunk: what the device-memory budget holds (depends on N only)"),
                         *bufs, *allocs] + ([Line("zero(total)")] if n_acc else []) + sums_of_gemms
    copy = [Line(f"{s.array}[{s.offset}:{s.offset + s.size}].copy_to_device(total[{slot}:{slot + s.size}])",
                 s.key) for s, slot in copies]
    body = _needed(head, setup + [loop]) + setup + [loop] + copy
    params = flat + [arg for arg, _ in data_args] + rows_out + flat_out + (["total"] if n_acc else [])
    driver = Kernel(f"{name}_chunks", tuple(params), tuple(body),
                    f"Host side of {name} on the GPU: over chunks of the batch, the row kernels (one thread "
                    "per sample) and the tiled GEMMs between them, in order; sums over the batch end in "
                    "total, and those that are outputs as they stand are copied on the device.", host=True)
    return driver, kernels


def _shared_block_sums(n: int, ft: str, partials: str) -> tuple[Line, Line]:
    """A GPU block's ``n`` sums in shared memory: the opening (allocate, zero together, barrier)
    and the closing (barrier, then the block's row of ``partials``). No thread may return
    between them: every thread must reach the barriers."""
    each = f"for q in range(cuda.threadIdx.x, {n}, cuda.blockDim.x):\n"
    return (Line(f"acc = cuda.shared.array({n}, {ft})\n{each}    acc[q] = 0\ncuda.syncthreads()",
                 "the block's sums over its threads' rows, in shared memory"),
            Line(f"cuda.syncthreads()\n{each}    {partials}[cuda.blockIdx.x, q] = acc[q]",
                 "the block's sums: its row of partials"))


def _names_in(stmts: list[Stmt]) -> set[str]:
    import re
    text = []

    def go(ss: list[Stmt] | tuple[Stmt, ...]) -> None:
        for s in ss:
            if isinstance(s, Compute):
                text.append(str(s.target))
                text.extend(str(r) for _, r in s.binds)
                text.append(str(s.expr))
            elif isinstance(s, Line):
                text.append(s.text)
            elif isinstance(s, Loop):
                text.append(s.stop)
                go(s.body)
    go(stmts)
    return set(re.findall(r"(?<![.\w])[A-Za-z_]\w*", " ".join(text)))   # not attributes (cuda.threadIdx.x)


def _defined_by(s: Stmt) -> set[str]:
    if isinstance(s, Compute):
        return {s.target.name}
    if isinstance(s, Line):
        return set(s.writes) | ({s.text.split("=")[0].strip()} if "=" in s.text else set())
    return {n for b in s.body for n in _defined_by(b)} if isinstance(s, Loop) else set()


def _needed(phase_a: list[Stmt], *users: list[Stmt]) -> list[Stmt]:
    """The statements of ``phase_a`` that the ``users`` need, directly or not."""
    want = set().union(*(_names_in(u) for u in users))
    keep = []
    for s in reversed(phase_a):
        if _defined_by(s) & want:
            keep.append(s)
            want |= _names_in([s])
    return keep[::-1]


def _view(arr: str, offset: int, shape: tuple[int, ...]) -> str:
    size = 1
    for d in shape:
        size *= d
    view = f"{arr}[{offset}:{offset + size}]"
    return view + (f".reshape({shape})" if len(shape) > 1 else "")
