"""Scored: a loss and the prediction it scores, the Gauss-Newton split point, recorded in the IR.

A built-in loss returns ``Scored(loss, prediction)``. The op computes
nothing: when the builder applies it (or takes its batch mean), it records
``prediction`` in :attr:`symgrad.ir.Builder.splits` and returns ``loss``
itself, so no node of it enters a program. The forward program turns the
recorded values into its ``split:*`` outputs, where the generalized
Gauss-Newton product separates the network from the loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..ir import Builder, Op, Typed, Value

__all__ = ["Scored"]


@dataclass(frozen=True)
class Scored(Op):
    """``loss`` (its first argument), marking the second as the prediction the loss scores."""

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        loss, _prediction = args
        return loss.shape, loss.batched, loss.kind

    def simplify(self, b: Builder, args: tuple[Value, ...]) -> Value:
        loss, prediction = args
        b.mark_split(prediction)
        return loss

    def mean_through(self, b: Builder, means: Callable[[int], Value], values: Callable[[int], Value],
                     note: str) -> Value | None:
        """The mean of the loss, the split marked: the mean keeps commuting with what the loss is."""
        b.mark_split(values(1))
        return means(0)
