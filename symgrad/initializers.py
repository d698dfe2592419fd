"""Parameter initializers (the course notes' formulas), seeded and reproducible.

fan_in / fan_out of a (n_out, n_in) weight matrix are its columns / rows, as
for ``W @ x``. Vectors and scalars use fan_in = fan_out = their size.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["INITIALIZERS", "check_init", "initialize", "fans", "normal"]

Init = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a parameter of this shape."""
    if len(shape) == 2:
        return shape[1], shape[0]
    n = int(np.prod(shape)) if shape else 1
    return n, n


def _uniform(limit: Callable[[int, int], float]) -> Init:
    def f(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        a = limit(*fans(shape))
        return rng.uniform(-a, a, size=shape)
    return f


def _normal(std: Callable[[int, int], float]) -> Init:
    def f(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(0.0, std(*fans(shape)), size=shape)
    return f


INITIALIZERS: dict[str, Init] = {
    "zeros": lambda rng, shape: np.zeros(shape),
    "ones": lambda rng, shape: np.ones(shape),
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    "uniform": _uniform(lambda fi, fo: 1.0 / math.sqrt(fi)),
    # Glorot & Bengio: U(-sqrt(6/(fan_in+fan_out)), +) and N(0, 2/(fan_in+fan_out))
    "glorot_uniform": _uniform(lambda fi, fo: math.sqrt(6.0 / (fi + fo))),
    "glorot_normal": _normal(lambda fi, fo: math.sqrt(2.0 / (fi + fo))),
    # He et al. for ReLU: variance 2/fan_in
    "he_normal": _normal(lambda fi, fo: math.sqrt(2.0 / fi)),
    "he_uniform": _uniform(lambda fi, fo: math.sqrt(6.0 / fi)),
}
INITIALIZERS["xavier_uniform"] = INITIALIZERS["glorot_uniform"]
INITIALIZERS["xavier_normal"] = INITIALIZERS["glorot_normal"]


def normal(std: float) -> tuple[str, float]:
    """The spec of N(0, std^2): ``sg.param("W", (4, 3), init=normal(0.1))``."""
    return check_init(("normal", std), "normal")  # type: ignore[return-value]


def check_init(init: object, name: str) -> object:
    """Validate an initializer spec early, naming the parameter; returns a hashable spec."""
    if isinstance(init, str):
        if init not in INITIALIZERS:
            raise ValueError(f"param {name!r}: unknown initializer {init!r}; known: "
                             f"{sorted(INITIALIZERS)} and ('normal', std)")
        return init
    if isinstance(init, tuple) and len(init) == 2 and init[0] == "normal":
        std = init[1]
        if not isinstance(std, (int, float)) or not std >= 0:
            raise ValueError(f"param {name!r}: normal std must be a non-negative number, got {std!r}")
        return ("normal", float(std))
    if callable(init):
        return init
    raise ValueError(f"param {name!r}: initializer must be a name, ('normal', std) or a callable, "
                     f"got {init!r}")


def initialize(init: object, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw one parameter's initial value (float64) from ``rng``."""
    if isinstance(init, str):
        value = INITIALIZERS[init](rng, shape)
    elif isinstance(init, tuple):
        value = rng.normal(0.0, init[1], size=shape)
    else:
        value = np.asarray(init(rng, shape), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"initializer {init!r} returned shape {value.shape}, expected {shape}")
    return np.asarray(value, dtype=np.float64)
