"""Convolution and pooling layers of the DSL (PyTorch's semantics), built from index maps.

A convolution reads its input's windows with one affine index map,
``win[c, p, q, i, j] = x[c, s*i + d*p - pad, s*j + d*q - pad]`` (0 out of
bounds), and contracts them with the weights in an einsum: the einsum's
rules give its derivatives with respect to the weights, and the map's
transpose (a scatter-add inside each sample) the one with respect to the
input. Groups split the channel axis in the same map. Average pooling is the
same windows summed and scaled (padding counted, as PyTorch's default
``count_include_pad=True``); a max pool takes the windows (padding -inf) with
the kernel axes last and reduces them with argmax and gather, the last axis
first; a global average pool is a mean over the spatial axes.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .dsl import GraphError, Tensor, _activate, _activation, _check_name, _einsum, mean, param
from .dsl import max as dsl_max
from .indexing import index_map, pad, reshape
from .ops.index_map import AxisMap

__all__ = ["conv", "conv1d", "conv2d", "avg_pool1d", "avg_pool2d", "max_pool1d", "max_pool2d", "global_avg_pool"]


def _tuple(v: object, n: int, what: str, name: str, least: int) -> tuple[int, ...]:
    items = (v,) * n if isinstance(v, int) and not isinstance(v, bool) else tuple(v) if isinstance(v, (tuple, list)) else None
    if items is None or len(items) != n or not all(isinstance(k, int) and not isinstance(k, bool) for k in items):
        raise GraphError(f"{name}: {what} must be an int or {n} ints, got {v!r}")
    if any(k < least for k in items):
        raise GraphError(f"{name}: {what} {v!r} must be {'positive' if least else 'non-negative'}")
    return items


def _padding(padding: object, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
             name: str) -> tuple[tuple[int, int], ...]:
    """(before, after) per spatial axis: ``"valid"`` none, ``"same"`` the output as big as the
    input (stride 1; an odd total puts the extra one after, as PyTorch)."""
    if padding == "valid":
        return tuple((0, 0) for _ in kernel)
    if padding == "same":
        if any(s != 1 for s in stride):
            raise GraphError(f"{name}: padding='same' needs stride 1, got stride {stride}")
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in total)
    if isinstance(padding, str):
        raise GraphError(f"{name}: padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    return tuple((p, p) for p in _tuple(padding, len(kernel), "padding", name, 0))


def _windows(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
             pads: tuple[tuple[int, int], ...], groups: int, name: str, fill: float = 0.0,
             window_last: bool = False) -> tuple[Tensor, tuple[int, ...]]:
    """The windows of ``x`` (C, *L) and the output's spatial shape. Axes: (groups, C/groups, *kernel,
    *out), without the group axis when there is one group, and with the kernel axes last when
    ``window_last`` (a max pool reduces them one by one)."""
    c, spatial = x.shape[0], x.shape[1:]
    out = []
    for n, k, s, d, (before, after) in zip(spatial, kernel, stride, dilation, pads):
        span = d * (k - 1) + 1
        if n + before + after < span:
            raise GraphError(f"{name}: kernel {kernel} (dilation {dilation}) is larger than the padded input "
                             f"{tuple(m + b + a for m, (b, a) in zip(spatial, pads))} of {x.name} {x.shape}")
        out.append((n + before + after - span) // s + 1)
    if any(b or a for b, a in pads):   # padded once, so the windows never leave the array: an
        x = pad(x, ((0, 0),) + tuple(pads), value=fill)   # einsum reads them in place (codegen)
        pads = tuple((0, 0) for _ in pads)
    r, cg, lead = len(kernel), c // groups, int(groups > 1)
    inner = tuple(out) + kernel if window_last else kernel + tuple(out)
    shape = ((groups,) if lead else ()) + (cg,) + inner
    at_k, at_o = (lead + 1 + r, lead + 1) if window_last else (lead + 1, lead + 1 + r)

    def unit(pairs: dict[int, int], const: int = 0) -> AxisMap:
        return AxisMap(tuple(pairs.get(j, 0) for j in range(len(shape))), const)
    axes = [unit({0: cg, 1: 1} if lead else {0: 1})]
    for a in range(r):
        axes.append(unit({at_k + a: dilation[a], at_o + a: stride[a]}, -pads[a][0]))
    return index_map(x, shape, axes, fill=fill, name=f"{name}.windows"), tuple(out)


def conv(x: Tensor, W: Tensor, b: Tensor | None = None, stride: int | Sequence[int] = 1,
         padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
         name: str = "conv") -> Tensor:
    """``torch.nn.functional.conv1d/conv2d(x, W, b, ...)`` for one sample: x (C, *L), W (O, C/groups,
    *k), b (O,); 1-d or 2-d by W's rank."""
    for t, what in ((x, "input"), (W, "weight")):
        if not isinstance(t, Tensor) or t.kind != "real":
            raise GraphError(f"{name}: {what} must be a real symgrad Tensor, got {t!r}")
    r = len(W.shape) - 2
    if r not in (1, 2):
        raise GraphError(f"{name}: weight {W.name} of shape {W.shape} is not (O, C/groups, k) or (O, C/groups, kh, kw)")
    if len(x.shape) != r + 1:
        raise GraphError(f"{name}: input {x.name} of shape {x.shape} is not (C, {'L' if r == 1 else 'H, W'}) for a "
                         f"{r}-d convolution with weight {W.shape}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise GraphError(f"{name}: groups must be a positive int, got {groups!r}")
    o, cg = W.shape[0], W.shape[1]
    if x.shape[0] % groups or o % groups or x.shape[0] // groups != cg:
        raise GraphError(f"{name}: {x.shape[0]} input channels of {x.name} do not match weight {W.name} {W.shape} "
                         f"with groups={groups} (needs C/groups = {cg} and O divisible by groups)")
    kernel = W.shape[2:]
    stride_ = _tuple(stride, r, "stride", name, 1)
    dilation_ = _tuple(dilation, r, "dilation", name, 1)
    pads = _padding(padding, kernel, stride_, dilation_, name)
    win, out = _windows(x, kernel, stride_, dilation_, pads, groups, name)
    og = o // groups
    wl, pl = "pq"[:r], "ij"[:r]   # window and output-position letters
    if groups > 1:
        Wg = reshape(W, (groups, og, cg) + kernel)
        y = _einsum(f"{name}.z", f"goc{wl},gc{wl}{pl}->go{pl}", (Wg, win), (groups, og) + out)
        y = reshape(y, (o,) + out)
    else:
        y = _einsum(f"{name}.z", f"oc{wl},c{wl}{pl}->o{pl}", (W, win), (o,) + out)
    if b is not None:
        if not isinstance(b, Tensor) or b.shape != (o,):
            raise GraphError(f"{name}: bias must be a ({o},) tensor, got {getattr(b, 'shape', b)!r}")
        bb = _einsum(f"{name}.b_bcast", f"o->o{pl}", (b,), (o,) + out)
        y = y + bb
        y.name = f"{name}.a"
    return y


def _layer(x: Tensor, r: int, out_channels: int, kernel_size: int | Sequence[int], stride: object,
           padding: object, dilation: object, groups: int, bias: bool, activation: str | Callable | None,
           name: str) -> Tensor:
    _check_name(name, f"conv{r}d layer")
    if not isinstance(x, Tensor) or len(x.shape) != r + 1:
        raise GraphError(f"conv{r}d {name!r}: input must be (C, {'L' if r == 1 else 'H, W'}), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(out_channels, int) or isinstance(out_channels, bool) or out_channels < 1:
        raise GraphError(f"conv{r}d {name!r}: out_channels must be a positive int, got {out_channels!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or x.shape[0] % groups:
        raise GraphError(f"conv{r}d {name!r}: groups={groups!r} must divide the {x.shape[0]} input channels")
    fn = _activation(activation, f"conv{r}d {name!r}")
    kernel = _tuple(kernel_size, r, "kernel_size", f"conv{r}d {name!r}", 1)
    fan_in = x.shape[0] // groups * math.prod(kernel)
    bound = 1.0 / math.sqrt(fan_in)   # PyTorch: kaiming_uniform(a=sqrt(5)) for W, the same bound for b

    def init(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(-bound, bound, shape)
    W = param(f"{name}.W", (out_channels, x.shape[0] // groups) + kernel, init=init)
    b = param(f"{name}.b", out_channels, init=init) if bias else None
    y = conv(x, W, b, stride=stride, padding=padding, dilation=dilation, groups=groups, name=name)
    return _activate(y, fn, f"conv{r}d {name!r}", name)


def conv1d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
           padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
           bias: bool = True, activation: str | Callable | None = None, name: str = "conv") -> Tensor:
    """A 1-d convolution layer on x (C, L): params ``name.W`` (O, C/groups, k) and ``name.b`` (O,),
    PyTorch's default init (uniform in ±1/sqrt(fan_in))."""
    return _layer(x, 1, out_channels, kernel_size, stride, padding, dilation, groups, bias, activation, name)


def conv2d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
           padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
           bias: bool = True, activation: str | Callable | None = None, name: str = "conv") -> Tensor:
    """A 2-d convolution layer on x (C, H, W): params ``name.W`` (O, C/groups, kh, kw) and
    ``name.b`` (O,), PyTorch's default init (uniform in ±1/sqrt(fan_in))."""
    return _layer(x, 2, out_channels, kernel_size, stride, padding, dilation, groups, bias, activation, name)


def _pool_windows(x: Tensor, r: int, kernel_size: object, stride: object, padding: object, what: str,
                  fill: float, window_last: bool = False) -> tuple[Tensor, tuple[int, ...], tuple[int, ...]]:
    if not isinstance(x, Tensor) or x.kind != "real" or len(x.shape) != r + 1:
        raise GraphError(f"{what}: input must be a real (C, {'L' if r == 1 else 'H, W'}) tensor, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    kernel = _tuple(kernel_size, r, "kernel_size", what, 1)
    stride_ = kernel if stride is None else _tuple(stride, r, "stride", what, 1)
    pads = tuple((p, p) for p in _tuple(padding, r, "padding", what, 0))
    if any(p > k // 2 for (p, _), k in zip(pads, kernel)):
        raise GraphError(f"{what}: padding {padding!r} must be at most half the kernel {kernel} (as PyTorch)")
    win, out = _windows(x, kernel, stride_, (1,) * r, pads, 1, what, fill, window_last)
    return win, kernel, out


def _avg_pool(x: Tensor, r: int, kernel_size: object, stride: object, padding: object) -> Tensor:
    what = f"avg_pool{r}d"
    win, kernel, out = _pool_windows(x, r, kernel_size, stride, padding, what, 0.0)
    wl, pl = "pq"[:r], "ij"[:r]
    total = _einsum(f"{what}.sum", f"c{wl}{pl}->c{pl}", (win,), (x.shape[0],) + out)
    return total * (1.0 / math.prod(kernel))


def avg_pool1d(x: Tensor, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: int | Sequence[int] = 0) -> Tensor:
    """The mean of each window of x (C, L); stride defaults to kernel_size; padding counts as 0."""
    return _avg_pool(x, 1, kernel_size, stride, padding)


def avg_pool2d(x: Tensor, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: int | Sequence[int] = 0) -> Tensor:
    """The mean of each window of x (C, H, W); stride defaults to kernel_size; padding counts as 0."""
    return _avg_pool(x, 2, kernel_size, stride, padding)


def _max_pool(x: Tensor, r: int, kernel_size: object, stride: object, padding: object) -> Tensor:
    win, _, _ = _pool_windows(x, r, kernel_size, stride, padding, f"max_pool{r}d", float("-inf"), window_last=True)
    for _ in range(r):   # the last kernel axis, then the one before: the first largest in C order
        win = dsl_max(win, axis=-1)
    return win


def max_pool1d(x: Tensor, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: int | Sequence[int] = 0) -> Tensor:
    """The largest element of each window of x (C, L); padding acts as -inf; the gradient goes to
    the first largest element of each window."""
    return _max_pool(x, 1, kernel_size, stride, padding)


def max_pool2d(x: Tensor, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: int | Sequence[int] = 0) -> Tensor:
    """The largest element of each window of x (C, H, W); stride defaults to kernel_size; padding
    acts as -inf; the gradient goes to the first largest element of each window (C order)."""
    return _max_pool(x, 2, kernel_size, stride, padding)


def global_avg_pool(x: Tensor) -> Tensor:
    """The mean over the spatial axes of x (C, *spatial): shape (C,)."""
    if not isinstance(x, Tensor) or x.kind != "real" or len(x.shape) < 2:
        raise GraphError(f"global_avg_pool: input must be a real (C, ...) tensor with spatial axes, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    return mean(x, axis=tuple(range(1, len(x.shape))))
