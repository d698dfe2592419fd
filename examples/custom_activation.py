"""A custom activation (any SymPy expression): SymPy derives its derivatives, symgrad prints them."""
from __future__ import annotations

import numpy as np
import sympy as sp

import symgrad as sg

# a smooth, non-monotone activation and a custom two-argument loss (log-cosh)
snake = sg.elementwise("snake", lambda z: z + sp.sin(z) ** 2)
logcosh = sg.elementwise("logcosh", lambda o, y: sp.log(sp.cosh(o - y)))

x = sg.input("x", 1)
t = sg.target("t", 1)
h = sg.dense(x, 16, activation=snake, name="l1")
o = sg.dense(h, 1, name="out")
model = sg.compile(sg.mean(logcosh(o, t)), output=o)

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(256, 1))
    T = np.sin(2 * X)
    theta = model.init(seed=1)
    print(model.derivation())
    print("gradcheck:", sg.gradcheck(model, theta, X, T))
