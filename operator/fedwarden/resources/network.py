"""NetworkPolicies of a training: deny by default, then open only what the rounds need.

- Every pod of the training (aggregator and in-cluster clients) denies all traffic by default.
- The aggregator accepts gRPC from this training's client pods, from the namespaces and CIDRs
  that ``spec.network`` allows, and nothing else; it may reach DNS and the API server (its status
  reports) only.
- In-cluster clients may reach DNS and the aggregator's gRPC port only.

Policies are enforced by the cluster's network plugin; on a cluster without one they are inert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedwarden.api.training import FederatedTrainingSpec
from fedwarden.resources import names
from fedwarden.resources.names import GRPC_PORT, Owner


@dataclass(frozen=True)
class APIServerEndpoint:
    """An address and port the API server is reached on (from the ``kubernetes`` EndpointSlice
    in ``default``: NetworkPolicies match the endpoints, not the Service's ClusterIP)."""

    ip: str
    port: int


def _cidr(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


_DNS: dict[str, Any] = {
    "to": [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def _policy(owner: Owner, suffix: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": owner.metadata(
            f"{owner.name}-{suffix}", names.training_labels(owner.name, "network")
        ),
        "spec": spec,
    }


def network_policies(
    owner: Owner, spec: FederatedTrainingSpec, api_server: list[APIServerEndpoint]
) -> list[dict[str, Any]]:
    training = {names.TRAINING_LABEL: owner.name}
    aggregator = names.training_labels(owner.name, "aggregator")
    clients = {names.TRAINING_LABEL: owner.name, names.COMPONENT_LABEL: "client"}
    sources: list[dict[str, Any]] = [{"podSelector": {"matchLabels": clients}}]
    if spec.network.allowed_namespaces:
        sources.append(
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": sorted(spec.network.allowed_namespaces),
                        }
                    ]
                }
            }
        )
    sources += [{"ipBlock": {"cidr": cidr}} for cidr in sorted(spec.network.allowed_cidrs or [])]
    api_rule: dict[str, Any] = {
        "to": [{"ipBlock": {"cidr": _cidr(e.ip)}} for e in api_server],
        "ports": [{"protocol": "TCP", "port": p} for p in sorted({e.port for e in api_server})],
    }
    aggregator_egress = [_DNS, api_rule] if api_server else [_DNS]
    return [
        _policy(
            owner,
            "default-deny",
            {"podSelector": {"matchLabels": training}, "policyTypes": ["Ingress", "Egress"]},
        ),
        _policy(
            owner,
            "aggregator",
            {
                "podSelector": {"matchLabels": aggregator},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"from": sources, "ports": [{"protocol": "TCP", "port": GRPC_PORT}]},
                ],
                "egress": aggregator_egress,
            },
        ),
        _policy(
            owner,
            "clients",
            {
                "podSelector": {"matchLabels": clients},
                "policyTypes": ["Ingress", "Egress"],
                "egress": [
                    _DNS,
                    {
                        "to": [{"podSelector": {"matchLabels": aggregator}}],
                        "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
                    },
                ],
            },
        ),
    ]
