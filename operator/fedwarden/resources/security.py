"""Pod and container security settings that satisfy the ``restricted`` Pod Security Standard."""

from __future__ import annotations

from typing import Any

#: the fedwarden images' non-root user (images/*/Dockerfile)
RUN_AS_USER = 65532


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def region_affinity(regions: list[str]) -> dict[str, Any]:
    """Schedule only onto nodes of the allowed regions (data residency)."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "topology.kubernetes.io/region",
                                "operator": "In",
                                "values": sorted(regions),
                            }
                        ]
                    }
                ]
            }
        }
    }
