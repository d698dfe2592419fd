"""A LeNet-style CNN on scikit-learn's 8x8 digits: declared, derived, inspected, then trained with
Adam and with a second-order method (Newton-CG on Gauss-Newton products).

    python examples/lenet.py          # needs scikit-learn (pip install -e ".[demo]")
"""
from __future__ import annotations

import time

import numpy as np

import symgrad as sg
from symgrad.harness.problems import dataset

(X, Y), (Xh, Yh) = dataset("digits")                 # standardized features, 80/20 split
X, Xh = X.reshape(-1, 1, 8, 8), Xh.reshape(-1, 1, 8, 8)

img, y = sg.input("img", (1, 8, 8)), sg.labels("y", 10)
h = sg.conv2d(img, 6, 3, padding=1, activation="relu", name="c1")     # (6, 8, 8); c1.W (6, 1, 3, 3)
h = sg.max_pool2d(h, 2)                                              # (6, 4, 4)
h = sg.conv2d(h, 16, 3, padding=1, activation="relu", name="c2")     # (16, 4, 4)
h = sg.avg_pool2d(h, 2)                                              # (16, 2, 2)
z = sg.dense(sg.flatten(h), 32, "relu", name="f1")                   # flatten in C order, as torch
out = sg.dense(z, 10, name="f2")
model = sg.compile(sg.softmax_cross_entropy(out, y), output=out)


def accuracy(theta: np.ndarray, x: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(theta, x), axis=1) == labels))


if __name__ == "__main__":
    print(model)
    text = str(model.derivation())
    print("\n".join(text.splitlines()[:24]), "\n...")   # the forward program: windows, einsums, pools
    src = model.source("value_and_grad")
    at = src.find("def loop")
    print(src[at:at + 1400], "...\n")
    theta0 = model.init(seed=0)
    t0 = time.perf_counter()
    f, g = model.value_and_grad(theta0, X, Y)
    print(f"first value_and_grad (compiles): {time.perf_counter() - t0:.1f} s, loss {f:.4f}")
    print(f"gradient check: {sg.gradcheck(model, theta0, X[:32], Y[:32]):.2e}")
    for method, opts in (("adam", {"lr": 3e-3, "batch_size": 64, "max_iter": 30}),
                         ("newton_cg", {"curvature": "gnvp", "max_iter": 30})):
        res = sg.optim.minimize(model, theta0, X, Y, method=method, **opts)
        print(f"{method:10s} loss {res.loss:.4f}  train acc {accuracy(res.theta, X, Y):.3f}  "
              f"held-out acc {accuracy(res.theta, Xh, Yh):.3f}  {res.time:.1f} s  {res.counts}")
