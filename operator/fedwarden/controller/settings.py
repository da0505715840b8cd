"""The operator's settings (environment variables, so that kopf's command line and the Helm
chart's Deployment set them the same way)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorSettings:
    resync_seconds: float = 60.0
    """How often each resource is reconciled even without a change: certificate renewals,
    ttlSecondsAfterFinished, and repairs of objects someone else changed
    (``FEDWARDEN_RESYNC_SECONDS``)."""

    trust_domain: str = "fedwarden.local"
    """SPIFFE trust domain of the identities in the certificates (``FEDWARDEN_TRUST_DOMAIN``)."""

    kubeconfig: str | None = None
    """Credentials of the operator's own API client; in-cluster when unset (``KUBECONFIG``)."""

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            resync_seconds=float(os.environ.get("FEDWARDEN_RESYNC_SECONDS", cls.resync_seconds)),
            trust_domain=os.environ.get("FEDWARDEN_TRUST_DOMAIN", cls.trust_domain),
            kubeconfig=os.environ.get("KUBECONFIG") or None,
        )
