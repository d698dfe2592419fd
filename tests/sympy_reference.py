"""An independent reference: the DSL graph inlined into whole SymPy expressions.

For tiny sizes, every per-sample loss is built as one SymPy expression in the
parameter symbols (data substituted as numbers), differentiated with
sympy.diff and evaluated in high precision. It shares nothing with symgrad's
IR, autodiff or code generator: only the graph and each op's definition.
"""
from __future__ import annotations


import numpy as np
import sympy as sp

from symgrad.dsl import Tensor
from symgrad.ir import arg_symbols


def _walk(t: Tensor, env: dict, memo: dict):
    if id(t) in memo:
        return memo[id(t)]
    args = [_walk(a, env, memo) for a in t.args]
    kind = type(t.op).__name__
    if kind == "Leaf":
        val = env[t.name]
    elif kind == "Elementwise":
        expr = t.op.fn.expr
        syms = arg_symbols(len(args))
        shape = t.shape

        def at(a, ti, idx):
            return a[idx] if ti.shape else a[()]
        val = np.empty(shape, dtype=object)
        for idx in np.ndindex(*shape) if shape else [()]:
            val[idx] = expr.xreplace({s: at(a, ti, idx) for s, a, ti in zip(syms, args, t.args)})
    elif kind == "Einsum":
        spec = t.op.spec.replace("b", "")
        val = np.array(np.einsum(spec, *args), dtype=object) if spec else args[0]
    elif kind == "ArgMax":
        v = args[0]
        val = np.array(int(np.argmax([float(e.subs(env["__point__"])) for e in v])), dtype=object)
    elif kind == "Gather":
        v, idx = args
        val = np.array(v[int(idx[()])], dtype=object)
    elif kind == "Scatter":
        x, idx = args
        val = np.array([x[()] if j == int(idx[()]) else sp.S.Zero for j in range(t.op.size)], dtype=object)
    elif kind in ("Detach", "Scored"):   # Scored: a loss, marking the prediction it scores
        val = args[0]
    else:
        raise ValueError(kind)
    val = np.asarray(val, dtype=object)
    memo[id(t)] = val
    return val


def _objective(model, loss: Tensor, theta: np.ndarray, data: dict[str, np.ndarray]):
    """The objective as one SymPy expression in the parameter symbols, and the point."""
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
    return total / n, syms, point


def _evaluate(exprs: list, syms: list, point: dict) -> list[float]:
    """Evaluate in 30-digit precision, the stable functions in their textbook forms."""
    from symgrad.functions import Sigmoid, Softplus, Xlogy
    plain = {Sigmoid: lambda a: 1 / (1 + sp.exp(-a)), Softplus: lambda a: sp.log(1 + sp.exp(a)),
             Xlogy: lambda a, b: a * sp.log(b)}
    for cls, fn in plain.items():
        exprs = [e.replace(cls, fn) for e in exprs]
    # kinks (relu'', |x|'') contribute nothing away from the kink itself
    exprs = [e.replace(lambda x: isinstance(x, sp.DiracDelta), lambda x: sp.S.Zero) for e in exprs]
    import mpmath
    with mpmath.workdps(30):
        f = sp.lambdify(syms, exprs, modules=["mpmath"])
        return [float(v) for v in f(*[point[s] for s in syms])]


def reference_value_and_grad(model, loss: Tensor, theta: np.ndarray, data: dict[str, np.ndarray]):
    """(objective, gradient) of ``loss`` by whole-expression SymPy differentiation."""
    J, syms, point = _objective(model, loss, theta, data)
    vals = _evaluate([J] + [sp.diff(J, s) for s in syms], syms, point)
    return vals[0], np.array(vals[1:])


def reference_curvature(model, loss: Tensor, theta: np.ndarray, data: dict[str, np.ndarray],
                        u: np.ndarray, v: np.ndarray) -> float:
    """u^T H v: the mixed second derivative of J(theta + s u + r v) at s = r = 0, by
    whole-expression SymPy differentiation (two derivatives, whatever P is). With random u
    and v it pins the whole Hessian down: a wrong HVP entry changes it almost surely."""
    J, syms, point = _objective(model, loss, theta, data)
    s_, r_ = sp.symbols("s_ r_", real=True)
    moved = J.xreplace({p: p + s_ * sp.Float(float(ui), 30) + r_ * sp.Float(float(vi), 30)
                        for p, ui, vi in zip(syms, u, v)})
    mixed = sp.diff(moved, s_, r_).xreplace({s_: sp.S.Zero, r_: sp.S.Zero})
    return _evaluate([mixed], syms, point)[0]
