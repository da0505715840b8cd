"""A training's NetworkPolicies, enforced by the node's policy engine (kube-network-policies).

The training has no clients yet, so its aggregator waits on its gRPC port for the whole test.
Probe pods (the client image, sleeping; probes run through `kubectl exec`) try TCP connections:

  from                                         to                          policies  removed
  a pod of the training's namespace, no labels  aggregator's gRPC port      refused   connects
  a pod of another namespace                    aggregator's gRPC port      refused   connects
  a pod with the training's client labels       aggregator's gRPC port      connects  connects
  the aggregator                                a pod of another namespace  refused   connects
  the aggregator                                DNS (kube-dns), API server  resolve/connect

With the training's policies deleted (the operator scaled to zero first, so that it does not
put them back) the refused probes connect: the test can fail. docs/testing.md has the matrix.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.e2e.node import Node, connects, probe_pod, wait_for

pytestmark = pytest.mark.slow

NAMESPACE = "fl-np"
OTHER = "fl-np-other"
TRAINING = "probe"
GRPC_PORT = 8443
LISTENER_PORT = 8000
API_SERVICE = "10.96.0.1"


def _training() -> dict[str, object]:
    return {
        "apiVersion": "fedwarden.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": TRAINING},
        "spec": {
            "rounds": 1,
            "task": {"builtin": "digits-logreg"},
            "selection": {"minClients": 2, "minAvailable": 2},
            "privacy": {"mode": "none"},
        },
    }


def _listener() -> dict[str, object]:
    pod = probe_pod("listener", {"app": "listener"})
    container = pod["spec"]["containers"][0]  # type: ignore[index]
    container["command"] = ["python", "-m", "http.server", str(LISTENER_PORT)]
    return pod


@pytest.fixture
def namespaces(node: Node) -> Iterator[None]:
    node.restricted_namespace(NAMESPACE)
    node.restricted_namespace(OTHER)
    node.checkpoint_volume(f"{NAMESPACE}-{TRAINING}", claim=f"{TRAINING}-checkpoints",
                           namespace=NAMESPACE)  # fmt: skip
    try:
        yield
    finally:
        node.delete_namespace(NAMESPACE)
        node.delete_namespace(OTHER)
        node.delete_volume(f"{NAMESPACE}-{TRAINING}")


def test_policies_let_only_the_trainings_clients_in_and_the_aggregator_out_to_dns_and_api(
    node: Node, operator_release: str, namespaces: None
) -> None:
    node.apply(_training(), NAMESPACE)
    member_labels = {"fedwarden.io/training": TRAINING, "app.kubernetes.io/component": "client"}
    node.apply(probe_pod("stranger"), NAMESPACE)
    node.apply(probe_pod("member", member_labels), NAMESPACE)
    node.apply(probe_pod("outsider"), OTHER)
    node.apply(_listener(), OTHER)
    aggregator_ip = node.pod_ip(
        NAMESPACE, f"fedwarden.io/training={TRAINING},app.kubernetes.io/component=aggregator"
    )
    aggregator = node.items("pods", NAMESPACE, "app.kubernetes.io/component=aggregator")[0]
    aggregator_pod = aggregator["metadata"]["name"]
    listener_ip = node.pod_ip(OTHER, "app=listener")
    for pod, ns in (("stranger", NAMESPACE), ("member", NAMESPACE), ("outsider", OTHER)):
        node.kubectl("wait", "--for=condition=Ready", f"pod/{pod}", "-n", ns, "--timeout=120s")
    # pods have routes to the pod and Service networks only: no default route off the machine
    routes = node.kubectl("exec", "-n", NAMESPACE, "stranger", "--", "cat", "/proc/net/route")
    destinations = {line.split()[1] for line in routes.stdout.splitlines()[1:]}
    assert "00000000" not in destinations, routes.stdout
    # the aggregator listens before the probes count: the member gets in once it does
    wait_for(
        lambda: connects(node, NAMESPACE, "member", aggregator_ip, GRPC_PORT),
        120,
        "the aggregator's gRPC port to accept the training's client",
    )

    def matrix() -> dict[str, bool]:
        return {
            "stranger -> aggregator": connects(
                node, NAMESPACE, "stranger", aggregator_ip, GRPC_PORT
            ),
            "outsider -> aggregator": connects(node, OTHER, "outsider", aggregator_ip, GRPC_PORT),
            "member -> aggregator": connects(node, NAMESPACE, "member", aggregator_ip, GRPC_PORT),
            "aggregator -> listener": connects(
                node, NAMESPACE, aggregator_pod, listener_ip, LISTENER_PORT
            ),
            "aggregator -> API server": connects(node, NAMESPACE, aggregator_pod, API_SERVICE, 443),
        }

    with_policies = matrix()
    assert with_policies == {
        "stranger -> aggregator": False,
        "outsider -> aggregator": False,
        "member -> aggregator": True,
        "aggregator -> listener": False,
        "aggregator -> API server": True,
    }
    # DNS: the aggregator resolves a Service name through CoreDNS
    lookup = node.kubectl(
        "exec", "-n", NAMESPACE, aggregator_pod, "--", "python", "-c",
        "import socket; print(socket.gethostbyname('kubernetes.default.svc.cluster.local'))",
    )  # fmt: skip
    assert lookup.stdout.strip() == API_SERVICE

    # the same probes without the policies: everything connects, so the refusals above were
    # the policies' doing
    node.kubectl("scale", "deployment", "-n", operator_release, "--all", "--replicas=0")
    try:
        node.kubectl("delete", "networkpolicy", "-n", NAMESPACE, "--all")

        def all_connect() -> dict[str, bool] | None:
            probes = matrix()
            return probes if all(probes.values()) else None

        wait_for(all_connect, 60, "every probe to connect without the policies")
    finally:
        node.kubectl("scale", "deployment", "-n", operator_release, "--all", "--replicas=1")
        node.kubectl("rollout", "status", "deployment", "-n", operator_release, "--timeout=180s",
                     timeout=200)  # fmt: skip
