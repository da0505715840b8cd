"""One version string: pyproject.toml's, which ``fedwarden.__version__`` reads from the installed
metadata (the API's default images are built from it). The files that cannot import it (the
chart, an example's Dockerfile, the docs that quote them) say the same, and ``make generate``
rewrites them; the CRDs and the GitOps example are generated and have drift tests of their own.
The Dockerfiles under images/ are left to the images' own build (hack/images.sh passes the
version)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

from fedwarden import __version__

REPO = Path(__file__).resolve().parents[2]
IMAGE = re.compile(r"ghcr\.io/fedwarden/(?:operator|aggregator|client):(\d+\.\d+\.\d+\S*)")
#: where `make generate` rewrites the image tags that files quote
QUOTED_IN = ("docs", "examples/apps", "README.md")


def test_the_package_version_is_pyprojects() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"], "reinstall: make install-dev"


def test_the_chart_carries_the_version() -> None:
    chart = yaml.safe_load((REPO / "charts" / "fedwarden" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (__version__, __version__), "make generate"


def test_docs_and_examples_quote_the_version() -> None:
    files = subprocess.run(
        ["git", "ls-files", *QUOTED_IN], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    quoted = {
        (name, match.group(1))
        for name in files
        for match in IMAGE.finditer((REPO / name).read_text(errors="replace"))
    }
    assert quoted, "no image references found: has the pattern gone stale?"
    assert {(name, v) for name, v in quoted if v != __version__} == set(), "make generate"
