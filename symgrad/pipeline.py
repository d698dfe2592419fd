"""The pipeline behind a model's kernel groups: derive, lower, emit, load.

A group (first order, built by ``sg.compile``; second order, on first use) is
one generated module: its derived programs, each kind lowered for the
model's target, the module source printed by the target's emitter, then
written to the cache and imported. Each stage is timed in the group's stats.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .derived import COTANGENT, curvature, jacobian
from .ir import IRError
from .kinds import KIND_SPECS, sinks

if TYPE_CHECKING:
    from codegen.lower import Lowered

    from .model import Model

__all__ = ["Group", "build_group", "runtime_hash"]


@dataclass
class Group:
    """One generated module and the kinds lowered into it."""

    module: Any
    lowered: dict[str, Lowered]
    programs: dict[str, Any]
    source: str
    stats: dict[str, Any]
    refused: dict[str, IRError]   # kinds the backend cannot lower, and why (raised when asked for)


def runtime_hash() -> str:
    """The helpers generated modules import (CPU and CUDA), read as text: a change to them must
    change the cache key, and reading does not import numba.cuda."""
    from codegen.cache import cache_key
    here = Path(__file__).parent
    return cache_key(*((here / f).read_text() for f in ("runtime.py", "cuda_runtime.py")))


def build_group(model: Model, group: str) -> Group:
    """Derive, lower, emit and load the kernels of one group (see ``_Kind``)."""
    import numba

    # codegen imports symgrad.ir; importing it here keeps `import codegen.x` free of a cycle
    from codegen.cache import cache_key, load_source
    from codegen.lower import PASSES, lower
    fwd, sig, ft = model._forward, model.signature, model.dtype.name
    t0 = time.perf_counter()
    programs: dict[str, Any] = {"forward": fwd.program, "gradient": model._adjoint.program}
    if group == "second":
        programs["curvature"] = curvature(fwd.program, model._adjoint).program
        if model.has_output:
            programs["jacobian"] = jacobian(fwd.program)
    t1 = time.perf_counter()
    roles = {n: role for n, role, _, _ in sig.data}
    layout = {n: (off, shape) for n, shape, off, _ in sig.params}
    lowered: dict[str, Lowered] = {}
    refused: dict[str, IRError] = {}
    for kind, spec in KIND_SPECS.items():
        if spec.group != group or spec.program not in programs:
            continue
        if (kind == "predict" and not model.has_output) or (kind == "gnvp" and not model.has_split):
            continue
        flat = {"param": "theta", "tangent": "v"} if spec.tangent else {"param": "theta"}
        args = tuple((n, roles[n]) for n in model._reads[spec.data])
        if kind == "jacobian":
            args += ((COTANGENT, "cotangent"),)
        try:
            lowered[kind] = lower(programs[spec.program], sinks(spec, sig), name=kind, float_type=ft,
                                  data=args, flat_leaves=flat, param_layout=layout, doc=spec.doc,
                                  target=model.target)
        except IRError as e:
            if model.backend == "cpu" or group == "first":
                raise
            refused[kind] = e   # e.g. the CUDA Jacobian of a wide layer: the other kinds still build
    t2 = time.perf_counter()
    kernels = [k for low in lowered.values() for k in low.kernels]
    title = model.title + ("" if group == "first" else " (second order)")
    source = model.target.emitter(kernels, title=title, float_type=ft, fastmath=model.fastmath, version=__version__)
    t3 = time.perf_counter()
    key = cache_key(source, model.backend, ft, str(model.fastmath), numba.__version__, __version__,
                    runtime_hash())
    module, hit, path = load_source(source, key)
    t4 = time.perf_counter()
    stats = {"source_lines": source.count("\n"), "cache": "hit" if hit else "miss",
             "cache_key": key[:16], "cache_file": str(path),
             "stages": {"derivatives": t1 - t0, "lower": t2 - t1, "emit": t3 - t2, "cache_import": t4 - t3},
             # the lowering's passes, summed over the group's kinds
             "lower_passes": {p: sum(low.timings.get(p, 0.0) for low in lowered.values()) for p in PASSES}}
    return Group(module, lowered, programs, source, stats, refused)
