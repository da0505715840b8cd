"""The import contracts in pyproject.toml catch what they claim to: ``lint-imports`` runs on a
copy of the package with one deliberately wrong import (or a new, unplaced package) and must
name the contract it breaks. The real tree passing is ``make lint``'s job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "fedwarden"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

_contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
    "contracts"
]
#: each contract of pyproject.toml, by a phrase of its name
CONTRACTS = {
    word: next(c["name"] for c in _contracts if word in c["name"])
    for word in (
        "layered",
        "not even each other",
        "operator's side imports",
        "runtime and pki",
        "cycles",
    )
}


def _lint_copy(tmp_path: Path, module: str, source: str) -> subprocess.CompletedProcess[str]:
    """lint-imports over a copy of fedwarden in which ``module`` (a path under the package)
    ends with ``source``."""
    copy = tmp_path / "fedwarden"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / module
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(f"\n{source}\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    # the copy comes first on the path, ahead of the editable install of the real tree
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_unchanged_copy_passes(tmp_path: Path) -> None:
    result = _lint_copy(tmp_path, "pipeline/errors.py", "")
    assert result.returncode == 0, result.stdout + result.stderr


WRONG_IMPORTS = [
    # the three gaps of the contracts that these replaced (issue 15, item 6)
    ("pipeline/errors.py", "import fedwarden.api", "not even each other"),
    ("pki/errors.py", "import fedwarden.k8s", "runtime and pki"),
    ("wire/__init__.py", "import fedwarden.resources", "runtime and pki"),
    # the rest of the design's direction
    ("pki/errors.py", "import fedwarden.k8s.credentials", "runtime and pki"),
    ("pipeline/errors.py", "import fedwarden.pki", "not even each other"),
    ("api/common.py", "import fedwarden.pki", "layered"),
    ("wire/__init__.py", "import fedwarden.pipeline", "layered"),
    ("wire/__init__.py", "import fedwarden.api", "runtime and pki"),
    ("resources/names.py", "import fedwarden.k8s", "layered"),
    ("resources/names.py", "import fedwarden.pki", "layered"),
    ("k8s/credentials.py", "import fedwarden.pki", "layered"),
    ("resources/names.py", "import fedwarden.sim", "layered"),
    ("controller/metrics.py", "import fedwarden.sim", "operator's side imports"),
    ("controller/metrics.py", "import fedwarden.aggregator", "operator's side imports"),
    ("client/tasks.py", "import fedwarden.resources", "runtime and pki"),
    ("aggregator/config.py", "import fedwarden.controller", "layered"),
    ("aggregator/config.py", "import fedwarden.client", "layered"),
    ("sim/partition.py", "import fedwarden.commands", "layered"),
    ("aggregator/metrics.py", "import fedwarden.testing", "layered"),
    ("demo/run.py", "import fedwarden.testing", "runtime and pki"),
    ("controller/metrics.py", "import fedwarden.testing", "operator's side imports"),
    ("bench/runtime.py", "import fedwarden.demo", "layered"),
    ("commands/_common.py", "import fedwarden.cli", "layered"),
    # a package nobody placed
    ("scheduler/__init__.py", "import fedwarden.pipeline", "layered"),
    # the cycle that was broken by moving local DP into its own module
    ("pipeline/dp.py", "import fedwarden.pipeline.local_dp", "cycles"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [pytest.param(*case, id=f"{case[0]}:{case[1].split()[-1]}") for case in WRONG_IMPORTS],
)
def test_a_wrong_import_breaks_the_contract_that_forbids_it(
    tmp_path: Path, module: str, source: str, contract: str
) -> None:
    result = _lint_copy(tmp_path, module, source)
    assert result.returncode != 0, result.stdout
    assert f"{CONTRACTS[contract]} BROKEN" in result.stdout, result.stdout
