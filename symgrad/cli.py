"""The ``symgrad`` command line: inspect a model's kernels, manage the kernel cache, compare optimizers."""
from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path
from typing import Any, Sequence

from .model import KINDS

__all__ = ["main"]

_SHOW = ("source", "derivation", "llvm", "asm", "stats")


def _load(target: str) -> Any:
    """The compiled model (or loss expression, compiled here) named in ``FILE.py[:NAME]``."""
    from .dsl import Tensor
    from .model import Model, compile
    path, _, name = target.partition(":")
    if not Path(path).is_file():
        raise SystemExit(f"symgrad: no such file {path!r}")
    ns = runpy.run_path(path, run_name="__symgrad_inspect__")
    if name:
        if name not in ns:
            raise SystemExit(f"symgrad: {path} defines no {name!r}")
        obj = ns[name]
    else:
        found = [v for v in ns.values() if isinstance(v, Model)] or \
                [v for v in ns.values() if isinstance(v, Tensor) and v.shape == ()]
        if not found:
            raise SystemExit(f"symgrad: {path} defines no compiled model or scalar loss; name one "
                             "with FILE.py:NAME")
        obj = found[-1]
    if isinstance(obj, Tensor):
        return compile(obj)
    if not isinstance(obj, Model):
        raise SystemExit(f"symgrad: {name!r} is a {type(obj).__name__}, not a model or loss expression")
    return obj


def _inspect(args: argparse.Namespace) -> int:
    model = _load(args.target)
    show = args.show
    if show == "source":
        print(model.source(args.kernel))
    elif show == "derivation":
        print(model.derivation(args.kernel))
    elif show == "llvm":
        print(model.llvm(args.kernel))
    elif show == "asm":
        print(model.asm(args.kernel))
    else:
        print(json.dumps(model.stats, indent=2, default=str))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from codegen.cache import cache_clear, cache_info
    if args.action == "info":
        info = cache_info()
        print(f"cache directory: {info['path']}\nkernel modules:  {info['modules']}\n"
              f"size:            {info['bytes'] / 1024:.1f} KiB")
    else:
        print(f"removed {cache_clear()} files")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .harness.command import run
    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="symgrad", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="show a model's generated kernel, derivation, LLVM IR, assembly or stats")
    ins.add_argument("target", help="FILE.py[:NAME], NAME a compiled model or a scalar loss expression")
    ins.add_argument("--kernel", default="value_and_grad", help=" | ".join(KINDS))
    ins.add_argument("--show", default="source", choices=_SHOW)
    ins.set_defaults(fn=_inspect)
    c = sub.add_parser("cache", help="the on-disk kernel cache ($SYMGRAD_CACHE_DIR)")
    c.add_argument("action", choices=("info", "clear"))
    c.set_defaults(fn=_cache)
    from .harness.command import add_arguments
    b = sub.add_parser("bench", help="compare optimizers on benchmark problems (CSV, summary table, plots)",
                       description="Compare optimizers on fixed problems: the same starting points for every "
                                   "method, costs and failures recorded.")
    add_arguments(b)
    b.set_defaults(fn=_bench)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, KeyError) as e:
        print(f"symgrad: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
