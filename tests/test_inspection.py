"""Inspection: source, derivation, LLVM IR, assembly, stats, and the command line."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from codegen.printer import NumbaPrinter, PrintError
from symgrad.cli import main


@pytest.fixture(scope="module")
def model():
    x = sg.input("x", 3)
    y = sg.labels("y", 2)
    o = sg.dense(sg.dense(x, 4, "tanh", name="hidden"), 2, name="logits")
    return sg.compile(sg.softmax_cross_entropy(o, y), output=o)


def test_source_is_readable(model):
    src = model.source("value_and_grad")
    assert "def value_and_grad(" in src and "def value_and_grad_chunks(" in src
    assert "hidden_W = view(theta, " in src          # names from the user's graph
    assert re.search(r"# tanh\w* = tanh: tanh\(a0\)", src)     # the SymPy expression behind a line
    assert re.search(r"1\.0 - \((tanh\w*)\[r, i\]\*\1\[r, i\]\)", src)   # tanh' from the stored output
    assert "def predict(" in model.source("predict") or "def predict_chunks(" in model.source("predict")
    # each function says what it does: the finish carries the kind's own docstring
    assert re.search(r'def value_and_grad\(.*\n    """Objective and its gradient', src)
    assert re.search(r'def value_and_grad_chunks\(.*\n    """Chunks c0\.\.c1 of value_and_grad', src)
    with pytest.raises(ValueError, match="unknown kernel kind"):
        model.source("nope")


def test_derivation_text_and_latex(model):
    d = model.derivation()
    text = str(d)
    assert "# backward (adjoints)" in text and "d_hidden_W" in text
    assert d.latex().startswith("\\begin{align*}")


def test_llvm_and_asm(model):
    assert "define" in model.llvm("value_and_grad")
    assert len(model.asm("loss")) > 100


def test_stats(model):
    theta = model.init(0)
    model.value_and_grad(theta, np.zeros((4, 3)), np.array([0, 1, 0, 1]))
    st = model.stats
    assert st["ops_after_cse"] <= st["ops_before_cse"] + st["forward_ops"]
    assert set(st["stages"]) == {"program", "derivatives", "lower", "emit", "cache_import"}
    from codegen.lower import PASSES
    passes = st["lower_passes"]   # each pass of the lowering, timed, within the lowering's time
    assert tuple(passes) == PASSES and all(t >= 0 for t in passes.values())
    assert sum(passes.values()) <= st["stages"]["lower"]
    assert st["kernels_compiled"]["value_and_grad"]["numba_cache"] in ("hit", "miss")


def test_printer_rules():
    a = sp.Symbol("a", real=True)
    p = NumbaPrinter("float32")
    assert p.doprint_expr(a ** 2 + sp.Rational(1, 2)) == "(a*a) + np.float32(0.5)"
    assert "if a > 0" in p.doprint_expr(sp.Heaviside(a))
    with pytest.raises(PrintError, match="zeta"):
        p.doprint_expr(sp.zeta(a))


def test_cli(tmp_path, capsys):
    f = tmp_path / "net.py"
    f.write_text("import symgrad as sg\nx = sg.input('x', 2)\nt = sg.target('t', 1)\n"
                 "loss = sg.mse(sg.dense(x, 1, name='lin'), t)\n")
    assert main(["inspect", f"{f}:loss", "--show", "derivation"]) == 0
    assert "d_lin_W" in capsys.readouterr().out
    assert main(["inspect", str(f), "--show", "source"]) == 0
    assert "def value_and_grad" in capsys.readouterr().out
    assert main(["cache", "info"]) == 0
    out = subprocess.run([sys.executable, "-m", "symgrad.cli", "inspect", f"{f}:nothing"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "defines no 'nothing'" in out.stderr
