"""The operator's smaller promises on the test control plane: CSR enrolment (the key never
leaves the site; a CSR for another name is refused with the reason), suspend and resume, and
ttlSecondsAfterFinished."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.k8s.operator_support import (
    client,
    crds,  # noqa: F401
    running_operator,
    status_of,
    training,
    wait_for,
)

from fedwarden.pki.csr import create_csr
from fedwarden.pki.identity import ClientIdentity
from fedwarden.testing.controlplane import ControlPlane
from fedwarden.testing.podrunner import PodRunner

pytestmark = pytest.mark.slow


def _training(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fedwarden.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": name},
        "spec": {"rounds": 1, "task": {"builtin": "digits-logreg"}, **spec},
    }


def _public(pem: bytes) -> bytes:
    return (
        x509.load_pem_x509_certificate(pem)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )


def test_remote_site_enrols_by_csr_and_a_foreign_csr_is_refused(
    crds: ControlPlane,  # noqa: F811
    kube_namespace: str,
) -> None:
    cp, ns = crds, kube_namespace
    key_pem, csr_pem = create_csr(ClientIdentity(ns, "lab", "remote-1", "fedwarden.local"))
    _, foreign_csr = create_csr(ClientIdentity(ns, "lab", "someone-else", "fedwarden.local"))
    objects = [_training("lab", suspend=True)] + [
        {
            "apiVersion": "fedwarden.io/v1alpha1",
            "kind": "FLClient",
            "metadata": {"name": name},
            "spec": {"trainingRef": {"name": "lab"}, "csr": csr.decode()},
        }
        for name, csr in (("remote-1", csr_pem), ("impostor", foreign_csr))
    ]
    with running_operator(cp):
        for obj in objects:
            cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))
        status = wait_for(
            lambda: (
                status_of(client(cp, ns, "remote-1")).get("phase") == "Enrolled"
                and status_of(client(cp, ns, "remote-1"))
            ),
            120,
            "remote-1 enrolled",
        )
        secret = cp.api().get(f"/api/v1/namespaces/{ns}/secrets/remote-1-tls")
        assert secret["type"] == "Opaque"
        assert "tls.key" not in secret["data"]  # the key never left the site
        cert = base64.b64decode(secret["data"]["tls.crt"])
        site_key = x509.load_pem_x509_csr(csr_pem).public_key()
        assert _public(cert) == site_key.public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        assert (
            status["certificateSerial"] == f"{x509.load_pem_x509_certificate(cert).serial_number:x}"
        )
        refused = wait_for(
            lambda: (
                status_of(client(cp, ns, "impostor"))
                .get("message", "")
                .startswith("certificate refused")
                and status_of(client(cp, ns, "impostor"))
            ),
            120,
            "the foreign CSR refused",
        )
        assert refused["phase"] == "Pending"
        assert "impostor" in refused["message"]
        assert key_pem  # made at the site, used by nothing here


def test_suspend_and_resume_and_ttl_after_finished(
    crds: ControlPlane,  # noqa: F811
    pod_runner: PodRunner,
    kube_namespace: str,
) -> None:
    cp, ns = crds, kube_namespace
    sites = [
        {
            "apiVersion": "fedwarden.io/v1alpha1",
            "kind": "FLClient",
            "metadata": {"name": f"s{i}"},
            "spec": {
                "trainingRef": {"name": "brief"},
                "issueKey": True,
                "workload": {"clientIndex": i, "numClients": 2},
            },
        }
        for i in range(2)
    ]
    brief = _training(
        "brief",
        suspend=True,
        ttlSecondsAfterFinished=5,
        selection={"minClients": 2, "minAvailable": 2},
    )
    with running_operator(cp, resync_seconds=2):
        for obj in [brief, *sites]:
            cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))
        wait_for(
            lambda: status_of(training(cp, ns, "brief")).get("phase") == "Suspended",
            120,
            "Suspended",
        )
        job = cp.api().get(f"/apis/batch/v1/namespaces/{ns}/jobs/brief-aggregator")
        assert job["spec"]["suspend"] is True
        cp.kubectl(
            "patch", "ft", "brief", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}'
        )
        wait_for(
            lambda: status_of(training(cp, ns, "brief")).get("phase") == "Succeeded",
            300,
            "Succeeded after resume",
        )
        # ttlSecondsAfterFinished: the training deletes itself 5 s after it finished
        wait_for(lambda: training(cp, ns, "brief") is None, 120, "deleted after its TTL")
