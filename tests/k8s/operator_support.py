"""Shared pieces of the operator's tests on the test control plane: the CRDs, the operator
running in-process under kopf's KopfRunner, and small waiting and reading helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from fedwarden.testing import waiting
from fedwarden.testing.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
GROUP_PATH = "/apis/fedwarden.io/v1alpha1"


def wait_for(check: Callable[[], Any], timeout: float = 120.0, what: str = "") -> Any:
    return waiting.wait_for(check, timeout, what, interval=0.25)


def install_crds(cp: ControlPlane) -> None:
    cp.kubectl(
        "apply", "--server-side", "--field-manager=fedwarden-tests", "-f", str(REPO / "crds")
    )
    for name in ("federatedtrainings.fedwarden.io", "flclients.fedwarden.io"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


def status_of(obj: dict[str, Any] | None) -> dict[str, Any]:
    """``obj``'s status, ``{}`` when the object or its status is missing."""
    status: dict[str, Any] = (obj or {}).get("status") or {}
    return status


def get(cp: ControlPlane, path: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = cp.api().get_or_none(path)
    return result


def training(cp: ControlPlane, ns: str, name: str) -> dict[str, Any] | None:
    return get(cp, f"{GROUP_PATH}/namespaces/{ns}/federatedtrainings/{name}")


def client(cp: ControlPlane, ns: str, name: str) -> dict[str, Any] | None:
    return get(cp, f"{GROUP_PATH}/namespaces/{ns}/flclients/{name}")


def events(cp: ControlPlane, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cp.api().get(f"/apis/events.k8s.io/v1/namespaces/{ns}/events")[
        "items"
    ]
    return items


def apply_manifest(cp: ControlPlane, manifest: dict[str, Any] | str, ns: str) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=text)


@contextmanager
def running_operator(cp: ControlPlane, resync_seconds: float = 5.0) -> Iterator[Any]:
    """The operator in this process, as kopf's KopfRunner runs it (``kopf run``)."""
    from kopf.testing import KopfRunner

    # Only for the operator's lifetime: a KUBECONFIG left behind would make every later kubectl
    # in this process present the admin's client certificate next to any token it is given.
    environment = {
        "KUBECONFIG": str(cp.kubeconfig),
        "FEDWARDEN_RESYNC_SECONDS": str(resync_seconds),
    }
    args = ["run", "--all-namespaces", "--standalone", "-m", "fedwarden.controller.handlers"]
    with mock.patch.dict(os.environ, environment), KopfRunner(args, timeout=120) as runner:
        yield runner
    assert runner.exception is None, runner.output
