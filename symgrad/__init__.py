"""symgrad: networks as SymPy expression graphs, derivatives derived symbolically,
fused Numba kernels generated, cached and inspectable.

>>> import symgrad as sg
>>> x = sg.input("x", 4); t = sg.target("t", 3)
>>> out = sg.dense(sg.dense(x, 8, "tanh", name="l1"), 3, name="l2")
>>> model = sg.compile(sg.mse(out, t), output=out)
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import initializers, optim
from .dsl import (ACTIVATIONS, GraphError, Tensor, abs, bce, bce_with_logits, constant, dense, dot, elementwise, elu,
                  exp, gelu, hinge, huber, identity, input, kl_div, l1, l1_loss, l2, labels, leaky_relu,
                  log, log_softmax, logsumexp, max, mean, mse, multiclass_hinge, nll, one_hot, param, relu,
                  sigmoid, silu, softmax, softmax_cross_entropy, softplus, sqrt, square, sum, swish,
                  tanh, target, ones, zeros)
from .convolution import (avg_pool1d, avg_pool2d, conv, conv1d, conv2d, global_avg_pool, max_pool1d,
                          max_pool2d)
from .gradcheck import gradcheck
from .indexing import concat, flatten, pad, reshape, stack, transpose
from .model import DataError, Model, compile

__all__ = [
    "__version__", "initializers", "optim", "Tensor", "GraphError", "DataError", "Model", "compile", "gradcheck",
    "input", "target", "labels", "param", "constant", "zeros", "ones", "dense", "elementwise", "dot",
    "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu", "silu", "swish", "identity",
    "exp", "log", "sqrt", "abs", "square", "sum", "mean", "max", "logsumexp", "softmax", "log_softmax",
    "one_hot", "mse", "l1_loss", "huber", "softmax_cross_entropy", "nll", "bce", "bce_with_logits", "hinge",
    "multiclass_hinge", "kl_div", "l2", "l1", "ACTIVATIONS",
    "reshape", "flatten", "transpose", "pad", "concat", "stack",
    "conv", "conv1d", "conv2d", "avg_pool1d", "avg_pool2d", "max_pool1d", "max_pool2d", "global_avg_pool",
]
