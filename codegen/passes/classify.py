"""Pass 1: the phase of each live value, and which batch sums share one accumulator.

A: unbatched and independent of any batch sum (parameter-only work); B: per-sample values and the
sums over the batch; C: unbatched values that depend on a batch sum. A per-sample value that
depends on a batch sum (batch statistics) would need a second pass over the data: an IRError.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from symgrad.ir import IRError

from ..ops import rule_for

if TYPE_CHECKING:
    from ..lower import Lowering

__all__ = ["run"]


def run(L: Lowering) -> None:
    after: dict[str, bool] = {}
    for a in L.assigns:
        dep = any(after[x.name] for x in a.args)
        if a.op.is_leaf():
            L.phase[a.out.name] = "B" if a.out.batched else "A"
        elif a.out.batched:
            if dep:
                raise IRError(f"{a.out.name}: a per-sample value depends on a sum over the batch "
                              "(batch statistics need a second pass, which is not supported)")
            L.phase[a.out.name] = "B"
        elif L.is_reduction(a):
            L.phase[a.out.name] = "B"
            dep = True
        else:
            L.phase[a.out.name] = "C" if dep else "A"
        after[a.out.name] = dep
    L.alias = _shared_sums(L, {L.program.output(s.key).name for s in L.sinks})


def _shared_sums(L: Lowering, outputs: set[str]) -> dict[str, str]:
    """Batch reductions that are only ever added together accumulate into one accumulator.

    ``d_W = sum_b g x + sum_b g' x'`` (a weight used twice, or the tangent of
    a weight gradient) then costs one accumulator, not one per term plus an
    addition afterwards: less to zero, reduce and add in every chunk. Returns
    alias -> the value whose accumulator it shares (the add's output included).
    """
    group: dict[str, str] = {}
    for a in L.assigns:
        v = a.out
        if not v.shape or v.batched:
            continue
        is_sum = rule_for(a.op).is_sum
        if L.phase[v.name] == "B" and not a.op.is_leaf():
            group[v.name] = v.name
        elif (is_sum is not None and is_sum(a)
                and all(x.name in group and x.name not in outputs and x.shape == v.shape
                        and len(L.consumers.get(x.name, [])) == 1 for x in a.args)):
            leader = group[a.args[0].name]
            for x in a.args[1:]:
                old = group[x.name]
                for k, g in group.items():
                    if g == old:
                        group[k] = leader
            group[v.name] = leader
    return {k: g for k, g in group.items() if k != g}
