"""examples/gitops: its copies are current, `kubectl kustomize` renders it, and the API server
accepts what it renders (server-side dry run)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests import strict_yaml

from fedwarden.testing.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "examples" / "gitops"

pytestmark = pytest.mark.slow

Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def kubectl(control_plane_binaries: dict[str, Path]) -> Path:
    return control_plane_binaries["kubectl"]


def _kustomize(kubectl: Path, path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(kubectl), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return strict_yaml.load_all(out.stdout)


@pytest.mark.parametrize(
    ("copy", "original"),
    [
        ("crds/federatedtrainings.fedwarden.io.yaml", "crds/federatedtrainings.fedwarden.io.yaml"),
        ("crds/flclients.fedwarden.io.yaml", "crds/flclients.fedwarden.io.yaml"),
        ("training/training.yaml", "examples/training.yaml"),
        ("training/clients.yaml", "examples/clients.yaml"),
    ],
)
def test_copies_are_current(copy: str, original: str) -> None:
    assert (GITOPS / copy).read_bytes() == (REPO / original).read_bytes(), (
        f"examples/gitops/{copy} differs from {original}: make generate"
    )


def test_rendered_operator_is_current(helm: Helm) -> None:
    fresh = helm(
        "template",
        "fedwarden",
        str(REPO / "charts" / "fedwarden"),
        "--namespace",
        "fedwarden-system",
        "--set",
        "crds.install=false",
        "--set",
        "tests.enabled=false",
    ).stdout
    on_disk = (GITOPS / "operator" / "fedwarden.yaml").read_text()
    assert on_disk == fresh, "examples/gitops/operator/fedwarden.yaml is stale: make generate"


def test_kustomize_renders_crds_operator_and_training(kubectl: Path) -> None:
    docs = _kustomize(kubectl, GITOPS)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CustomResourceDefinition") == 2
    assert kinds.count("FederatedTraining") == 1
    assert kinds.count("FLClient") == 10
    assert "Deployment" in kinds
    assert "ClusterRole" in kinds
    assert "Pod" not in kinds  # no helm test pod
    waves = {
        d["kind"]: d["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave")
        for d in docs
    }
    assert waves["CustomResourceDefinition"] == "-1"
    assert waves["FederatedTraining"] == "1"
    for d in docs:
        if d["kind"] in ("FederatedTraining", "FLClient"):
            assert d["metadata"]["namespace"] == "fl-demo"
        if d["kind"] == "Deployment":
            assert d["metadata"]["namespace"] == "fedwarden-system"


@pytest.mark.k8s
def test_kustomize_output_passes_server_dry_run(
    control_plane: ControlPlane, kube_namespace: str, kubectl: Path
) -> None:
    cp = control_plane
    # the CRDs for real (custom resources cannot be dry-run without them), the rest dry-run
    cp.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=fedwarden-tests",
        "-k",
        str(GITOPS / "crds"),
    )
    for name in ("federatedtrainings.fedwarden.io", "flclients.fedwarden.io"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    docs = []
    for d in _kustomize(kubectl, GITOPS):
        if d["kind"] in ("Namespace", "CustomResourceDefinition"):
            continue
        # the tree's namespaces (fedwarden-system, fl-demo) become the test's
        if d["metadata"].get("namespace"):
            d["metadata"]["namespace"] = kube_namespace
        for subject in d.get("subjects", []):
            if subject.get("namespace"):
                subject["namespace"] = kube_namespace
        docs.append(d)
    result = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs))
    assert "FederatedTraining" in result.stdout or "federatedtraining" in result.stdout, (
        result.stdout
    )
