"""Inspecting a kernel: generated source, derivation (text and LaTeX), LLVM IR, assembly, stats.

Also usable from the command line:
    symgrad inspect examples/inspect_kernel.py:model --show source
"""
from __future__ import annotations

import numpy as np

import symgrad as sg

x = sg.input("x", 8)
y = sg.labels("y", 3)
logits = sg.dense(sg.dense(x, 16, "relu", name="hidden"), 3, name="logits")
model = sg.compile(sg.softmax_cross_entropy(logits, y), output=logits)

if __name__ == "__main__":
    print(model.source("value_and_grad"))
    print(model.derivation())
    print(model.derivation().latex()[:400], "...")
    llvm = model.llvm("value_and_grad")
    asm = model.asm("value_and_grad")
    print(f"LLVM IR: {llvm.count(chr(10))} lines; assembly: {asm.count(chr(10))} lines")
    theta = model.init(0)
    X = np.random.default_rng(0).normal(size=(64, 8))
    Y = np.arange(64) % 3
    model.value_and_grad(theta, X, Y)
    print(model.stats)
