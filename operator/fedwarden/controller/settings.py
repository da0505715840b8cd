"""The operator's settings: environment variables (so that kopf's command line and the Helm
chart's Deployment set them the same way), and where the service account is mounted, which
``fedwarden operator --service-account-dir`` sets (a path in the arguments, where the test pod
runner rewrites mount paths)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fedwarden.k8s.credentials import SERVICE_ACCOUNT_DIR


@dataclass(frozen=True)
class OperatorSettings:
    resync_seconds: float = 60.0
    """How often each resource is reconciled even without a change: certificate renewals,
    ttlSecondsAfterFinished, and repairs of objects someone else changed
    (``FEDWARDEN_RESYNC_SECONDS``)."""

    trust_domain: str = "fedwarden.local"
    """SPIFFE trust domain of the identities in the certificates (``FEDWARDEN_TRUST_DOMAIN``)."""

    kubeconfig: str | None = None
    """The operator's credentials (kopf's and its own API client's) from this kubeconfig file;
    when unset, the service account in ``service_account_dir`` (``KUBECONFIG``)."""

    service_account_dir: Path = SERVICE_ACCOUNT_DIR
    """Where the pod's service account token, ``ca.crt`` and ``namespace`` are; without a token
    there (outside a pod), the default kubeconfig ``~/.kube/config``. Not from the
    environment: ``fedwarden operator --service-account-dir`` sets it."""

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            resync_seconds=float(os.environ.get("FEDWARDEN_RESYNC_SECONDS", cls.resync_seconds)),
            trust_domain=os.environ.get("FEDWARDEN_TRUST_DOMAIN", cls.trust_domain),
            kubeconfig=os.environ.get("KUBECONFIG") or None,
        )
