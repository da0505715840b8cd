"""The trained model out of the test control plane: a training ends Succeeded with its model on
status.model; `fedwarden model fetch` gets model and provenance from the model server behind the
aggregator's Service (no exec), as the reader in the training's Secret, and verifies them; a
flipped byte in either file fails `model verify` with the reason; the model server goes with the
training."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from tests.k8s.operator_support import (
    crds,  # noqa: F401
    running_operator,
    status_of,
    training,
    wait_for,
)

from fedwarden.commands.model import model
from fedwarden.model import MODEL_FILE, PROVENANCE_FILE
from fedwarden.testing.controlplane import ControlPlane
from fedwarden.testing.podrunner import PodRunner

pytestmark = pytest.mark.slow

NAME = "outbound"


def _objects() -> list[dict[str, Any]]:
    sites = [
        {
            "apiVersion": "fedwarden.io/v1alpha1",
            "kind": "FLClient",
            "metadata": {"name": f"m{i}"},
            "spec": {
                "trainingRef": {"name": NAME},
                "issueKey": True,
                "workload": {"clientIndex": i, "numClients": 2},
            },
        }
        for i in range(2)
    ]
    return [
        {
            "apiVersion": "fedwarden.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": NAME},
            "spec": {
                "rounds": 2,
                "task": {"builtin": "digits-logreg"},
                "selection": {"minClients": 2, "minAvailable": 2},
            },
        },
        *sites,
    ]


def _invoke(*args: str) -> Result:
    result = CliRunner().invoke(model, list(args))
    assert "Traceback" not in result.output
    return result


def test_the_model_is_fetched_from_the_cluster_and_verified(
    crds: ControlPlane,  # noqa: F811
    pod_runner: PodRunner,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    cp, ns = crds, kube_namespace
    out = tmp_path / "model"
    with running_operator(cp, resync_seconds=2):
        for obj in _objects():
            cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))
        final = wait_for(
            lambda: (
                status_of(training(cp, ns, NAME)).get("phase") in ("Succeeded", "Failed")
                and status_of(training(cp, ns, NAME))
            ),
            600,
            "the training to finish",
        )
        assert final["phase"] == "Succeeded", final
        exported = final["model"]
        assert exported["round"] == 2
        # the aggregator has exited; the model server answers behind its Service
        host, port = pod_runner.service_address(ns, f"{NAME}-aggregator", 8443)
        fetch = (
            "fetch", NAME, "-n", ns, "--out", str(out), "--kubeconfig", str(cp.kubeconfig),
            "--server", f"{host}:{port}", "--timeout", "30",
        )  # fmt: skip
        fetched = wait_for(
            lambda: (result := _invoke(*fetch)).exit_code == 0 and result,
            180,
            "model fetch to succeed",
        )
    assert fetched.stderr.startswith(f"fetched {out} from {host}:{port}"), fetched.output
    assert fetched.stdout.startswith("verified "), fetched.output
    assert exported["sha256"] in fetched.stdout
    summary = json.loads(_invoke(*fetch, "--json").stdout)
    assert summary["sha256"] == exported["sha256"]
    assert summary["signer"].endswith(f"/ns/{ns}/training/{NAME}/aggregator")
    assert summary["status_model"] == exported
    assert summary["rounds_completed"] == 2
    secret = cp.api().get(f"/api/v1/namespaces/{ns}/secrets/{NAME}-model-reader")
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    # one flipped byte in the model, then one changed byte in the provenance
    data = bytearray((out / MODEL_FILE).read_bytes())
    data[-3] ^= 0x01
    (out / MODEL_FILE).write_bytes(bytes(data))
    tampered = _invoke("verify", str(out), "--ca", str(ca))
    assert tampered.exit_code == 1
    assert "(hash-mismatch)" in tampered.output
    assert _invoke(*fetch).exit_code == 0  # whole again
    text = (out / PROVENANCE_FILE).read_text()
    (out / PROVENANCE_FILE).write_text(
        text.replace('"rounds_completed": 2', '"rounds_completed": 3')
    )
    forged = _invoke("verify", str(out), "--ca", str(ca))
    assert forged.exit_code == 1
    assert "(bad-signature)" in forged.output
    # a training that does not exist is named, in one line
    absent = _invoke(
        "fetch", "absent", "-n", ns, "--out", str(tmp_path / "absent"),
        "--kubeconfig", str(cp.kubeconfig),
    )  # fmt: skip
    assert absent.exit_code == 1
    assert f"no FederatedTraining {ns}/absent" in absent.stderr
    # deleting the training takes its model server with it
    with running_operator(cp, resync_seconds=2):
        cp.kubectl("delete", "ft", NAME, "-n", ns, "--wait=true", "--timeout=50s")
    wait_for(
        lambda: not cp.api().get(f"/apis/apps/v1/namespaces/{ns}/deployments")["items"],
        120,
        "the model server gone",
    )
