"""Every manifest the operator renders, for a built-in task and for a user's app, is accepted by
the API server (``--dry-run=server``)."""

from __future__ import annotations

import json

from fedwarden.api import FederatedTraining, FLClient
from fedwarden.api.training import TaskSpec
from fedwarden.pki.ca import CertificateAuthority
from fedwarden.pki.identity import TrainingRef
from fedwarden.pki.revocation import RevocationList
from fedwarden.resources import aggregator, certificates, client, network
from fedwarden.resources.names import Owner
from fedwarden.testing.controlplane import ControlPlane


def test_every_generated_manifest_passes_server_side_dry_run(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    spec = FederatedTraining.model_validate(
        {
            "spec": {
                "rounds": 3,
                "task": {"builtin": "digits-logreg"},
                "privacy": {"mode": "central", "targetEpsilon": 1.0},
                "dataResidency": {"allowedRegions": ["eu-west"]},
                "network": {"allowedNamespaces": ["sites"], "allowedCidrs": ["203.0.113.0/24"]},
                "aggregator": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            }
        }
    ).spec
    # a user's app: its initial model from an init container in its image, its clients in it
    app_spec = spec.model_copy(
        update={
            "task": TaskSpec.model_validate(
                {"app": {"module": "hospital.model:client_fn", "image": "hospital:1",
                         "config": {"local-epochs": "2"}}}
            )
        }
    )  # fmt: skip
    owner = Owner("FederatedTraining", "mnist", ns, "00000000-0000-0000-0000-000000000001")
    ca = CertificateAuthority.create(TrainingRef(ns, "mnist"))
    server = ca.issue_server(["mnist-aggregator"])
    issued = ca.issue_client("site-1")
    flc = FLClient.model_validate(
        {"spec": {"trainingRef": {"name": "mnist"}, "issueKey": True, "region": "eu-west",
                  "workload": {"clientIndex": 1, "numClients": 2}}}
    )  # fmt: skip
    client_owner = Owner("FLClient", "site-1", ns, "00000000-0000-0000-0000-000000000002")
    manifests = [
        certificates.ca_secret(owner, cert=ca.cert_pem, key=ca.key_pem, bundle=ca.cert_pem),
        certificates.aggregator_tls_secret(
            owner, cert=server.cert_pem, key=server.key_pem, bundle=ca.cert_pem
        ),
        certificates.trust_config_map(
            owner, bundle=ca.cert_pem, crl=RevocationList.empty(ca).to_pem()
        ),
        certificates.client_certificate_secret(
            client_owner, "mnist", cert=issued.cert_pem, key=issued.key_pem, bundle=ca.cert_pem
        ),
        certificates.client_certificate_secret(
            client_owner, "mnist", cert=issued.cert_pem, key=None, bundle=ca.cert_pem
        ),
        aggregator.config_map(owner, spec, population=2),
        aggregator.checkpoint_claim(owner, spec),
        aggregator.job(owner, spec, config_hash="0"),
        aggregator.job(owner, app_spec, config_hash="0"),
        aggregator.service(owner),
        aggregator.service_account(owner),
        aggregator.role(owner, ["site-1"]),
        aggregator.role_binding(owner),
        *network.network_policies(owner, spec, [network.APIServerEndpoint("127.0.0.1", 6443)]),
        client.client_job(client_owner, flc.spec, spec),
        client.client_job(client_owner, flc.spec, app_spec),
    ]
    for manifest in manifests:
        result = control_plane.kubectl(
            "apply", "--dry-run=server", "--server-side", "--field-manager=fedwarden-operator",
            "-n", ns, "-f", "-", input=json.dumps(manifest), check=False,
        )  # fmt: skip
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        assert result.returncode == 0, f"{kind} {name}: {result.stderr}"
    # the restricted Pod Security level admits the workloads (the pod's service account must
    # exist for a pod to be admitted at all)
    # (without the owner reference: the garbage collector deletes objects whose owner, this
    # test's made-up training, does not exist)
    account = aggregator.service_account(owner)
    del account["metadata"]["ownerReferences"]
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(account))
    control_plane.kubectl(
        "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    for manifest in manifests:
        if manifest["kind"] == "Job":
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "check", "namespace": ns},
                "spec": manifest["spec"]["template"]["spec"],
            }
            result = control_plane.kubectl(
                "create", "--dry-run=server", "-n", ns, "-f", "-",
                input=json.dumps(pod), check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert "violate" not in result.stderr, result.stderr
