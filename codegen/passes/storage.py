"""Pass 2: how each live value is held (array, scalar, constant, accumulator slots; an op's
lowering rule may decide), the kernel arguments, and the head that binds them (1/N, the views of
the flat parameter vectors)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..kernel_ir import Affine, Dim, Let, Reciprocal, View
from ..ops import rule_for

if TYPE_CHECKING:
    from ..lower import Lowering

__all__ = ["run"]


def run(L: Lowering) -> None:
    from ..lower import Store, flat_view
    sums: list[Store] = []
    for a in L.assigns:
        v = a.out
        hook = rule_for(a.op).store
        chosen = hook(L, a) if hook is not None else None
        if chosen is not None:
            L.store[v.name] = chosen
        elif v.name in L.alias:
            L.store[v.name] = L.store[L.alias[v.name]]
        elif L.phase[v.name] == "B" and not v.batched:
            L.store[v.name] = Store("acc", v.name)
            sums.append(L.store[v.name])
        elif not v.batched and not v.shape:
            L.store[v.name] = Store("scalar", v.name)
        else:
            L.store[v.name] = Store("array", v.name)
    L.n_acc = _place_sums(L, sums)
    leaves = {a.op.label: a for a in L.assigns if a.op.is_leaf()}
    L.inputs = list(L.flat_leaves.values())
    for label, _role in L.data:
        a = leaves.get(label)
        arg = a.out.name if a is not None else L.name(label.replace(".", "_"))
        L.data_args.append((arg, a))
        L.inputs.append(arg)
    if L.data_args:
        L.head.append(Let("n_samples", Dim(L.data_args[0][0], 0)))
    if any(a.op.is_leaf() and a.op.role == "batch_scale" for a in L.assigns):
        L.head.append(Let("inv_n", Reciprocal("n_samples"), "1/N: the objective is a mean"))
    for role, arr in L.flat_leaves.items():
        for a in L.assigns:
            if a.op.is_leaf() and a.op.role == role:
                off, shape = L.param_layout[a.op.label]
                comment = f"{role} {a.op.label!r}"
                L.head.append(View(a.out.name, arr, Affine.of(off), None, None, comment) if not shape
                              else flat_view(a.out.name, arr, off, shape, comment))


def _place_sums(L: Lowering, sums: list) -> int:
    """Accumulator slots: first the sums that are flat outputs as they stand, in the outputs'
    order (a gradient's blocks then lie in total as in grad: the finish copies them in one loop,
    not one per parameter), then the others in program order. Returns the accumulator length."""
    size = {st.name: math.prod(L.by_name[st.name].out.shape) for st in sums}
    first = [L.store[L.program.output(s.key).name] for s in L.sinks if s.kind == "flat"]
    order = list(dict.fromkeys([id(st) for st in first if st.kind == "acc"] + [id(st) for st in sums]))
    by_id = {id(st): st for st in sums}
    slots = 0
    for k in order:
        by_id[k].acc_slot = slots
        slots += size[by_id[k].name]
    return slots
