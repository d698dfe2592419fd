"""Quickstart: a small MLP declared in the DSL, its derivation, its kernel, a few gradient steps."""
from __future__ import annotations

import numpy as np
import sympy as sp

import symgrad as sg

x = sg.input("x", 4)
t = sg.target("t", 3)
W = sg.param("W", (8, 4), init="glorot_uniform")
b = sg.param("b", 8, init="zeros")
h = sg.tanh(W @ x + b)
h2 = sg.dense(h, 3, activation=sg.relu, name="fc2")
mish = sg.elementwise("mish", lambda z: z * sp.tanh(sp.log(1 + sp.exp(z))))
out = mish(h2)
loss = sg.mse(out, t) + 1e-4 * sg.l2(W)
model = sg.compile(loss, output=out)

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 4))
    T = np.tanh(X[:, :3] * 0.5) + 0.1
    theta = model.init(seed=0)
    print(model)
    print(model.derivation())
    print(model.source("value_and_grad")[:1500], "...\n")
    print(f"gradient check (max relative error): {sg.gradcheck(model, theta, X, T):.2e}")
    for step in range(201):
        J, g = model.value_and_grad(theta, X, T)
        if step % 50 == 0:
            print(f"step {step:4d}  loss {J:.6f}  |grad| {np.linalg.norm(g):.3e}")
        theta -= 0.5 * g
    print("prediction for the first sample:", model.predict(theta, X[:1]))
    print("stats:", model.stats["stages"], model.stats["cache"])
