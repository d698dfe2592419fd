"""Learning-rate schedules for the first-order methods: lr as a function of the update count t.

t counts parameter updates (mini-batch steps in stochastic runs), starting
at 0, so a schedule means the same whether a user calls ``step`` by hand or
``minimize`` drives it. Any callable ``(lr0, t) -> lr`` works as well.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Constant", "StepDecay", "Cosine", "Exponential", "resolve"]


@dataclass(frozen=True)
class Constant:
    """lr0 at every update."""

    def __call__(self, lr0: float, t: int) -> float:
        return lr0


@dataclass(frozen=True)
class StepDecay:
    """lr0 * gamma ** (t // step_size) (PyTorch's StepLR, counted in updates)."""

    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.step_size < 1 or not self.gamma > 0:
            raise ValueError(f"StepDecay: step_size must be >= 1 and gamma > 0, got {self.step_size}, "
                             f"{self.gamma}")

    def __call__(self, lr0: float, t: int) -> float:
        return lr0 * self.gamma ** (t // self.step_size)


@dataclass(frozen=True)
class Cosine:
    """eta_min + (lr0 - eta_min) (1 + cos(pi t / t_max)) / 2, then eta_min (PyTorch's
    CosineAnnealingLR without restarts)."""

    t_max: int
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        if self.t_max < 1:
            raise ValueError(f"Cosine: t_max must be >= 1, got {self.t_max}")

    def __call__(self, lr0: float, t: int) -> float:
        c = min(t, self.t_max) / self.t_max
        return self.eta_min + (lr0 - self.eta_min) * (1 + math.cos(math.pi * c)) / 2


@dataclass(frozen=True)
class Exponential:
    """lr0 * gamma ** t (PyTorch's ExponentialLR, counted in updates)."""

    gamma: float

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ValueError(f"Exponential: gamma must be in (0, 1], got {self.gamma}")

    def __call__(self, lr0: float, t: int) -> float:
        return lr0 * self.gamma ** t


def resolve(schedule: object) -> object:
    """None or "constant" -> Constant(); a callable passes through; anything else is an error."""
    if schedule is None or schedule == "constant":
        return Constant()
    if callable(schedule):
        return schedule
    raise ValueError(f"schedule: expected None, 'constant', a schedule (StepDecay, Cosine, Exponential) "
                     f"or a callable (lr0, t) -> lr; got {schedule!r}")
