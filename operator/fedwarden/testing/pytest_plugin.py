"""pytest fixtures for tests against a real control plane.

Enable with ``-p fedwarden.testing.pytest_plugin`` (this repository has it in pyproject's
``addopts``) or ``pytest_plugins = ["fedwarden.testing.pytest_plugin"]`` in the top-level
conftest.py.

* ``control_plane_binaries`` (session): the paths of etcd, kube-apiserver,
  kube-controller-manager and kubectl built by ``bash hack/control-plane.sh``. When they are
  missing the test is skipped, except under CI (env ``CI`` set), where it fails.
* ``control_plane`` (session): a started :class:`~fedwarden.testing.controlplane.ControlPlane`
  on those binaries.
* ``pod_runner`` (session): a started :class:`~fedwarden.testing.podrunner.PodRunner` on it.
* ``kube_namespace`` (function): a fresh namespace name (with its ``default`` service account
  ready); deleted after the test, without waiting for it to be gone.

``FEDWARDEN_KEEP_CONTROL_PLANE=1`` keeps the control plane's directory (state and logs).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedwarden.testing.controlplane import ControlPlane, ControlPlaneBinariesMissing, find_binaries
from fedwarden.testing.podrunner import PodRunner


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs the test control plane (hack/control-plane.sh)")


@pytest.fixture(scope="session")
def control_plane_binaries() -> dict[str, Path]:
    try:
        return find_binaries()
    except ControlPlaneBinariesMissing as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (CI is set: the k8s tests must not be skipped)", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def control_plane(control_plane_binaries: dict[str, Path]) -> Iterator[ControlPlane]:
    cp = ControlPlane(keep=bool(os.environ.get("FEDWARDEN_KEEP_CONTROL_PLANE")))
    with cp:
        yield cp


@pytest.fixture(scope="session")
def pod_runner(control_plane: ControlPlane) -> Iterator[PodRunner]:
    with PodRunner(control_plane) as runner:
        yield runner


@pytest.fixture
def kube_namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40]
    name = f"{base.strip('-')}-{uuid.uuid4().hex[:6]}"
    api = control_plane.api()
    api.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    deadline = time.monotonic() + 30
    while api.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default") is None:
        if time.monotonic() > deadline:
            pytest.fail(f"namespace {name}: no default service account after 30 s")
        time.sleep(0.1)
    yield name
    api.delete(f"/api/v1/namespaces/{name}")
