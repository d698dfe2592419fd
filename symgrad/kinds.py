"""The declarative table of kernel kinds: what each computes, reads and writes.

A kind is lowered from one derived program (forward, gradient, curvature,
jacobian) into one group's module; its outputs become sinks (returned,
flat vectors over the parameters, per-sample rows). A new kind is one entry
here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .program import Signature

if TYPE_CHECKING:
    from codegen.lower import Sink

__all__ = ["Kind", "KIND_SPECS", "KINDS", "FLAT_ARRAYS", "sinks"]


@dataclass(frozen=True)
class Kind:
    """What one kernel kind computes and takes.

    ``outputs``: objective (returned), grad / hv / gn (flat vectors over the
    parameters), output / jac (per-sample rows). ``program``: which derived
    program it is lowered from. ``group``: first-order kernels are built by
    ``compile``; second-order ones on first use, in a module of their own.
    ``data``: whose data arrays the kind takes, "objective" or "output": the
    data that graph declares, exactly those, in ``data_names`` order.
    """

    group: str
    program: str
    outputs: tuple[str, ...]
    tangent: bool
    data: str
    doc: str


KIND_SPECS = {
    "loss": Kind("first", "forward", ("objective",), False, "objective",
                  "Objective: mean over the batch of the per-sample loss."),
    "value_and_grad": Kind("first", "gradient", ("objective", "grad"), False, "objective",
                            "Objective and its gradient (written into grad), forward and backward fused."),
    "predict": Kind("first", "forward", ("output",), False, "output",
                     "The output expression for each sample."),
    "hvp": Kind("second", "curvature", ("hv",), True, "objective",
                 "Exact Hessian of the objective times v (into hv): forward over reverse, fused."),
    "gnvp": Kind("second", "curvature", ("gn",), True, "objective",
                  "Generalized Gauss-Newton product J^T H_loss J v (+ penalties' exact Hv), into gnv."),
    "value_grad_hvp": Kind("second", "curvature", ("objective", "grad", "hv"), True, "objective",
                            "Objective, gradient and Hessian-vector product in one fused pass."),
    "jacobian": Kind("second", "jacobian", ("jac",), False, "output",
                      "Per-sample rows u^T d output / d theta for the cotangent u, into jac."),
}
#: every kernel kind (predict and jacobian need an output; gnvp a loss split point)
KINDS = tuple(KIND_SPECS)
#: argument name of each flat output in the generated kernels
FLAT_ARRAYS = {"grad": "grad", "hv": "hv", "gn": "gnv"}


def sinks(spec: Kind, sig: Signature) -> tuple[Sink, ...]:
    """Where each output of a kind goes in its kernels."""
    from codegen.lower import Sink
    out: list[Sink] = []
    for o in spec.outputs:
        if o == "objective":
            out.append(Sink("objective", "return"))
        elif o == "output":
            out.append(Sink("output", "rows", "out"))
        else:
            kind_ = "rows" if o == "jac" else "flat"
            array = "jac" if o == "jac" else FLAT_ARRAYS[o]
            out += [Sink(f"{o}:{n}", kind_, array, off, math.prod(shape)) for n, shape, off, _ in sig.params]
    return tuple(out)
