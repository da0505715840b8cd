"""docs/architecture.md draws the import contracts of pyproject.toml and lists every package:
the drawing is held to the contract, the list to the layers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = (REPO / "docs" / "architecture.md").read_text()


def _layers() -> list[str]:
    """The layers contract's lines, optional packages without their parentheses."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in contracts["contracts"] if c["type"] == "layers"]
    return [re.sub(r"[()]", "", line) for line in layers["layers"]]


def test_the_drawing_is_the_layers_contract() -> None:
    drawing = PAGE.split("**Layers.**", 1)[1].split("```", 2)[1]
    assert drawing.strip().splitlines() == _layers()


def test_the_package_table_lists_every_layer() -> None:
    listed = set(re.findall(r"^\| `(\w+)(?:/|\.py)` \|", PAGE, flags=re.MULTILINE))
    packages = {name.strip() for line in _layers() for name in line.split("|")}
    assert listed == packages
