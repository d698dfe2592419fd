"""The op families of the IR, one module each.

Each module defines its ops (frozen dataclasses deriving from
:class:`symgrad.ir.Op`) with every rule the symbolic pipeline asks of them:
type, simplification, vector-Jacobian product, Jacobian-vector product,
linearity, and how the derivation prints them; and the builder helpers that
DSL functions and other rules call to create them. Their lowering to loops is
in the matching module of :mod:`codegen.ops`.

- :mod:`.leaf`: the program's arguments (parameters, data, tangents, 1/N).
- :mod:`.elementwise`: a SymPy scalar expression applied element by element.
- :mod:`.einsum`: every linear contraction (products, sums, broadcasts).
- :mod:`.index`: argmax, gather and scatter over the last axis (max, class labels, their adjoints).
- :mod:`.index_map`: affine index maps and their transposes (slicing, transposes, reshapes,
  padding, concatenation, convolution and pooling windows).
- :mod:`.constant`: fixed tensors from NumPy arrays.
- :mod:`.detach`: identity without derivative.
- :mod:`.split`: a loss marking the prediction it scores (the Gauss-Newton split point); it
  leaves no node in a program, so it has no lowering.

The names below are re-exported for convenience; the pipeline imports each
family from its own module, so a new family needs no edit here.
"""
from __future__ import annotations

from .detach import Detach, detach
from .einsum import Einsum, einsum, parse_spec
from .elementwise import (DerivativeError, Elementwise, ScalarFn, add, constant, elementwise,
                          elementwise_partials)
from .index import ArgMax, Gather, Scatter, argmax, gather, scatter
from .leaf import Leaf, leaf

__all__ = ["Leaf", "leaf", "Elementwise", "ScalarFn", "elementwise", "constant", "add", "elementwise_partials",
           "DerivativeError", "Einsum", "einsum", "parse_spec", "ArgMax", "Gather", "Scatter", "argmax",
           "gather", "scatter", "Detach", "detach"]
