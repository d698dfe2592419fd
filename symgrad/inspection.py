"""Inspection of a model's kernels: generated source, derivation, LLVM IR, assembly, PTX.

A mixin of :class:`symgrad.model.Model`: these methods read the model's
groups and lowered kinds and compile uncached copies where Numba's cache
holds no IR to show.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .derivation import Derivation
from .kinds import FLAT_ARRAYS, KIND_SPECS
from .names import OUTLINED, PART_TABLE, PART_TABLE_LOCAL

__all__ = ["Inspection"]


class Inspection:
    """``source``, ``derivation``, ``llvm``, ``asm``, ``ptx`` of a compiled model."""

    def source(self, kind: str = "value_and_grad") -> str:
        """The generated Numba source of one kind's kernels (``kind`` in KINDS), after the loop
        and part functions they call, or 'module' / 'second_order_module' for a whole generated module."""
        if kind == "module":
            return self._group("first").source
        if kind == "second_order_module":
            return self._group("second").source
        self._check_kind(kind)
        import inspect
        module = self._group(KIND_SPECS[kind].group).module
        names = [k.name for k in self._lowered(kind).kernels]
        text = [inspect.getsource(getattr(getattr(module, n), "py_func", getattr(module, n))) for n in names]
        # the functions they call (codegen.outline, codegen.parts), and those these call, first,
        # in the module's order
        called: set[str] = set()
        todo = list(text)
        while todo:
            for n in set(re.findall(r"\b(\w+)\(", todo.pop())) - called:
                if OUTLINED.fullmatch(n) and hasattr(module, n):
                    called.add(n)
                    todo.append(inspect.getsource(getattr(module, n).py_func))
        helpers = [n for n in vars(module) if n in called]
        parts = [inspect.getsource(getattr(module, n).py_func) for n in helpers] + text   # host code: plain
        table = re.search(rf"^# {PART_TABLE}\[q\].*?\], dtype=np\.int64\)$", self._group(KIND_SPECS[kind].group).source,
                          re.M | re.S)
        if table and any(PART_TABLE_LOCAL in t for t in parts):   # the integers the part calls read
            parts.insert(0, table.group(0))
        return "\n\n".join(parts)

    def derivation(self, kind: str = "value_and_grad") -> Derivation:
        """The derived program of a kernel kind: forward assignments, adjoints, tangents;
        print it or call .latex()."""
        self._check_kind(kind)
        spec = KIND_SPECS[kind]
        g = self._group(spec.group)
        prog = g.programs[spec.program]
        keys = tuple(k for k, _ in prog.outputs if k.split(":")[0] in spec.outputs)
        what = {"forward": "forward program", "gradient": "gradient by reverse accumulation",
                "curvature": "forward over reverse (R-operator) on the adjoint program",
                "jacobian": "per-sample reverse accumulation from the output"}[spec.program]
        if kind == "gnvp":
            what = "Gauss-Newton: tangents with the network's curvature dropped"
        fwd = {a.out.name for a in self._forward.program.body}
        adj = {a.out.name for a in self._adjoint.program.body}
        return Derivation(f"{self.title}: {kind}, {what}", prog.pruned(keys), fwd, adj)

    def _example_args(self, kind: str, finish: bool = False) -> list[Any]:
        """Arguments of the kind's per-chunk kernel (or of its finish, the only kernel of kinds
        without per-sample work), typed as a call would type them: what inspection compiles for."""
        spec, low = KIND_SPECS[kind], self._lowered(kind)
        n, p, ft = 3, self.n_params, self.dtype
        args: list[Any] = [np.zeros(p, dtype=ft)] + ([np.zeros(p, dtype=ft)] if spec.tangent else [])
        for name in self._reads[spec.data]:
            sp_ = self._specs[name]
            args.append(np.zeros(n, np.int64) if sp_.role == "labels"
                        else np.zeros((n,) + sp_.shape, dtype=ft))
        if kind == "jacobian":
            args.append(np.zeros((n,) + self._output_shape, dtype=ft))
        if low.chunks is not None and not finish:
            if kind == "predict":
                args.append(np.zeros((n,) + self._output_shape, dtype=ft))
            elif kind == "jacobian":
                args.append(np.zeros((n, p), dtype=ft))
            if self.backend == "cpu" or low.n_acc:
                args += [np.zeros((1, max(low.n_acc, 1)), dtype=ft)]
            args += [1] if self.backend == "cuda" else [0, 1]
        else:
            args += [np.zeros(p, dtype=ft) for o in spec.outputs if o in FLAT_ARRAYS]
            if low.chunks is not None and low.n_acc:
                args.append(np.zeros((1, low.n_acc), dtype=ft) if self.backend == "cpu"
                            else np.zeros(low.n_acc, dtype=ft))
            args += [np.zeros(1, dtype=ft)] if self.backend == "cuda" and "objective" in spec.outputs else []
        return args

    def _inspect_dispatcher(self, kind: str) -> Any:
        """An uncached copy of the kernel, compiled for the types it is called with:
        a kernel loaded from Numba's cache has no LLVM IR or assembly to show."""
        import numba
        cache = self.__dict__.setdefault("_inspect", {})
        if kind in cache:
            return cache[kind]
        spec, low = KIND_SPECS[kind], self._lowered(kind)
        k = getattr(self._group(spec.group).module, (low.chunks or low.finish).name)
        opts = {o: v for o, v in k.targetoptions.items() if o not in ("cache", "nopython")}
        d = numba.njit(**opts)(k.py_func)
        d.compile(tuple(numba.typeof(a) for a in self._example_args(kind)))
        cache[kind] = d
        return d

    def ptx(self, kind: str = "value_and_grad", cc: tuple[int, int] = (8, 0)) -> str:
        """PTX of a kind's CUDA kernels (the row kernels of a staged pass, or the per-chunk
        kernel, then the finish) for compute capability ``cc``; needs no GPU, but numba-cuda
        with NVVM (``pip install -e '.[cuda]'``) and no simulator."""
        self._check_kind(kind)
        if self.backend != "cuda":
            raise ValueError("ptx: the model runs on the CPU; compile with backend='cuda' (CPU models "
                             "show model.llvm(kind) and model.asm(kind))")
        import numba
        from numba import cuda
        if numba.config.ENABLE_CUDASIM:
            raise RuntimeError("ptx: the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) compiles no PTX")
        spec, low = KIND_SPECS[kind], self._lowered(kind)
        module = self._group(spec.group).module
        ft = numba.from_dtype(self.dtype)
        types = {"f": ft, "i": numba.int64}
        texts = []
        for kernel, finish in [(k, False) for k in low.stages] + [(low.chunks, False), (low.finish, True)]:
            if kernel is None or kernel.host or (finish and low.chunks is not None
                                                 and spec.outputs[0] in ("output", "jac")):
                continue   # host code; predict and jacobian write their rows in the chunks kernel
            if kernel.arg_types:   # a staged pass's row kernel: its parameters' types were recorded
                sig = tuple(numba.types.Array(types[t[0]], int(t[1:]), "C") if t[1:] else types[t]
                            for t in kernel.arg_types)
            else:
                sig = tuple(numba.typeof(a) for a in self._example_args(kind, finish))
            try:
                text, _ = cuda.compile_ptx(getattr(module, kernel.name).py_func, sig, cc=cc,
                                           fastmath=self.fastmath)
            except Exception as e:
                raise RuntimeError(f"ptx: numba-cuda could not compile {kernel.name!r} to PTX "
                                   f"({type(e).__name__}: {e}); is the 'cuda' extra installed "
                                   "(nvidia-nvvm, nvidia-cuda-nvrtc)?") from e
            texts.append(f"// ---- kernel {kernel.name} ----\n{text}")
        return "\n".join(texts)

    def llvm(self, kind: str = "value_and_grad") -> str:
        """LLVM IR of the kernel (its per-chunk function, where the work is)."""
        self._check_kind(kind)
        self._cpu_only("llvm")
        d = self._inspect_dispatcher(kind)
        return next(iter(d.inspect_llvm().values()))

    def asm(self, kind: str = "value_and_grad") -> str:
        """Native assembly of the kernel (its per-chunk function, where the work is)."""
        self._check_kind(kind)
        self._cpu_only("asm")
        d = self._inspect_dispatcher(kind)
        return next(iter(d.inspect_asm().values()))

    def _cpu_only(self, what: str) -> None:
        if self.backend != "cpu":
            raise ValueError(f"{what}: a CPU view; the CUDA kernels show model.ptx(kind)")
