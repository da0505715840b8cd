"""The chart and the examples on a real node: the operator runs as a pod from its image, the
aggregator and ten in-cluster clients run as pods from theirs under the restricted Pod Security
Standard, with their certificates mounted from Secrets, and the clients reach the aggregator by
its Service's DNS name over mTLS. Mid-training the aggregator pod is force-deleted (its Job's
next pod resumes from the checkpoint on a hostPath PersistentVolume) and the kubelet restarts;
the training still succeeds, with no round lost or repeated and ε never lower."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.node import REPO, Node, probe_pod, wait_for

pytestmark = pytest.mark.slow

NAMESPACE = "fl-e2e"
TRAINING = "digits"
AGGREGATOR = f"fedwarden.io/training={TRAINING},app.kubernetes.io/component=aggregator"


def _status(node: Node) -> dict[str, Any]:
    status: dict[str, Any] = node.get("ft", TRAINING, NAMESPACE).get("status") or {}
    return status


def _finished_rounds(volume: Path) -> list[dict[str, Any]]:
    """The aggregator's ``round_finished`` records on the checkpoint volume, in order (a
    resumed pod appends to the same report)."""
    report = volume / "report.jsonl"
    if not report.exists():
        return []
    records = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "round_finished"]


def test_examples_train_on_the_node_through_faults(node: Node, operator_release: str) -> None:
    node.restricted_namespace(NAMESPACE)
    # the namespace enforces the restricted profile: a pod without its securityContext (that
    # the baseline profile would admit) is refused
    unrestricted = probe_pod("unrestricted")
    del unrestricted["spec"]["securityContext"]
    del unrestricted["spec"]["containers"][0]["securityContext"]
    refused = node.kubectl("apply", "--dry-run=server", "-n", NAMESPACE, "-f", "-",
                           input=json.dumps(unrestricted), check=False)  # fmt: skip
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr, refused
    volume = node.checkpoint_volume(
        f"{NAMESPACE}-{TRAINING}", claim=f"{TRAINING}-checkpoints", namespace=NAMESPACE
    )
    epsilons: list[float] = []

    def progress() -> dict[str, Any]:
        status = _status(node)
        if status.get("epsilonSpent") is not None:
            epsilons.append(float(status["epsilonSpent"]))
        return status

    try:
        node.kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "examples" / "training.yaml"),
                     "-f", str(REPO / "examples" / "clients.yaml"))  # fmt: skip
        # Ready: the aggregator's pod is ready (condition reason Running), later Succeeded
        node.kubectl("wait", "--for=condition=Ready", f"ft/{TRAINING}", "-n", NAMESPACE,
                     "--timeout=600s", timeout=660)  # fmt: skip
        wait_for(lambda: progress().get("round", 0) >= 2, 900, "two rounds")

        # a fault: the aggregator's pod is force-deleted mid-training
        killed = node.items("pods", NAMESPACE, AGGREGATOR)
        assert len(killed) == 1, [p["metadata"]["name"] for p in killed]
        node.kubectl("delete", "pod", "-n", NAMESPACE, killed[0]["metadata"]["name"],
                     "--force", "--grace-period=0")  # fmt: skip
        wait_for(lambda: progress().get("round", 0) >= 4, 900, "round 4 after the new pod")
        # another: the kubelet restarts while pods run
        subprocess.run(["bash", "hack/node.sh", "restart-kubelet"], cwd=REPO, check=True,
                       timeout=300)  # fmt: skip

        node.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", f"ft/{TRAINING}",
                     "-n", NAMESPACE, "--timeout=900s", timeout=960)  # fmt: skip
        final = progress()
        ready = {c["type"]: c for c in final["conditions"]}["Ready"]
        assert (ready["status"], ready["reason"]) == ("True", "Succeeded"), ready
        assert final["round"] == 6
        assert epsilons == sorted(epsilons), epsilons
        assert 0 < final["epsilonSpent"] <= 10.0
        assert {"site-8", "site-9"} <= set(final["bannedClients"]), final
        # the pod that replaced the killed one resumed: no round lost or repeated, ε only grew
        finished = _finished_rounds(volume)
        assert [r["round"] for r in finished] == [1, 2, 3, 4, 5, 6]
        assert [r["epsilon"] for r in finished] == sorted(r["epsilon"] for r in finished)

        # the aggregator ran twice from its image, under the restricted profile's settings
        pods = node.items("pods", NAMESPACE, AGGREGATOR)
        assert killed[0]["metadata"]["uid"] not in {p["metadata"]["uid"] for p in pods}
        for aggregator in pods:
            container = aggregator["spec"]["containers"][0]
            assert container["image"].startswith("ghcr.io/fedwarden/aggregator:")
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # (a pod the kubelet restart caught may report no image; the one that finished does)
        statuses = [s for p in pods for s in p["status"].get("containerStatuses") or []]
        assert any(s.get("imageID") for s in statuses), statuses
        # the clients were told the Service's DNS name, and trained from the client image
        clients = node.items("pods", NAMESPACE, "app.kubernetes.io/component=client")
        assert len({p["metadata"]["labels"].get("fedwarden.io/client") for p in clients}) >= 8
        env = {e["name"]: e.get("value") for e in clients[0]["spec"]["containers"][0]["env"]}
        assert env["FEDWARDEN_SERVER"].startswith(f"{TRAINING}-aggregator.{NAMESPACE}.svc"), env

        node.helm("test", "fedwarden", "-n", operator_release, "--timeout", "300s")
    except BaseException:
        print(node.logs(NAMESPACE, AGGREGATOR))
        print(node.logs(operator_release, "app.kubernetes.io/name=fedwarden"))
        raise
    finally:
        node.delete_namespace(NAMESPACE)
        node.delete_volume(f"{NAMESPACE}-{TRAINING}")
