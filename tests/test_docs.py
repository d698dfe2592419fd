"""docs/architecture.md's generated listings are what the generator prints today."""
from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs"


def _listings():
    spec = importlib.util.spec_from_file_location("listings", DOCS / "listings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_architecture_listings_are_current():
    listings = _listings()
    page = (DOCS / "architecture.md").read_text()
    _, stale = listings.render(page)
    assert not stale, f"stale listings {stale}: run python docs/listings.py"
    assert page.count("<!-- listing:") == len(listings.LISTINGS)


def test_collapse_keeps_first_and_last_of_a_run():
    c = _listings().collapse
    lines = ["a", "  x_buf = cuda.device_array(1)", "  y_buf = cuda.device_array(2)", "  z_buf = cuda.device_array(3)", "b"]
    assert c(lines, r"_buf = cuda") == ["a", lines[1], "  ...", lines[3], "b"]
    assert c(lines[:3], r"_buf = cuda") == lines[:3]
