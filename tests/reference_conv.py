"""Direct NumPy convolutions and pools (loops over the kernel taps, no symgrad), and central
differences: the independent references of the tensor and convolution tests."""
from __future__ import annotations

import itertools

import numpy as np


def np_windows(x: np.ndarray, kernel, stride, dilation, pads, fill=0.0):
    """{tap: x[:, :, s*i + d*tap - pad]} over the output positions, for x (N, C, *L)."""
    xp = np.pad(x, [(0, 0), (0, 0)] + list(pads), constant_values=fill)
    spatial = x.shape[2:]
    out = [(n + b + a - d * (k - 1) - 1) // s + 1 for n, k, s, d, (b, a) in zip(spatial, kernel, stride, dilation, pads)]
    taps = {}
    for tap in itertools.product(*(range(k) for k in kernel)):
        sl = tuple(slice(d * t, d * t + s * (o - 1) + 1, s) for t, s, d, o in zip(tap, stride, dilation, out))
        taps[tap] = xp[(slice(None), slice(None)) + sl]
    return taps


def np_conv(x, W, b, stride, pads, dilation, groups=1):
    o, cg = W.shape[:2]
    taps = np_windows(x, W.shape[2:], stride, dilation, pads)
    out = 0
    for tap, win in taps.items():
        parts = [np.einsum("oc,nc...->no...", W[g * (o // groups):(g + 1) * (o // groups), :, *tap],
                           win[:, g * cg:(g + 1) * cg]) for g in range(groups)]
        out = out + np.concatenate(parts, axis=1)
    if b is not None:
        out = out + b.reshape((1, -1) + (1,) * (W.ndim - 2))
    return out


def np_avg_pool(x, kernel, stride, pad):
    taps = np_windows(x, kernel, stride, (1,) * len(kernel), [(pad, pad)] * len(kernel))
    return sum(taps.values()) / np.prod(kernel)


def np_max_pool(x, kernel, stride, pad):
    taps = np_windows(x, kernel, stride, (1,) * len(kernel), [(pad, pad)] * len(kernel), -np.inf)
    return np.max(np.stack(list(taps.values())), axis=0)


def central(f, theta, eps=1e-6):
    """Central differences of ``f`` in each coordinate of ``theta`` (the last axis of the result)."""
    cols = []
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = eps
        cols.append((f(theta + e) - f(theta - e)) / (2 * eps))
    return np.stack(cols, axis=-1)
