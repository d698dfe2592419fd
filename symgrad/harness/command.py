"""The benchmark's command line, shared by ``symgrad bench`` and ``bench/optimizers.py``."""
from __future__ import annotations

import argparse
import ast
import runpy
import sys
from pathlib import Path
from typing import Any, Sequence

from .methods import GROUPS, REFERENCES, resolve_methods, unavailable
from .problems import PROBLEMS, Problem, get_problem
from .protocol import run_benchmark

__all__ = ["add_arguments", "run", "main", "parse_option", "load_problems", "QUICK"]

#: what --quick runs unless told otherwise: small problems, one method of each kind, short budgets
QUICK: dict[str, Any] = {"problems": "rosenbrock,quadratic,logistic",
                         "methods": "adam,lbfgs,newton_cg,scipy:L-BFGS-B,torch:Adam",
                         "seeds": "2", "max_iter": 100, "time_limit": 2.0}
_DEFAULTS: dict[str, Any] = {"problems": "all", "methods": "default", "seeds": "3"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", help="comma-separated problem names, 'all', or FILE.py[:NAME] defining "
                                      f"Problem objects (default: all; built-ins: {', '.join(PROBLEMS)})")
    p.add_argument("--methods", help="comma-separated methods or groups (default: default; groups: "
                                     f"{', '.join(GROUPS)}; see --list)")
    p.add_argument("--seeds", help="a count N (seeds 0..N-1) or a comma-separated list (default 3)")
    p.add_argument("--max-iter", type=int, help="iterations per run (default: per problem)")
    p.add_argument("--time-limit", type=float,
                   help="seconds of the method's own time per run (default: per problem)")
    p.add_argument("--tol", type=float, help="stop at ||gradient||_2 <= TOL (default: per problem)")
    p.add_argument("--threads", type=int, help="Numba and PyTorch threads (default: Numba's current count)")
    p.add_argument("--out", default="bench/results/optimizers", help="output directory (default %(default)s)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE",
                   help="a method option, e.g. adam.lr=0.01 or torch:LBFGS.history_size=20 (repeatable; "
                        "VALUE is a Python literal or a bare string)")
    p.add_argument("--target", action="append", default=[], metavar="PROBLEM=LOSS",
                   help="an absolute target loss for a problem (repeatable)")
    p.add_argument("--target-frac", type=float, default=1e-3,
                   help="target = f_best + FRAC (f0 - f_best) per seed (default %(default)g)")
    p.add_argument("--quick", action="store_true",
                   help=f"a short run: {QUICK['problems']}; {QUICK['methods']}; {QUICK['seeds']} seeds, "
                        f"max_iter {QUICK['max_iter']}, {QUICK['time_limit']:g} s per run (options given win)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures (no matplotlib needed)")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    p.add_argument("--list", action="store_true", help="list the problems and methods, then exit")


def parse_option(text: str) -> tuple[str, str, Any]:
    """``METHOD.NAME=VALUE`` -> (method, name, value); VALUE a Python literal, else the bare string."""
    key, sep, raw = text.partition("=")
    method, dot, name = key.strip().rpartition(".")
    if not (sep and dot and method and name.isidentifier()):
        raise ValueError(f"--option {text!r}: expected METHOD.NAME=VALUE, e.g. adam.lr=0.01")
    found = resolve_methods([method])
    if len(found) != 1 or method.lower() in GROUPS:
        raise ValueError(f"--option {text!r}: {method!r} is a group; name one method")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return found[0], name, value


def load_problems(spec: str) -> list[Problem]:
    """Problems from a comma-separated list of names, 'all', and FILE.py[:NAME] entries."""
    out: list[Problem] = []
    files: dict[str, dict[str, Any]] = {}   # each file runs once, however many of its problems are named
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        path, _, name = item.partition(":") if ".py" in item else (item, "", "")
        if item == "all":
            out += list(PROBLEMS.values())
        elif path.endswith(".py"):
            if not Path(path).is_file():
                raise ValueError(f"--problems: no such file {path!r}")
            if path not in files:
                files[path] = runpy.run_path(path, run_name="__symgrad_bench__")
            ns = files[path]
            if name:
                if not isinstance(ns.get(name), Problem):
                    raise ValueError(f"--problems: {path} defines no Problem named {name!r}")
                out.append(ns[name])
            else:
                found = [v for v in ns.values() if isinstance(v, Problem)]
                if not found:
                    raise ValueError(f"--problems: {path} defines no Problem objects")
                out += found
        else:
            out.append(get_problem(item))
    if not out:
        raise ValueError("--problems: no problems given")
    return list({p.name: p for p in out}.values())


def _seeds(text: str) -> int | list[int]:
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        n = int(text)
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected a count or a comma-separated list of integers") from None
    if n < 1:
        raise ValueError(f"--seeds {text!r}: expected at least 1")
    return n


def _list() -> str:
    lines = ["problems:"] + [f"  {p.name:<12} {p.description}" for p in PROBLEMS.values()]
    lines += ["methods:", "  " + ", ".join(resolve_methods(["symgrad"]))]
    for m in REFERENCES:
        why = unavailable(m)
        lines.append(f"  {m}" + (f"  ({why})" if why else ""))
    lines += ["groups:"] + [f"  {g}: {', '.join(ms)}" for g, ms in GROUPS.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed arguments describe; print the summary; write the report."""
    if args.list:
        print(_list())
        return 0
    given = {k: getattr(args, k) for k in ("problems", "methods", "seeds", "max_iter", "time_limit")}
    base = {**_DEFAULTS, **(QUICK if args.quick else {})}
    opt = {k: v if v is not None else base.get(k) for k, v in given.items()}
    options: dict[str, dict[str, Any]] = {}
    for text in args.option:
        method, name, value = parse_option(text)
        options.setdefault(method, {})[name] = value
    targets = {}
    for text in args.target:
        name, sep, value = text.partition("=")
        try:
            if not sep:
                raise ValueError
            targets[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--target {text!r}: expected PROBLEM=LOSS, e.g. logistic=0.08") from None
    try:
        problems = load_problems(opt["problems"])
        bench = run_benchmark(problems, resolve_methods(opt["methods"].split(",")), _seeds(opt["seeds"]),
                              max_iter=opt["max_iter"], tol=args.tol, time_limit=opt["time_limit"],
                              options=options, threads=args.threads, target_frac=args.target_frac,
                              targets=targets, progress=not args.quiet)
    except ImportError as e:
        print(f"symgrad bench: {e}", file=sys.stderr)
        return 2
    written = bench.write(args.out, plots=not args.no_plots)
    print(Path(args.out, "summary.md").read_text())
    print(f"wrote {len(written)} files to {args.out}/ (summary.md, runs.csv, runs/, "
          f"{'no figures' if args.no_plots else 'one figure per problem'})")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "symgrad bench") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Compare optimizers on fixed problems: "
                                "the same starting points for every method, costs and failures recorded.")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
