"""An independent reference: the DSL graph inlined into whole SymPy expressions.

For tiny sizes, every per-sample loss is built as one SymPy expression in the
parameter symbols (data substituted as numbers), differentiated with
sympy.diff and evaluated in high precision. It shares nothing with symgrad's
IR, autodiff or code generator: only the graph and each op's definition.
"""
from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from symgrad.dsl import Tensor
from symgrad.ir import arg_symbols


def _walk(t: Tensor, env: dict, memo: dict):
    if id(t) in memo:
        return memo[id(t)]
    args = [_walk(a, env, memo) for a in t.args]
    if t.kind == "leaf":
        val = env[t.name]
    elif t.kind == "elementwise":
        _, expr = t.payload
        syms = arg_symbols(len(args))
        shape = t.shape

        def at(a, ti, idx):
            return a[idx] if ti.shape else a[()]
        val = np.empty(shape, dtype=object)
        for idx in np.ndindex(*shape) if shape else [()]:
            val[idx] = expr.xreplace({s: at(a, ti, idx) for s, a, ti in zip(syms, args, t.args)})
    elif t.kind == "einsum":
        spec = t.payload.replace("b", "")
        val = np.array(np.einsum(spec, *args), dtype=object) if spec else args[0]
    elif t.kind == "argmax":
        v = args[0]
        val = np.array(int(np.argmax([float(e.subs(env["__point__"])) for e in v])), dtype=object)
    elif t.kind == "gather":
        v, idx = args
        val = np.array(v[int(idx[()])], dtype=object)
    elif t.kind == "detach":
        val = args[0]
    else:
        raise ValueError(t.kind)
    val = np.asarray(val, dtype=object)
    memo[id(t)] = val
    return val


def reference_value_and_grad(model, loss: Tensor, theta: np.ndarray, data: dict[str, np.ndarray]):
    """(objective, gradient) of ``loss`` by whole-expression SymPy differentiation."""
    sig = model.signature
    syms, point, env = [], {}, {}
    for name, shape, off, _ in sig.params:
        arr = np.empty(shape, dtype=object)
        for k, idx in enumerate(np.ndindex(*shape) if shape else [()]):
            s = sp.Symbol(f"p{off + k}", real=True)
            arr[idx] = s
            syms.append(s)
            point[s] = sp.Float(float(theta[off + k]), 30)
        env[name] = arr
    n = next(iter(data.values())).shape[0]
    total = sp.S.Zero
    for i in range(n):
        e = dict(env)
        e["__point__"] = point
        for name, role, shape, _ in sig.data:
            row = data[name][i]
            if role == "labels":
                e[name] = np.array(int(row), dtype=object)
            else:
                e[name] = np.array([sp.Float(float(v), 30) for v in np.ravel(row)], dtype=object).reshape(shape)
        total += _walk(loss, e, {})[()]
    J = total / n
    # evaluate in 30-digit precision; the stable functions in their textbook forms
    from symgrad.functions import Sigmoid, Softplus, Xlogy
    plain = {Sigmoid: lambda a: 1 / (1 + sp.exp(-a)), Softplus: lambda a: sp.log(1 + sp.exp(a)),
             Xlogy: lambda a, b: a * sp.log(b)}
    exprs = [J] + [sp.diff(J, s) for s in syms]
    for cls, fn in plain.items():
        exprs = [e.replace(cls, fn) for e in exprs]
    import mpmath
    with mpmath.workdps(30):
        f = sp.lambdify(syms, exprs, modules=["mpmath"])
        vals = f(*[point[s] for s in syms])
    return float(vals[0]), np.array([float(v) for v in vals[1:]])
