"""Einsum: every linear contraction (matrix products, sums over axes or over the batch,
outer products, broadcasts), written as a spec over per-sample letters plus ``b``.

The op is multilinear, so its rules need no SymPy: the adjoint with respect
to one operand is the einsum of the output's adjoint with the other operands
(the spec transposed), and the tangent is the same einsum with one operand
replaced by its tangent.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..ir import (BATCH, CONSTANT, CURVED, Assign, Builder, IRError, Linearity, Op, Typed, Value, arg_symbols,
                  display_name)
from .elementwise import add

if TYPE_CHECKING:
    from ..autodiff import Pullback, Pushforward

__all__ = ["Einsum", "einsum", "reduce_to", "parse_spec", "LETTERS"]

#: per-sample letters of generated specs, in order (``b`` is the batch's)
LETTERS = "ijklmnopqrstuvwxyz"
_SPEC = re.compile(r"^[a-z]*(,[a-z]*)*->[a-z]*$")


def parse_spec(spec: str) -> tuple[list[str], str]:
    """``'ij,bj->bi'`` -> (['ij', 'bj'], 'bi'): the one einsum parser."""
    if not _SPEC.match(spec):
        raise IRError(f"malformed einsum spec {spec!r}")
    lhs, out = spec.split("->")
    return lhs.split(","), out


def _adjoint_spec(spec: str, k: int, per_sample: bool, g_batched: bool = False) -> str:
    """Operand ``k``'s adjoint: the output's adjoint (batched also where the output is not, as a
    per-sample Jacobian's cotangent of a parameter-only value) contracted with the others."""
    ins, out = parse_spec(spec)
    new_ins = [(BATCH if g_batched and BATCH not in out else "") + out] + [p for i, p in enumerate(ins) if i != k]
    dst = ins[k]
    if per_sample and BATCH not in dst and any(BATCH in p for p in new_ins):
        dst = BATCH + dst
    return ",".join(new_ins) + "->" + dst


@dataclass(frozen=True)
class Einsum(Op):
    """``spec`` like ``'ij,bj->bi'``; output letters absent from the inputs broadcast to
    ``shape``, the per-sample result's."""

    spec: str
    shape: tuple[int, ...] = ()

    def type(self, args: Sequence[Typed]) -> tuple[tuple[int, ...], bool, str]:
        ins, out = parse_spec(self.spec)
        if len(ins) != len(args):
            raise IRError(f"einsum: spec {self.spec!r} has {len(ins)} operands, got {len(args)}")
        sizes: dict[str, int] = {}
        for letters, a in zip(ins, args):
            dims = ((None,) if a.batched else ()) + a.shape
            if a.kind != "real" or len(letters) != len(dims) or (BATCH in letters) != a.batched:
                raise IRError(f"einsum: operand {a.name} of shape {a.shape} (batched={a.batched}, "
                              f"{a.kind}) does not match {letters!r} in {self.spec!r}")
            for ch, d in zip(letters, dims):
                if d is not None and sizes.setdefault(ch, d) != d:
                    raise IRError(f"einsum: index {ch!r} has sizes {sizes[ch]} and {d} in {self.spec!r}")
        batched = BATCH in out
        if len(out) - batched != len(self.shape) or any(
                sizes.get(ch, d) != d for ch, d in zip(out.replace(BATCH, ""), self.shape)):
            raise IRError(f"einsum: output shape {self.shape} does not match {out!r} in {self.spec!r}")
        return self.shape, batched, "real"

    def simplify(self, b: Builder, args: tuple[Value, ...]) -> Value | tuple[Op, tuple[Value, ...]]:
        """Identity einsums removed; an operand written per sample that the program folded to a
        value for all samples (``0 * x``, a function that ignores its operand) broadcasts over the
        batch: ``b`` leaves its letters, and a sum over the batch of what no sample changes is N
        times it."""
        ins, out = parse_spec(self.spec)
        if any(BATCH in letters and not a.batched for letters, a in zip(ins, args)):
            ins = [letters if a.batched else letters.replace(BATCH, "") for letters, a in zip(ins, args)]
            batched = any(a.batched for a in args)
            folded = Einsum(",".join(ins) + "->" + (out if batched else out.replace(BATCH, "")), self.shape)
            if batched or BATCH in out:
                return folded.simplify(b, args)
            from .elementwise import elementwise   # a sum over the batch of a constant: N times it
            from .leaf import leaf
            total = b.apply(folded, args, "batch_constant")
            a0, a1 = arg_symbols(2)
            return elementwise(b, "batch_total", a0 / a1, (total, leaf(b, "batch_scale", "inv_n", (), False)))
        if len(args) == 1 and ins[0] == out:
            return args[0]
        return self, args

    def vjp(self, pb: Pullback, a: Assign, g: Value) -> None:
        for k, x in enumerate(a.args):
            if not pb.is_active(x):
                continue
            others = a.args[:k] + a.args[k + 1:]
            if any(pb.b.constant_of(o) == 0 for o in others):
                continue
            pb.add(x, einsum(pb.b, f"d_{x.name}", _adjoint_spec(self.spec, k, pb.per_sample, g.batched), (g,) + others,
                             x.shape, note=f"d {a.out.name} / d {x.name}"))

    def jvp(self, pf: Pushforward, a: Assign, tangents: list[Value | None]) -> Value | None:
        parts = [einsum(pf.b, f"t_{a.out.name}", self.spec, a.args[:k] + (t,) + a.args[k + 1:], a.out.shape,
                        note=f"tangent of {a.out.name} through {a.args[k].name}")
                 for k, t in enumerate(tangents) if t is not None]
        return add(pf.b, parts, f"t_{a.out.name}", f"tangent of {a.out.name}") if parts else None

    def linearity(self, a: Assign, args: list[Linearity]) -> Linearity:
        live = [x for x in args if x.degree > 0]
        if not live:
            return CONSTANT
        return live[0] if len(live) == 1 else CURVED   # two varying operands: bilinear

    def evaluate(self, a: Assign, args: list[Any], n: int) -> Any:
        ins, out = parse_spec(self.spec)
        present = [ch for ch in out if any(ch in p for p in ins)]
        val = np.einsum(",".join(ins) + "->" + "".join(present), *args)
        full = ((n,) if BATCH in out else ()) + self.shape   # letters only the output has broadcast
        expand = tuple(i for i, ch in enumerate(out) if ch not in present)
        return np.broadcast_to(np.expand_dims(val, expand) if expand else val, full)

    def format(self, a: Assign, latex: bool) -> str:
        ins, out = parse_spec(self.spec)
        summed = sorted({ch for ls in ins for ch in ls} - set(out))
        if latex:
            def tex(name: str, ls: str) -> str:
                base = r"\mathrm{" + display_name(name, True) + "}"
                return base + (f"_{{{','.join(ls)}}}" if ls else "")
            terms = [tex(x.name, ls) for x, ls in zip(a.args, ins)]
            s = rf"\sum_{{{','.join(summed)}}} " if summed else ""
            return f"{tex(a.out.name, out)} = {s}" + r" \, ".join(terms)
        terms = [f"{x.name}[{','.join(ls)}]" if ls else x.name for x, ls in zip(a.args, ins)]
        lhs = f"{a.out.name}[{','.join(out)}]" if out else a.out.name
        s = f"sum_{''.join(summed)} " if summed else ""
        return f"{lhs} = {s}" + " * ".join(terms)


def einsum(b: Builder, name: str, spec: str, args: tuple[Value, ...], shape: tuple[int, ...],
           note: str = "") -> Value:
    """A contraction; ``shape`` is the per-sample output shape (needed for broadcasts)."""
    return b.apply(Einsum(spec, tuple(shape)), args, name, note)


def reduce_to(b: Builder, g: Value, target: Value, note: str, per_sample: bool = False) -> Value:
    """``g`` (shaped like an op's output) summed down to ``target``'s shape and batching (keeping
    the batch axis when ``per_sample``): the adjoint of a broadcast."""
    keep_batch = target.batched or (per_sample and g.batched)
    if g.shape == target.shape and g.batched == keep_batch:
        return g
    if target.shape not in ((), g.shape):
        raise IRError(f"cannot reduce {g.name} of shape {g.shape} to {target.name}'s {target.shape}")
    letters = LETTERS[:len(g.shape)]
    src = (BATCH if g.batched else "") + letters
    dst = (BATCH if keep_batch else "") + (letters if target.shape == g.shape else "")
    return einsum(b, f"{target.name}_sum", f"{src}->{dst}", (g,), target.shape, note=note)
