"""Pretty-printing of programs: the derivation a user reads (text and LaTeX)."""
from __future__ import annotations

from dataclasses import dataclass

from .ir import Assign, Program

__all__ = ["Derivation", "format_assign"]


def format_assign(a: Assign, latex: bool = False) -> str:
    """One assignment as a line of math (each op prints itself: :meth:`symgrad.ir.Op.format`)."""
    return a.op.format(a, latex)


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
            note = f"    # {a.note}" if a.note and not a.op.is_leaf() else ""
            lines.append(format_assign(a) + note)
        lines.append("# outputs: " + ", ".join(f"{k} = {v.name}" for k, v in self.program.outputs))
        return "\n".join(lines)

    __repr__ = __str__

    def latex(self) -> str:
        rows = [format_assign(a, latex=True) for a in self.program.body]
        return "\\begin{align*}\n" + " \\\\\n".join(r.replace(" = ", " &= ", 1) for r in rows) + \
            "\n\\end{align*}"
