"""A NumPy interpreter of programs: each op's ``evaluate`` rule, one assignment at a time.

No Numba and no code generation: the reference that the rule modules' unit
tests check derivative programs against, and a way to evaluate any program
(a derived one included) on small data.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .ir import Program

__all__ = ["run"]


def run(program: Program, args: dict[str, Any], n: int, tangents: dict[str, Any] | None = None,
        outputs: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The program's outputs for ``n`` samples (only ``outputs``, and the values they need, when
    given). ``args`` maps each leaf's label to its value (a batched leaf with the batch axis
    first); a tangent leaf (a direction, labelled like its parameter) reads ``tangents``; 1/N
    (``batch_scale``) is supplied."""
    if outputs is not None:
        program = program.pruned(outputs)
    env: dict[str, Any] = {}
    for a in program.body:
        if a.op.is_leaf():
            source = tangents if a.op.role == "tangent" else args
            if a.op.role == "batch_scale":
                env[a.out.name] = 1.0 / n
            elif source is None or a.op.label not in source:
                raise KeyError(f"run: no value for leaf {a.op.label!r} ({a.op.role})")
            else:
                env[a.out.name] = np.asarray(source[a.op.label],
                                             dtype=np.int64 if a.out.kind == "index" else float)
        else:
            env[a.out.name] = a.op.evaluate(a, [env[x.name] for x in a.args], n)
    return {k: np.asarray(env[v.name]) for k, v in program.outputs}
