"""Data residency on the node, which the session labels topology.kubernetes.io/region=eu-west.
A training that allows only us-east leaves its aggregator Pending, unschedulable, with the
scheduler's reason; one that allows eu-west gets its aggregator scheduled and running; an
FLClient of another region is refused (RegionNotAllowed) and gets neither a certificate nor a
pod."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.e2e.node import NODE_REGION, Node, wait_for

pytestmark = pytest.mark.slow

NAMESPACE = "fl-residency"


def _training(name: str, regions: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "fedwarden.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": name},
        "spec": {
            "rounds": 1,
            "task": {"builtin": "digits-logreg"},
            "selection": {"minClients": 2, "minAvailable": 2},
            "privacy": {"mode": "none"},
            "dataResidency": {"allowedRegions": regions},
        },
    }


def _client(name: str, training: str, region: str) -> dict[str, Any]:
    return {
        "apiVersion": "fedwarden.io/v1alpha1",
        "kind": "FLClient",
        "metadata": {"name": name},
        "spec": {
            "trainingRef": {"name": training},
            "region": region,
            "issueKey": True,
            "workload": {"partition": "iid", "clientIndex": 0, "numClients": 2},
        },
    }


@pytest.fixture
def residency_namespace(node: Node) -> Iterator[Node]:
    node.restricted_namespace(NAMESPACE)
    volumes = {"inside": "inside-checkpoints", "outside": "outside-checkpoints"}
    for training, claim in volumes.items():
        node.checkpoint_volume(f"{NAMESPACE}-{training}", claim=claim, namespace=NAMESPACE)
    try:
        yield node
    finally:
        node.delete_namespace(NAMESPACE)
        for training in volumes:
            node.delete_volume(f"{NAMESPACE}-{training}")


def _aggregator_pod(node: Node, training: str) -> dict[str, Any] | None:
    pods = node.items(
        "pods",
        NAMESPACE,
        f"fedwarden.io/training={training},app.kubernetes.io/component=aggregator",
    )
    return pods[0] if pods else None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition["type"] == kind:
            return dict(condition)
    return {}


def test_aggregator_only_where_allowed_and_a_client_of_another_region_refused(
    residency_namespace: Node, operator_release: str
) -> None:
    node = residency_namespace
    node.apply(_training("outside", ["us-east"]), NAMESPACE)
    node.apply(_training("inside", [NODE_REGION]), NAMESPACE)
    node.apply(_client("far-site", "inside", "us-east"), NAMESPACE)

    def unschedulable() -> dict[str, Any] | None:
        pod = _aggregator_pod(node, "outside")
        scheduled = _condition(pod, "PodScheduled") if pod else {}
        return scheduled if scheduled.get("reason") == "Unschedulable" else None

    scheduled = wait_for(unschedulable, 180, "the us-east aggregator to be unschedulable")
    assert "affinity" in scheduled["message"], scheduled
    pod = _aggregator_pod(node, "outside")
    assert pod is not None
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")

    def running_inside() -> dict[str, Any] | None:
        pod = _aggregator_pod(node, "inside")
        return pod if pod and pod["status"].get("phase") == "Running" else None

    inside = wait_for(running_inside, 300, "the eu-west aggregator to run")
    assert inside["spec"]["nodeName"] == "localhost"

    def refused() -> dict[str, Any] | None:
        client = node.get("flc", "far-site", NAMESPACE)
        ready = _condition(client, "Ready")
        return client if ready.get("reason") == "RegionNotAllowed" else None

    client = wait_for(refused, 120, "the us-east client to be refused")
    assert client["status"]["phase"] == "Pending"
    assert not client["status"].get("certificateSerial")
    assert not node.items("pods", NAMESPACE, "fedwarden.io/client=far-site")
