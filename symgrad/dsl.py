"""The user-facing DSL: per-sample tensors, parameters, layers, activations, losses.

A :class:`Tensor` is a node of an expression graph describing ONE sample; the
batch axis is implicit. Shapes are checked when a node is built, so a
mismatch is reported at the line that wrote it. Nothing is computed here:
:func:`symgrad.model.compile` turns the graph into a program.
"""
from __future__ import annotations

import itertools
import keyword
import math
import re
from typing import Callable, Sequence, Union

import numpy as np
import sympy as sp
from sympy.core.function import AppliedUndef

from .functions import Sigmoid, Softplus, Xlogy, clamped_log, positive_part
from .ir import BATCH, IRError, Op, arg_symbols
from .ops.constant import Constant
from .ops.detach import Detach
from .ops.einsum import LETTERS, Einsum
from .ops.elementwise import Elementwise, ScalarFn
from .ops.index import ArgMax, Gather, Scatter
from .ops.leaf import Leaf
from .ops.split import Scored

__all__ = [
    "Tensor", "GraphError", "input", "target", "labels", "param", "constant", "zeros", "ones", "dense", "elementwise",
    "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu", "silu", "swish", "identity",
    "exp", "log", "sqrt", "abs", "square",
    "sum", "mean", "max", "logsumexp", "softmax", "log_softmax", "dot", "one_hot",
    "mse", "l1_loss", "huber", "softmax_cross_entropy", "nll", "bce", "bce_with_logits", "hinge",
    "multiclass_hinge", "kl_div", "l2", "l1", "ACTIVATIONS",
]

Number = Union[int, float, sp.Expr]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SERIAL = itertools.count()


class GraphError(ValueError):
    """A graph that cannot be built: wrong shapes, bad names, bad arguments."""


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or any(
            keyword.iskeyword(part) for part in name.split(".")):
        raise GraphError(f"{what} name {name!r} is not a valid identifier "
                         "(letters, digits, '_' and '.'-separated parts; no keywords)")
    return name


def _check_shape(shape: int | Sequence[int], what: str) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise GraphError(f"{what}: shape {shape!r} must be a positive int or a tuple of positive ints")
    return dims


class Tensor:
    """A node of the per-sample expression graph: an IR op (:mod:`symgrad.ops`) applied to
    argument nodes. ``shape``, ``batched`` and ``kind`` (real or index) come from the op's
    type rule, checked when the node is built.

    A built-in loss is a :class:`~symgrad.ops.split.Scored` node naming the
    prediction it scores, where the Gauss-Newton product splits network from
    loss; ``logits`` on a log_softmax result lets nll split at the logits.
    """

    __slots__ = ("op", "args", "shape", "batched", "kind", "name", "serial", "logits")
    __array_priority__ = 1000  # make numpy scalars defer to our operators

    def __init__(self, op: Op, args: tuple[Tensor, ...], name: str) -> None:
        try:
            self.shape, self.batched, self.kind = op.type(args)
        except IRError as e:
            raise GraphError(f"node {name!r}: {e}") from e
        self.op, self.args, self.name = op, args, name
        self.serial = next(_SERIAL)  # creation order: parameters are laid out in it
        self.logits: Tensor | None = None

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, shape={self.shape}, batched={self.batched})"

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    # arithmetic: every operator is an elementwise SymPy expression of its operands
    def __add__(self, o: Tensor | Number) -> Tensor: return _binary("add", lambda a, b: a + b, self, o)
    def __radd__(self, o: Number) -> Tensor: return _binary("add", lambda a, b: a + b, o, self)
    def __sub__(self, o: Tensor | Number) -> Tensor: return _binary("sub", lambda a, b: a - b, self, o)
    def __rsub__(self, o: Number) -> Tensor: return _binary("sub", lambda a, b: a - b, o, self)
    def __mul__(self, o: Tensor | Number) -> Tensor: return _binary("mul", lambda a, b: a * b, self, o)
    def __rmul__(self, o: Number) -> Tensor: return _binary("mul", lambda a, b: a * b, o, self)
    def __truediv__(self, o: Tensor | Number) -> Tensor: return _binary("div", lambda a, b: a / b, self, o)
    def __rtruediv__(self, o: Number) -> Tensor: return _binary("div", lambda a, b: a / b, o, self)
    def __pow__(self, o: Tensor | Number) -> Tensor: return _binary("pow", lambda a, b: a ** b, self, o)
    def __rpow__(self, o: Number) -> Tensor: return _binary("pow", lambda a, b: a ** b, o, self)
    def __neg__(self) -> Tensor: return _map("neg", lambda a: -a, self)
    def __pos__(self) -> Tensor: return self

    # indexing and shapes: affine index maps (symgrad.indexing)
    def __getitem__(self, key: object) -> Tensor:
        from .indexing import getitem
        return getitem(self, key)

    @property
    def T(self) -> Tensor:  # noqa: N802 - NumPy's name
        from .indexing import transpose
        return transpose(self)

    def reshape(self, *shape: int | Sequence[int]) -> Tensor:
        from .indexing import reshape
        return reshape(self, shape[0] if len(shape) == 1 else shape)

    def __matmul__(self, o: Tensor) -> Tensor: return _matmul(self, o)
    def __rmatmul__(self, o: Tensor) -> Tensor: return _matmul(o, self)

    def __bool__(self) -> bool:
        raise GraphError(f"{self.name}: a symbolic tensor has no truth value; use sg.elementwise "
                         "with sympy.Piecewise for conditionals")


# ----------------------------------------------------------------------------- leaves

def _leaf(role: str, name: str, shape: tuple[int, ...], batched: bool, *, init: object = None,
          classes: int = 0, kind: str = "real") -> Tensor:
    return Tensor(Leaf(role, name, init, classes, shape, batched, kind), (), name)


def input(name: str, shape: int | Sequence[int]) -> Tensor:  # noqa: A001 - the contract's name
    """A per-sample input (feature vector); data array shape (N, *shape)."""
    return _leaf("input", _check_name(name, "input"), _check_shape(shape, f"input {name!r}"), True)


def target(name: str, shape: int | Sequence[int]) -> Tensor:
    """A per-sample real target; data array shape (N, *shape)."""
    return _leaf("target", _check_name(name, "target"), _check_shape(shape, f"target {name!r}"), True)


def labels(name: str, classes: int) -> Tensor:
    """A per-sample integer class label in [0, classes); data array shape (N,)."""
    _check_name(name, "labels")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise GraphError(f"labels {name!r}: classes must be a positive int, got {classes!r}")
    return _leaf("labels", name, (), True, classes=classes, kind="index")


def param(name: str, shape: int | Sequence[int], init: object = None) -> Tensor:
    """A trainable parameter. ``init``: an initializer name, ``("normal", std)``, or a callable
    ``(rng, shape) -> array``; default glorot_uniform for matrices, zeros otherwise."""
    from .initializers import check_init
    dims = _check_shape(shape, f"param {name!r}") if shape != () else ()
    init = check_init(init if init is not None else ("glorot_uniform" if len(dims) == 2 else "zeros"),
                      _check_name(name, "param"))
    return _leaf("param", name, dims, False, init=init)


# ----------------------------------------------------------------------------- op builders

def _as_tensor(x: Tensor | Number) -> Tensor | sp.Expr:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray) and x.ndim:
        return constant(x)
    if isinstance(x, np.ndarray) or isinstance(x, np.generic):
        x = float(x)
    try:
        return sp.sympify(float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x,
                          strict=True)
    except (sp.SympifyError, TypeError, ValueError) as e:
        raise GraphError(f"cannot use {x!r} ({type(x).__name__}) in a symgrad expression") from e


def constant(value: object, name: str = "constant") -> Tensor:
    """A fixed tensor from a NumPy array (or nested lists): the same for every sample, no gradient.
    NumPy arrays mixed into arithmetic become constants (``np.ones((8, 8)) * x``)."""
    _check_name(name, "constant")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise GraphError(f"constant {name!r}: {value!r} is not an array of numbers") from e
    if not np.all(np.isfinite(arr)):
        raise GraphError(f"constant {name!r}: values must be finite")
    if arr.ndim == 0:
        return Tensor(Elementwise(ScalarFn(name, sp.Float(float(arr)), 0)), (), name)
    if arr.size == 0:
        raise GraphError(f"constant {name!r}: an empty array {arr.shape}")
    return Tensor(Constant(tuple(float(v) for v in arr.ravel()), arr.shape), (), name)


def zeros(shape: int | Sequence[int]) -> Tensor:
    """A constant tensor of zeros (folded into the expressions that read it)."""
    return Tensor(Elementwise(ScalarFn("zeros", sp.S.Zero, 0), _check_shape(shape, "zeros")), (), "zeros")


def ones(shape: int | Sequence[int]) -> Tensor:
    """A constant tensor of ones (folded into the expressions that read it)."""
    return Tensor(Elementwise(ScalarFn("ones", sp.S.One, 0), _check_shape(shape, "ones")), (), "ones")


def _check_expr(name: str, expr: sp.Expr) -> None:
    undefined = sorted({str(f.func) for f in expr.atoms(AppliedUndef)})
    if undefined:
        raise GraphError(f"elementwise {name!r}: undefined SymPy function(s) {undefined} in "
                         f"{expr}; SymPy cannot differentiate them and Numba cannot evaluate them")
    if not isinstance(expr, sp.Expr) or expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise GraphError(f"elementwise {name!r}: {expr} is not a finite scalar expression")


def _apply(name: str, expr_fn: Callable[..., sp.Expr], operands: Sequence[Tensor | Number],
           label: str | None = None) -> Tensor:
    """Build an elementwise node; numeric operands are folded into the SymPy expression."""
    items = [_as_tensor(o) for o in operands]
    tensors = [t for t in items if isinstance(t, Tensor)]
    if not tensors:
        raise GraphError(f"{name}: needs at least one symgrad tensor")
    for t in tensors:
        if t.kind != "real":
            raise GraphError(f"{name}: {t.name} holds integer labels; use it through a loss, or "
                             "sg.one_hot(labels) for a real (classes,) vector, not in arithmetic")
    try:
        shape = tuple(int(d) for d in np.broadcast_shapes(*(t.shape for t in tensors)))
    except ValueError:
        detail = ", ".join(f"{t.name} {t.shape}" for t in tensors)
        raise GraphError(f"{name}: shapes do not broadcast ({detail}), by NumPy's rules") from None
    tensors = [t if t.shape in ((), shape) else _broadcast_to(t, shape) for t in tensors]
    it = iter(tensors)
    items = [next(it) if isinstance(t, Tensor) else t for t in items]
    syms = iter(arg_symbols(len(tensors)))
    try:
        expr = sp.sympify(expr_fn(*[next(syms) if isinstance(t, Tensor) else t for t in items]))
    except (TypeError, ValueError, sp.SympifyError) as e:
        raise GraphError(f"elementwise {name!r}: the function did not build a SymPy expression "
                         f"({type(e).__name__}: {e})") from e
    _check_expr(name, expr)
    return Tensor(Elementwise(ScalarFn(name, expr, len(tensors)), shape), tuple(tensors), label or name)


def _broadcast_to(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``t`` repeated to ``shape`` by NumPy's rules, as an einsum: an axis ``t`` lacks, or has
    with size 1, is an output letter it does not have (a size-1 axis a letter of its own, summed
    over its one element), so the adjoint sums over the repeats."""
    out = LETTERS[:len(shape)]
    own = iter(LETTERS[len(shape):])
    lead = len(shape) - len(t.shape)
    letters = "".join(out[lead + k] if d == shape[lead + k] else next(own) for k, d in enumerate(t.shape))
    return _einsum(f"{t.name}_bcast", f"{letters}->{out}", (t,), shape)


def _binary(name: str, fn: Callable[[sp.Expr, sp.Expr], sp.Expr], a: Tensor | Number,
            b: Tensor | Number) -> Tensor:
    return _apply(name, fn, (a, b))


def _map(name: str, fn: Callable[[sp.Expr], sp.Expr], x: Tensor, label: str | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        raise GraphError(f"{name}: expected a symgrad Tensor, got {type(x).__name__}")
    return _apply(name, fn, (x,), label)


def _einsum(name: str, spec: str, operands: tuple[Tensor, ...], shape: tuple[int, ...]) -> Tensor:
    """``spec`` over per-sample axes; the batch letter is added for batched operands."""
    ins, out = spec.split("->")
    parts = [(BATCH if t.batched else "") + s for t, s in zip(operands, ins.split(","))]
    batched = any(t.batched for t in operands)
    full = ",".join(parts) + "->" + (BATCH if batched else "") + out
    return Tensor(Einsum(full, shape), operands, name)


def _matmul(a: Tensor, b: Tensor, name: str = "matmul") -> Tensor:
    for t in (a, b):
        if not isinstance(t, Tensor):
            raise GraphError(f"{name}: @ needs symgrad tensors, got {type(t).__name__}")
        if t.kind != "real" or t.shape == ():
            raise GraphError(f"{name}: {t.name} of shape {t.shape} cannot be a matmul operand")
    if a.shape[-1] != b.shape[0]:
        raise GraphError(f"{name}: shape mismatch in {a.name} @ {b.name}: {a.shape} @ {b.shape} "
                         f"(inner sizes {a.shape[-1]} != {b.shape[0]})")
    sa = "ik"[2 - len(a.shape):]
    sb = "kj"[:len(b.shape)]
    out = sa.replace("k", "") + sb.replace("k", "")
    shape = a.shape[:-1] + b.shape[1:]
    return _einsum(name, f"{sa},{sb}->{out}", (a, b), shape)


def dot(a: Tensor, b: Tensor) -> Tensor:
    """Inner product of two vectors (a per-sample scalar)."""
    return _matmul(a, b, "dot")


# ----------------------------------------------------------------------------- activations

def elementwise(name: str, fn: Callable[..., sp.Expr]) -> Callable[..., Tensor]:
    """A new elementwise op from any SymPy expression of one or more scalars.

    SymPy derives its first and second derivatives when the model compiles; a
    function it cannot differentiate or Numba cannot print is reported then.
    """
    _check_name(name, "elementwise function")
    if not callable(fn):
        raise GraphError(f"elementwise {name!r}: fn must be callable, got {type(fn).__name__}")

    def apply(*operands: Tensor | Number) -> Tensor:
        return _apply(name, fn, operands)

    apply.__name__ = name
    apply.__doc__ = f"Elementwise {name!r}, defined by a SymPy expression."
    return apply


def sigmoid(x: Tensor) -> Tensor:
    """1/(1+exp(-x)), stable for any x."""
    return _map("sigmoid", Sigmoid, x)


def tanh(x: Tensor) -> Tensor:
    return _map("tanh", sp.tanh, x)


def relu(x: Tensor) -> Tensor:
    """max(x, 0); derivative 0 at 0 (PyTorch's convention)."""
    return _map("relu", positive_part, x)


def leaky_relu(x: Tensor, alpha: float = 0.01) -> Tensor:
    return _map("leaky_relu", lambda a: sp.Piecewise((a, a > 0), (alpha * a, True)), x)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    return _map("elu", lambda a: sp.Piecewise((a, a > 0), (alpha * (sp.exp(a) - 1), True)), x)


def softplus(x: Tensor) -> Tensor:
    """log(1+exp(x)), stable for any x."""
    return _map("softplus", Softplus, x)


def gelu(x: Tensor) -> Tensor:
    """The exact form x/2 (1 + erf(x/sqrt(2)))."""
    return _map("gelu", lambda a: a * (1 + sp.erf(a / sp.sqrt(2))) / 2, x)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x) (swish)."""
    return _map("silu", lambda a: a * Sigmoid(a), x)


swish = silu


def identity(x: Tensor) -> Tensor:
    return x


def exp(x: Tensor) -> Tensor:
    return _map("exp", sp.exp, x)


def log(x: Tensor) -> Tensor:
    return _map("log", sp.log, x)


def sqrt(x: Tensor) -> Tensor:
    return _map("sqrt", sp.sqrt, x)


def abs(x: Tensor) -> Tensor:  # noqa: A001 - mirrors numpy's name
    return _map("abs", sp.Abs, x)


def square(x: Tensor) -> Tensor:
    return _map("square", lambda a: a ** 2, x)


#: activation names accepted by ``dense(..., activation="name")``
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": sigmoid, "tanh": tanh, "relu": relu, "leaky_relu": leaky_relu, "elu": elu,
    "softplus": softplus, "gelu": gelu, "silu": silu, "swish": silu, "identity": identity,
    "linear": identity,
}


# ----------------------------------------------------------------------------- layers

def dense(h: Tensor, n: int, activation: str | Callable[[Tensor], Tensor] | None = None, *,
          name: str = "dense", init: object = "glorot_uniform", bias: bool = True,
          bias_init: object = "zeros") -> Tensor:
    """``activation(W @ h + b)`` with new parameters ``name.W`` (n, len(h)) and ``name.b`` (n,)."""
    _check_name(name, "dense layer")
    if not isinstance(h, Tensor) or len(h.shape) != 1:
        raise GraphError(f"dense {name!r}: input must be a vector tensor, got "
                         f"{getattr(h, 'shape', type(h).__name__)}")
    fn = _activation(activation, f"dense {name!r}")
    W = param(f"{name}.W", (n, h.shape[0]), init=init)
    z = _matmul(W, h, f"{name}.z")
    if bias:
        z = _apply("add", lambda a, c: a + c, (z, param(f"{name}.b", n, init=bias_init)), f"{name}.a")
    return _activate(z, fn, f"dense {name!r}", name)


def _activation(activation: str | Callable[[Tensor], Tensor] | None,
                what: str) -> Callable[[Tensor], Tensor] | None:
    """A layer's ``activation=``: a built-in's name, a function, or None; checked before the layer
    makes its parameters."""
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise GraphError(f"{what}: unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[activation]
    if activation is not None and not callable(activation):
        raise GraphError(f"{what}: activation must be a name or a callable")
    return activation


def _activate(z: Tensor, fn: Callable[[Tensor], Tensor] | None, what: str, name: str) -> Tensor:
    """``fn(z)`` (``z`` without one), checked to keep ``z``'s shape, named after the layer."""
    out = fn(z) if fn is not None else z
    if not isinstance(out, Tensor) or out.shape != z.shape:
        raise GraphError(f"{what}: activation returned {out!r}, expected a {z.shape} tensor")
    if out is not z:
        out.name = name
    return out


# ----------------------------------------------------------------------------- reductions

def _full(x: Tensor, what: str) -> str:
    if not isinstance(x, Tensor) or x.kind != "real":
        raise GraphError(f"{what}: expected a real symgrad Tensor, got {x!r}")
    return LETTERS[:len(x.shape)]


def _axes(x: Tensor, axis: int | Sequence[int] | None, what: str) -> tuple[int, ...]:
    """``axis`` (None: all, an int or a tuple, negative from the end) as sorted axes of ``x``."""
    if axis is None:
        return tuple(range(len(x.shape)))
    items = (axis,) if isinstance(axis, int) else tuple(axis) if isinstance(axis, (tuple, list)) else None
    if items is None or not all(isinstance(a, int) and not isinstance(a, bool) for a in items):
        raise GraphError(f"{what}: axis must be None, an int or a tuple of ints, got {axis!r}")
    rank = len(x.shape)
    bad = [a for a in items if not -rank <= a < rank]
    if bad:
        raise GraphError(f"{what}: axis {bad[0]} is out of range for {x.name} of shape {x.shape}")
    axes = sorted(a % rank for a in items)
    if len(set(axes)) != len(axes):
        raise GraphError(f"{what}: axis {axis!r} repeats an axis of {x.name}")
    return tuple(axes)


def sum(x: Tensor, axis: int | Sequence[int] | None = None) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (None: all elements), per sample, as NumPy's ``sum``."""
    letters = _full(x, "sum")
    axes = _axes(x, axis, "sum")
    if not axes:
        return x
    kept = "".join(ch for k, ch in enumerate(letters) if k not in axes)
    return _einsum("sum", f"{letters}->{kept}", (x,), tuple(d for k, d in enumerate(x.shape) if k not in axes))


def mean(x: Tensor, axis: int | Sequence[int] | None = None) -> Tensor:
    """Mean over ``axis`` (None: all elements), per sample."""
    _full(x, "mean")
    axes = _axes(x, axis, "mean")
    count = math.prod(x.shape[k] for k in axes)
    return sum(x, axes) * sp.Rational(1, count) if axes else x


def _vector(x: Tensor, what: str) -> None:
    _full(x, what)
    if len(x.shape) != 1:
        raise GraphError(f"{what}: expects a vector, got {x.name} of shape {x.shape}")


def _last(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    """``x`` with ``axes`` moved last and merged into one axis (index maps, where needed)."""
    from .indexing import reshape, transpose
    rest = [k for k in range(len(x.shape)) if k not in axes]
    order = rest + list(axes)
    y = transpose(x, order) if order != list(range(len(x.shape))) else x
    if len(axes) > 1:
        y = reshape(y, tuple(x.shape[k] for k in rest) + (math.prod(x.shape[k] for k in axes),))
    return y


def _spread(m: Tensor, x: Tensor, axes: tuple[int, ...]) -> Tensor:
    """``m``, reduced over ``axes`` of ``x``, repeated back to ``x``'s shape (a scalar as it is:
    elementwise ops take scalars)."""
    if not m.shape:
        return m
    letters = LETTERS[:len(x.shape)]
    kept = "".join(ch for k, ch in enumerate(letters) if k not in axes)
    return _einsum(f"{m.name}_bcast", f"{kept}->{letters}", (m,), x.shape)


def max(x: Tensor, axis: int | Sequence[int] | None = None) -> Tensor:  # noqa: A001
    """Largest element over ``axis`` (None: all); its gradient goes to the first largest
    element (in C order over the axes)."""
    _full(x, "max")
    axes = _axes(x, axis, "max")
    if not axes:
        return x
    y = _last(x, axes)
    return Tensor(Gather(), (y, Tensor(ArgMax(), (y,), "argmax")), "max")


def logsumexp(x: Tensor, axis: int | Sequence[int] | None = None) -> Tensor:
    """log(sum(exp(x))) over ``axis`` (None: all), shifted by the (detached) maximum so it never
    overflows."""
    _full(x, "logsumexp")
    axes = _axes(x, axis, "logsumexp")
    if not axes:
        return x
    m = Tensor(Detach(), (max(x, axes),), "lse_shift")
    s = sum(_apply("exp_shifted", lambda a, b: sp.exp(a - b), (x, _spread(m, x, axes))), axes)
    return _apply("logsumexp", lambda a, b: b + sp.log(a), (s, m))


def softmax(x: Tensor, axis: int | Sequence[int] = -1) -> Tensor:
    """exp(x - logsumexp(x, axis)), normalized over ``axis`` (the last by default)."""
    axes = _axes(_real_tensor(x, "softmax"), axis, "softmax")
    return _apply("softmax", lambda a, b: sp.exp(a - b), (x, _spread(logsumexp(x, axes), x, axes)))


def log_softmax(x: Tensor, axis: int | Sequence[int] = -1) -> Tensor:
    """x - logsumexp(x, axis) (the last axis by default)."""
    axes = _axes(_real_tensor(x, "log_softmax"), axis, "log_softmax")
    out = _apply("log_softmax", lambda a, b: a - b, (x, _spread(logsumexp(x, axes), x, axes)))
    if len(axes) == len(x.shape):
        out.logits = x   # nll of it splits at the logits (Gauss-Newton)
    return out


def _real_tensor(x: object, what: str) -> Tensor:
    _full(x, what)   # type: ignore[arg-type]
    return x   # type: ignore[return-value]


def _pick(x: Tensor, y: Tensor, what: str) -> Tensor:
    _vector(x, what)
    _labels(y, what)
    classes = y.op.classes
    if x.shape[0] != classes:
        raise GraphError(f"{what}: {x.name} has {x.shape[0]} entries but labels {y.name!r} "
                         f"have {classes} classes")
    return Tensor(Gather(), (x, y), f"{x.name}[{y.name}]")


def _labels(y: Tensor, what: str) -> None:
    if not isinstance(y, Tensor) or y.kind != "index" or not y.op.is_leaf():
        raise GraphError(f"{what}: the second argument must be sg.labels, got {y!r}")


def one_hot(y: Tensor) -> Tensor:
    """The (classes,) real vector that is 1 at the label ``y`` (an ``sg.labels``) and 0 elsewhere."""
    _labels(y, "one_hot")
    one = Tensor(Elementwise(ScalarFn("one", sp.S.One, 0)), (), "one")
    return Tensor(Scatter(y.op.classes), (one, y), f"one_hot({y.name})")


# ----------------------------------------------------------------------------- losses

def _loss(t: Tensor, prediction: Tensor) -> Tensor:
    """``t`` as a loss of ``prediction``: the Gauss-Newton split point, recorded in the IR."""
    return Tensor(Scored(), (t, prediction), t.name)


def _same(o: Tensor, t: Tensor, what: str) -> None:
    for v in (o, t):
        _full(v, what)
    if o.shape != t.shape:
        raise GraphError(f"{what}: prediction {o.name} {o.shape} and target {t.name} {t.shape} differ")


def mse(o: Tensor, t: Tensor) -> Tensor:
    """Mean over features of (o - t)^2."""
    _same(o, t, "mse")
    return _loss(mean(_apply("sq_err", lambda a, b: (a - b) ** 2, (o, t))), o)


def l1_loss(o: Tensor, t: Tensor) -> Tensor:
    """Mean over features of |o - t|."""
    _same(o, t, "l1_loss")
    return _loss(mean(_apply("abs_err", lambda a, b: sp.Abs(a - b), (o, t))), o)


def huber(o: Tensor, t: Tensor, delta: float = 1.0) -> Tensor:
    """Mean over features of PyTorch's HuberLoss."""
    _same(o, t, "huber")
    if not delta > 0:
        raise GraphError(f"huber: delta must be positive, got {delta!r}")

    def h(a: sp.Expr, b: sp.Expr) -> sp.Expr:
        d = a - b
        return sp.Piecewise((d ** 2 / 2, sp.Abs(d) < delta), (delta * (sp.Abs(d) - delta / 2), True))
    return _loss(mean(_apply("huber", h, (o, t))), o)


def softmax_cross_entropy(o: Tensor, y: Tensor) -> Tensor:
    """-log softmax(o)[y], computed as logsumexp(o) - o[y]."""
    picked = _pick(o, y, "softmax_cross_entropy")
    return _loss(_apply("cross_entropy", lambda a, b: a - b, (logsumexp(o), picked)), o)


def nll(logp: Tensor, y: Tensor) -> Tensor:
    """-logp[y] (pair with log_softmax)."""
    return _loss(-_pick(logp, y, "nll"), logp.logits if logp.logits is not None else logp)


def bce(p: Tensor, t: Tensor) -> Tensor:
    """Mean over features of -(t log p + (1-t) log(1-p)), logs clamped at -100 (PyTorch)."""
    _same(p, t, "bce")
    return _loss(mean(_apply("bce", lambda a, b: -(b * clamped_log(a) + (1 - b) * clamped_log(1 - a)),
                             (p, t))), p)


def bce_with_logits(o: Tensor, t: Tensor) -> Tensor:
    """Mean over features of softplus(o) - t*o: BCE of sigmoid(o), stable for any o."""
    _same(o, t, "bce_with_logits")
    return _loss(mean(_apply("bce_logits", lambda a, b: Softplus(a) - a * b, (o, t))), o)


def hinge(o: Tensor, t: Tensor) -> Tensor:
    """Mean over features of max(0, 1 - t*o), targets +-1."""
    _same(o, t, "hinge")
    return _loss(mean(_apply("hinge", lambda a, b: positive_part(1 - a * b), (o, t))), o)


def multiclass_hinge(o: Tensor, y: Tensor) -> Tensor:
    """sum over j != y of max(0, 1 + o_j - o_y) (the SVM loss; the j = y term is exactly 1)."""
    oy = _pick(o, y, "multiclass_hinge")
    margins = sum(_apply("margin", lambda a, b: positive_part(1 + a - b), (o, oy)))
    return _loss(margins - 1, o)


def kl_div(o: Tensor, p: Tensor) -> Tensor:
    """sum_j p_j (log p_j - log_softmax(o)_j) for target probabilities p."""
    _same(o, p, "kl_div")
    return _loss(sum(_apply("kl", lambda a, b: Xlogy(b, b) - b * a, (log_softmax(o), p))), o)


def l2(w: Tensor) -> Tensor:
    """Sum of squares (no 1/2)."""
    return sum(_apply("square", lambda a: a ** 2, (w,)))


def l1(w: Tensor) -> Tensor:
    """Sum of absolute values."""
    return sum(_apply("abs", sp.Abs, (w,)))
