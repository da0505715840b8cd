"""The operator on the test control plane, end to end: ``kubectl apply -f examples/`` trains to
Succeeded over mTLS with the poisoners banned; an operator restart and a killed aggregator pod
mid-training change nothing that matters; deleting the training removes what it owned and
revokes its certificates; short-lived certificates are renewed while a training runs; the
aggregator's service account can touch nothing but its own training and clients."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.argocd_health import argocd_health
from tests.k8s.operator_support import (
    REPO,
    client,
    crds,  # noqa: F401
    events,
    running_operator,
    status_of,
    training,
    wait_for,
)

from fedwarden.testing.controlplane import ControlPlane
from fedwarden.testing.podrunner import PodRunner

pytestmark = pytest.mark.slow


def _owned(cp: ControlPlane, ns: str, kind: str, training_name: str) -> list[str]:
    out = cp.kubectl(
        "get", kind, "-n", ns, "-l", f"fedwarden.io/training={training_name}",
        "-o", "jsonpath={.items[*].metadata.name}",
    ).stdout  # fmt: skip
    return out.split()


def test_examples_train_to_succeeded_and_survive_restarts_and_deletion(
    crds: ControlPlane,  # noqa: F811
    pod_runner: PodRunner,
    kube_namespace: str,
) -> None:
    cp, ns = crds, kube_namespace
    epsilons: list[float] = []

    def progress() -> dict[str, Any]:
        status = status_of(training(cp, ns, "digits"))
        if status.get("epsilonSpent") is not None:
            epsilons.append(float(status["epsilonSpent"]))
        return status

    with running_operator(cp):
        cp.kubectl("apply", "-n", ns, "-f", str(REPO / "examples"))
        wait_for(lambda: progress().get("round", 0) >= 2, 600, "two rounds")
    # the operator stops mid-training; the aggregator pod is killed while it is down
    pods = _owned(cp, ns, "pods", "digits")
    aggregator_pods = [p for p in pods if p.startswith("digits-aggregator")]
    assert len(aggregator_pods) == 1, pods
    cp.kubectl("delete", "pod", aggregator_pods[0], "-n", ns, "--grace-period=0", "--force")
    with running_operator(cp):
        final = wait_for(
            lambda: progress().get("phase") in ("Succeeded", "Failed") and progress(),
            900,
            "the training to finish",
        )
        assert final["phase"] == "Succeeded", final
        assert final["round"] == 6
        # ε on the status never went down, across the restarts
        assert epsilons == sorted(epsilons), epsilons
        assert 0 < final["epsilonSpent"] <= 10.0
        conditions = {c["type"]: c for c in final["conditions"]}
        assert conditions["Ready"]["status"] == "True"
        assert (
            conditions["Ready"]["observedGeneration"]
            == training(cp, ns, "digits")["metadata"]["generation"]
        )
        # no duplicates: the objects of the training are exactly the ones expected
        jobs = _owned(cp, ns, "jobs", "digits")
        assert [j for j in jobs if "aggregator" in j] == ["digits-aggregator"], jobs
        assert set(_owned(cp, ns, "secrets", "digits")) == {
            "digits-ca",
            "digits-aggregator-tls",
            *(f"site-{i}-tls" for i in range(10)),
        }
        # Argo CD's health check (examples/gitops/argocd) on the live resource
        assert argocd_health(training(cp, ns, "digits")).status == "Healthy"
        table = cp.kubectl("get", "ft", "digits", "-n", ns).stdout
        assert "Succeeded" in table
        assert str(final["epsilonSpent"])[:3] in table
        # the poisoners are banned with a reason, no honest site is
        for i in range(10):
            status = wait_for(lambda i=i: status_of(client(cp, ns, f"site-{i}")), 30)
            if i >= 8:
                assert status["phase"] == "Banned", (i, status)
                assert status["banReason"]
                assert argocd_health(client(cp, ns, f"site-{i}")).status == "Degraded"
            else:
                assert status["phase"] in ("Active", "Enrolled"), (i, status)
        story = [
            (e.get("reason"), e.get("regarding", {}).get("name"), e.get("note"))
            for e in events(cp, ns)
        ]
        reasons = {r for r, _, _ in story}
        told = "\n".join(f"{r} {name}: {note}" for r, name, note in story)
        assert {"Enrolled", "Banned", "ClientBanned", "Started", "Succeeded"} <= reasons, told
        # the certificates lived 24 h: nothing was renewed
        assert "CertificateRenewed" not in reasons, told

        # deleting the training: its objects go, its clients' certificates are revoked
        cp.kubectl("delete", "ft", "digits", "-n", ns, "--wait=true", "--timeout=120s")
        for kind in ("jobs", "secrets", "configmaps", "services", "roles", "networkpolicies",
                     "persistentvolumeclaims", "serviceaccounts"):  # fmt: skip
            wait_for(lambda kind=kind: not _owned(cp, ns, kind, "digits"), 120, f"{kind} gone")
        for i in range(10):
            status = wait_for(
                lambda i=i: (
                    status_of(client(cp, ns, f"site-{i}")).get("phase") == "Revoked"
                    and status_of(client(cp, ns, f"site-{i}"))
                ),
                60,
                f"site-{i} revoked",
            )
            assert "revoked" in status["message"]
            (ready,) = status["conditions"]
            assert (ready["type"], ready["status"], ready["reason"]) == (
                "Ready",
                "False",
                "TrainingDeleted",
            )
            assert ready["observedGeneration"] == status["observedGeneration"] >= 1
            assert argocd_health(client(cp, ns, f"site-{i}")).status == "Degraded", status


def test_short_lived_certificates_are_renewed_and_the_aggregator_is_confined(
    crds: ControlPlane,  # noqa: F811
    pod_runner: PodRunner,
    kube_namespace: str,
) -> None:
    cp, ns = crds, kube_namespace
    manifest = """
apiVersion: fedwarden.io/v1alpha1
kind: FederatedTraining
metadata: {name: short}
spec:
  rounds: 100000  # runs until the test deletes it
  task: {builtin: digits-logreg}
  selection: {minClients: 2, minAvailable: 2}
  roundTimeoutSeconds: 20
  certificates: {duration: 2m, renewBefore: 80s}
---
apiVersion: fedwarden.io/v1alpha1
kind: FederatedTraining
metadata: {name: other}
spec: {rounds: 1, task: {builtin: digits-logreg}, suspend: true}
""" + "".join(
        f"""---
apiVersion: fedwarden.io/v1alpha1
kind: FLClient
metadata: {{name: s{i}}}
spec:
  trainingRef: {{name: short}}
  issueKey: true
  workload: {{clientIndex: {i}, numClients: 2}}
"""
        for i in range(2)
    )
    with running_operator(cp, resync_seconds=3):
        cp.kubectl("apply", "-n", ns, "-f", "-", input=manifest)
        first = wait_for(
            lambda: (
                status_of(client(cp, ns, "s0")).get("certificateSerial")
                and status_of(client(cp, ns, "s0"))
            ),
            120,
            "a certificate",
        )
        wait_for(lambda: status_of(training(cp, ns, "short")).get("round", 0) >= 1, 300, "a round")
        renewed = wait_for(
            lambda: (
                status_of(client(cp, ns, "s0")).get("certificateSerial")
                != first["certificateSerial"]
                and status_of(client(cp, ns, "s0"))
            ),
            150,
            "a renewal",
        )
        assert renewed["notAfter"] > first["notAfter"]
        status = status_of(training(cp, ns, "short"))
        assert status["phase"] == "Running", status
        rounds_at_renewal = status["round"]
        # the training goes on with the renewed certificates
        wait_for(
            lambda: status_of(training(cp, ns, "short")).get("round", 0) > rounds_at_renewal + 1,
            120,
            "rounds after the renewal",
        )
        assert "CertificateRenewed" in {e.get("reason") for e in events(cp, ns)}

        sa = f"system:serviceaccount:{ns}:short-aggregator"

        def can(*args: str) -> bool:
            result = cp.kubectl("auth", "can-i", *args, "-n", ns, "--as", sa, check=False)
            return result.stdout.strip() == "yes"

        assert can("patch", "federatedtrainings.fedwarden.io/short", "--subresource=status")
        assert can("patch", "flclients.fedwarden.io/s0", "--subresource=status")
        assert can("get", "federatedtrainings.fedwarden.io/short")
        assert not can("patch", "federatedtrainings.fedwarden.io/other", "--subresource=status")
        assert not can("patch", "federatedtrainings.fedwarden.io/short")  # spec: no
        assert not can("list", "flclients.fedwarden.io")
        assert not can("get", "secrets")
        assert not can("create", "pods")
        assert not can("create", "events")
        assert not can("get", "configmaps")
        started = time.monotonic()
        cp.kubectl(
            "delete", "ft", "short", "other", "-n", ns, "--wait=true", "--timeout=170s",
            timeout=180,
        )  # fmt: skip
        print(f"a running training was deleted in {time.monotonic() - started:.1f} s")
