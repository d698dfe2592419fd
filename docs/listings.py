"""The generated listings of docs/architecture.md, produced from live models.

Each listing sits in the page between ``<!-- listing: NAME -->`` and
``<!-- /listing -->``; this script prints it anew from the generator, so the
page cannot drift from what symgrad generates. ``tests/test_docs.py`` runs
the check.

    python docs/listings.py          # rewrite the listings in docs/architecture.md
    python docs/listings.py --check  # exit 1 (and name them) if any is stale
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path
from typing import Callable

PAGE = Path(__file__).with_name("architecture.md")
_BLOCK = re.compile(r"(<!-- listing: (\w+) -->\n)(.*?)(<!-- /listing -->)", re.S)


def _mlp231():
    import symgrad as sg
    x, t = sg.input("x", 2), sg.target("t", 1)
    out = sg.dense(sg.dense(x, 3, "tanh", name="l1"), 1, name="l2")
    return sg.compile(sg.mse(out, t), output=out)


def _w2(backend: str):
    import symgrad as sg
    x, y = sg.input("x", 64), sg.labels("y", 10)
    h = sg.dense(sg.dense(x, 128, "relu", name="l1"), 128, "relu", name="l2")
    o = sg.dense(h, 10, name="l3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # no GPU here: the CUDA source is still generated
        return sg.compile(sg.softmax_cross_entropy(o, y), output=o, backend=backend)


def collapse(lines: list[str], pattern: str, unit: int = 1) -> list[str]:
    """Runs of three or more units (``unit`` lines, the first matching ``pattern``) shortened to
    the first unit, an indented ``...`` and the last unit."""
    out: list[str] = []
    i = 0
    rx = re.compile(pattern)
    while i < len(lines):
        j = i
        while j < len(lines) and rx.search(lines[j]):
            j += unit
        count = (j - i) // unit
        if count >= 3:
            pad = re.match(r"\s*", lines[i]).group(0)
            out += lines[i:i + unit] + [pad + "..."] + lines[j - unit:j]
            i = j
        else:
            out.append(lines[i])
            i += 1
    return out


def mlp_derivation() -> str:
    return str(_mlp231().derivation())


def mlp_source() -> str:
    return _mlp231().source("value_and_grad")


def wide_excerpt() -> str:
    """The chunk loop of a 64-128-128-10 network: its first layer and its last layer's backward."""
    src = _w2("cpu").source("value_and_grad").splitlines()
    body = src[next(k for k, ln in enumerate(src) if "l1_z = einsum" in ln):]
    first = body[:body.index(next(ln for ln in body if "# l2_z = einsum" in ln))]
    start = next(k for k, ln in enumerate(body) if "# d_l2_W = einsum" in ln)
    last = body[start:next(k for k, ln in enumerate(body) if "dot_nn(" in ln and k > start) + 1]
    return "\n".join(first + ["        ..."] + last)


def staged_driver() -> str:
    """The host driver of the same network's staged CUDA value_and_grad, runs of buffer lines
    and gradient copies shortened."""
    src = _w2("cuda").source("value_and_grad")
    start = src.index("def value_and_grad_chunks(")
    lines = src[start:].split("\n\n\n")[0].split("\n\n")[0].splitlines()
    lines = [ln for ln in lines if not ln.lstrip().startswith('"""')]
    lines = collapse(lines, r"_buf = cuda\.device_array")
    lines = collapse(lines, r" = \w+_buf\[:rows\]")
    lines = collapse(lines, r"^\s+# grad:", unit=2)
    return "\n".join(lines)


LISTINGS: dict[str, Callable[[], str]] = {"mlp_derivation": mlp_derivation, "mlp_source": mlp_source,
                                          "wide_excerpt": wide_excerpt, "staged_driver": staged_driver}


def render(page: str) -> tuple[str, list[str]]:
    """The page with every listing regenerated, and the names of those that changed."""
    stale: list[str] = []

    def fill(m: re.Match) -> str:
        head, name, old, tail = m.group(1), m.group(2), m.group(3), m.group(4)
        if name not in LISTINGS:
            raise SystemExit(f"docs/listings.py: the page names an unknown listing {name!r}")
        lang = "python" if name != "mlp_derivation" else ""
        new = f"```{lang}\n{LISTINGS[name]().rstrip()}\n```\n"
        if new != old:
            stale.append(name)
        return head + new + tail
    return _BLOCK.sub(fill, page), stale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report stale listings (exit 1)")
    args = p.parse_args(argv)
    page = PAGE.read_text()
    new, stale = render(page)
    if args.check:
        if stale:
            print(f"stale listings in {PAGE.name}: {', '.join(stale)} (run python docs/listings.py)")
            return 1
        return 0
    if new != page:
        PAGE.write_text(new)
    print(f"{PAGE.name}: {len(stale)} listing(s) rewritten" + (f" ({', '.join(stale)})" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
