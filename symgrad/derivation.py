"""Pretty-printing of programs: the derivation a user reads (text and LaTeX)."""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .ir import BATCH, ArgMax, Assign, Detach, Einsum, Elementwise, Gather, Leaf, Program, Scatter, arg_symbols

__all__ = ["Derivation", "format_assign"]


def _idx(v_shape: tuple[int, ...], batched: bool, letters: str) -> str:
    parts = ([BATCH] if batched else []) + list(letters[:len(v_shape)])
    return f"[{','.join(parts)}]" if parts else ""


def _einsum_text(a: Assign, latex: bool) -> str:
    ins, out = a.op.spec.split("->")
    summed = sorted({ch for ls in ins.split(",") for ch in ls} - set(out))
    if latex:
        def tex(name: str, ls: str) -> str:
            base = r"\mathrm{" + name.replace("_", r"\_") + "}"
            return base + (f"_{{{','.join(ls)}}}" if ls else "")
        terms = [tex(x.name, ls) for x, ls in zip(a.args, ins.split(","))]
        s = rf"\sum_{{{','.join(summed)}}} " if summed else ""
        return f"{tex(a.out.name, out)} = {s}" + r" \, ".join(terms)
    terms = [f"{x.name}[{','.join(ls)}]" if ls else x.name for x, ls in zip(a.args, ins.split(","))]
    lhs = f"{a.out.name}[{','.join(out)}]" if out else a.out.name
    s = f"sum_{''.join(summed)} " if summed else ""
    return f"{lhs} = {s}" + " * ".join(terms)


def format_assign(a: Assign, latex: bool = False) -> str:
    """One assignment as a line of math."""
    op, out = a.op, a.out
    name = (lambda n: n.replace("_", r"\_")) if latex else (lambda n: n)
    if isinstance(op, Leaf):
        what = f"{op.role} {op.label!r}" if op.role != "batch_scale" else "1/N (mean over the batch)"
        shape = f" shape {out.shape}" if out.shape else ""
        per = ", per sample" if out.batched else ""
        return (rf"\text{{{name(out.name)}: {what}{shape}{per}}}" if latex
                else f"{out.name}: {what}{shape}{per}")
    if isinstance(op, Elementwise):
        syms = arg_symbols(len(a.args))
        if latex:
            names = {s: r"\mathrm{" + x.name.replace("_", r"\_") + "}" for s, x in zip(syms, a.args)}
            lhs = r"\mathrm{" + out.name.replace("_", r"\_") + "}"
            return f"{lhs} = {sp.latex(op.fn.expr, symbol_names=names)}"
        sub = {s: sp.Symbol(x.name + _idx(x.shape, x.batched, "ij")) for s, x in zip(syms, a.args)}
        return f"{out.name}{_idx(out.shape, out.batched, 'ij')} = {sp.sstr(op.fn.expr.xreplace(sub))}"
    if isinstance(op, Einsum):
        return _einsum_text(a, latex)
    if isinstance(op, Gather):
        return f"{name(out.name)} = {name(a.args[0].name)}[{name(a.args[1].name)}]"
    if isinstance(op, Scatter):
        return f"{name(out.name)} = onehot({name(a.args[1].name)}, {op.size}) * {name(a.args[0].name)}"
    if isinstance(op, ArgMax):
        return f"{name(out.name)} = argmax({name(a.args[0].name)})"
    if isinstance(op, Detach):
        return f"{name(out.name)} = stop_gradient({name(a.args[0].name)})"
    return f"{out.name} = {op}"  # pragma: no cover


@dataclass(frozen=True)
class Derivation:
    """A program as the user reads it: ``str()`` gives text, ``.latex()`` an align block.

    ``forward`` and ``adjoint`` name the values of the forward and the gradient
    programs; the listing is headed forward / backward / tangents accordingly.
    """

    title: str
    program: Program
    forward: frozenset[str] | set[str] = frozenset()
    adjoint: frozenset[str] | set[str] = frozenset()

    def _section(self, a: Assign) -> str:
        if a.out.name in self.forward:
            return "# forward"
        if a.out.name in self.adjoint:
            return "# backward (adjoints)"
        return "# tangents (forward over reverse: the R-operator)"

    def __str__(self) -> str:
        lines = [f"# {self.title}"]
        section = ""
        for a in self.program.body:
            head = self._section(a)
            if head != section:
                lines.append(head)
                section = head
            note = f"    # {a.note}" if a.note and not isinstance(a.op, Leaf) else ""
            lines.append(format_assign(a) + note)
        lines.append("# outputs: " + ", ".join(f"{k} = {v.name}" for k, v in self.program.outputs))
        return "\n".join(lines)

    __repr__ = __str__

    def latex(self) -> str:
        rows = [format_assign(a, latex=True) for a in self.program.body]
        return "\\begin{align*}\n" + " \\\\\n".join(r.replace(" = ", " &= ", 1) for r in rows) + \
            "\n\\end{align*}"
