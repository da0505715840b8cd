"""Names and labels of everything the operator creates, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedwarden.api.common import API_VERSION

GRPC_PORT = 8443
METRICS_PORT = 9090
MANAGED_BY = "fedwarden-operator"
TRAINING_LABEL = "fedwarden.io/training"
CLIENT_LABEL = "fedwarden.io/client"
COMPONENT_LABEL = "app.kubernetes.io/component"


@dataclass(frozen=True)
class Owner:
    """The resource that owns generated objects (garbage collection deletes them with it)."""

    kind: str
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "ownerReferences": [self.reference()],
        }


def training_labels(training: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "fedwarden",
        "app.kubernetes.io/instance": training,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        COMPONENT_LABEL: component,
        TRAINING_LABEL: training,
    }


def client_labels(training: str, client: str) -> dict[str, str]:
    return {**training_labels(training, "client"), CLIENT_LABEL: client}


def aggregator_name(training: str) -> str:
    return f"{training}-aggregator"


def model_server_name(training: str) -> str:
    return f"{training}-model"


def ca_secret_name(training: str) -> str:
    return f"{training}-ca"


def aggregator_tls_secret_name(training: str) -> str:
    return f"{training}-aggregator-tls"


MODEL_SERVER_LABEL = "fedwarden.io/model-server"
"""On the model server's pods, which otherwise carry the aggregator's labels (its Service)."""

MODEL_READER = "model-fetch"
"""The reader identity the operator issues for ``fedwarden model fetch``."""


def model_reader_secret_name(training: str) -> str:
    """The reader's key and certificate: who may read this Secret may fetch the model."""
    return f"{training}-model-reader"


def trust_configmap_name(training: str) -> str:
    """CA bundle and revocation list: public, so a ConfigMap every participant may read."""
    return f"{training}-trust"


def checkpoint_claim_name(training: str) -> str:
    return f"{training}-checkpoints"


def client_tls_secret_name(client: str) -> str:
    return f"{client}-tls"


def client_job_name(client: str) -> str:
    return f"{client}-client"


def aggregator_host(training: str, namespace: str) -> str:
    return f"{aggregator_name(training)}.{namespace}.svc"


def aggregator_dns_names(training: str, namespace: str) -> list[str]:
    """Every name a client may dial the aggregator's Service by (the server certificate's SANs)."""
    service = aggregator_name(training)
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]
