"""The derivative programs behind each kernel kind, assembled from vjp and jvp.

- gradient: ``vjp`` of the objective (outputs ``grad:<param>``).
- curvature: ``jvp`` over the gradient program (Pearlmutter's R-operator):
  ``hv:<param>`` is the exact Hessian-vector product; ``gn:<param>`` the
  generalized Gauss-Newton product, the same pass with the curvature of the
  network's backward assignments dropped, so only the loss's Hessian with
  respect to its prediction (the ``split:*`` outputs) and parameter-only terms
  (penalties) keep theirs: J^T H_loss J v + H_penalty v.
- jacobian: ``vjp`` of the output seeded per sample by a cotangent ``u`` and
  kept per sample: ``jac:<param>`` rows are u^T d output / d theta.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .autodiff import Adjoint, jvp, vjp
from .ir import Builder, Linearity, Program, Value
from .ops.elementwise import constant
from .ops.leaf import leaf

__all__ = ["Curvature", "gradient", "curvature", "jacobian", "network_values", "linearity", "COTANGENT"]

#: the label of the Jacobian's per-sample cotangent argument (no user name can take it)
COTANGENT = "@cotangent"


def gradient(forward: Program) -> Adjoint:
    """The adjoint program of the objective."""
    return vjp(forward)


@dataclass(frozen=True)
class Curvature:
    """The gradient program extended by its tangents; ``has_gn`` when a split point exists."""

    program: Program
    has_gn: bool


def network_values(forward: Program) -> set[str]:
    """The forward values the ``split:*`` predictions depend on (the network, inclusive)."""
    return forward.depends(v.name for k, v in forward.outputs if k.startswith("split:"))


def curvature(forward: Program, adj: Adjoint) -> Curvature:
    """Add ``hv:*`` and (if the forward program names a split) ``gn:*`` outputs to ``adj``."""
    b = adj.builder
    body = adj.program.body
    outputs = list(adj.program.outputs)
    hv = jvp(body, b)
    outputs += [(f"hv:{label}", hv.get(g.name) or _zero(b, g)) for label, g in adj.grads.items()]
    network = network_values(forward)
    if network:
        forward_names = frozenset(a.out.name for a in forward.body)
        gn = jvp(body, b, frozen=lambda a: adj.origin.get(a.out.name) in network,
                 constant=forward_names)
        outputs += [(f"gn:{label}", gn.get(g.name) or _zero(b, g)) for label, g in adj.grads.items()]
    return Curvature(b.program(tuple(outputs)), bool(network))


def linearity(forward: Program, key: str = "objective") -> Linearity:
    """How output ``key`` depends on the parameters, from each op's linearity rule: a degree-2
    (piecewise affine) objective has a Hessian that is zero almost everywhere."""
    lin: dict[str, Linearity] = {}
    for a in forward.body:
        lin[a.out.name] = a.op.linearity(a, [lin[x.name] for x in a.args])
    return lin[forward.output(key).name]


def jacobian(forward: Program) -> Program:
    """Per-sample u^T d output / d theta for a per-sample cotangent leaf ``u`` (label
    :data:`COTANGENT`); outputs ``jac:<param>`` with a batch axis."""
    b = Builder()
    for a in forward.body:
        b.adopt(a)
    out = forward.output("output")
    u = leaf(b, "cotangent", COTANGENT, out.shape, True, name="u")
    return vjp(forward, seeds={"output": u}, builder=b, per_sample=True, prefix="jac").program


def _zero(b: Builder, like: Value) -> Value:
    return constant(b, sp.S.Zero, f"zero_{like.name}")
