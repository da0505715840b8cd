"""Fixtures of the chart's and the GitOps tree's tests: helm (skipped when missing, failing
under CI) and the test control plane's kubectl."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# --- helm --------------------------------------------------------------------------------------


def _find_helm() -> str | None:
    explicit = os.environ.get("FEDWARDEN_HELM")
    if explicit:
        return explicit
    cached = subprocess.run(
        ["bash", str(REPO / "hack" / "helm.sh"), "--print-path"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if os.access(cached, os.X_OK):
        return cached
    return shutil.which("helm")


@pytest.fixture(scope="session")
def helm_bin() -> str:
    found = _find_helm()
    if found is None:
        message = (
            "helm not found: run `bash hack/helm.sh` (builds and caches it) or set FEDWARDEN_HELM"
        )
        if os.environ.get("CI"):
            pytest.fail(
                f"{message} (CI is set: the chart's tests must not be skipped)", pytrace=False
            )
        pytest.skip(message)
    return found


Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def helm(helm_bin: str, tmp_path: Path) -> Helm:
    """Run helm with a private cache/config/data directory (and the test's kubeconfig, if any)."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    }

    def run(
        *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        extra = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
        result = subprocess.run(
            [helm_bin, *args, *extra], capture_output=True, text=True, env=env, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    return run
