"""Revoking a banned client's certificate.

A ban decided by the pipeline is final; the aggregator refuses the banned client at once from
its own ledger and asks a :class:`Revoker` to revoke the certificate, so that every party that
checks the CRL refuses it too and the client learns, at its next connection, that it is revoked.

- :class:`CRLRevoker` holds the training's CA directory (the demo, a single-machine training):
  it revokes with reason ``privilege-withdrawn`` and rewrites ``crl.pem``, which the
  aggregator's :class:`~fedwarden.pki.PeerVerifier` reloads on the next connection.
- :class:`CallbackRevoker` hands the decision to a function (in Kubernetes the operator, which
  holds the CA, revokes and publishes the CRL).
- :class:`LogOnlyRevoker` only logs: the ban still holds through the pipeline's ledger.

Revocations are recorded in the checkpoint and applied again after a restart (revoking twice
keeps the first revocation), so a crash between a ban and its revocation loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography import x509

from fedwarden.pki import TrainingPKI

log = logging.getLogger("fedwarden.aggregator")

BAN_REVOCATION_REASON = "privilege-withdrawn"


class Revoker(Protocol):
    """Revokes a client's certificate; returns a sentence describing what was done."""

    def revoke(self, client: str, certificate: x509.Certificate | None, reason: str) -> str: ...


class CRLRevoker:
    """Revokes with the training's CA and rewrites its ``crl.pem``."""

    def __init__(self, pki_dir: Path | str) -> None:
        self.pki = TrainingPKI(pki_dir)

    def revoke(self, client: str, certificate: x509.Certificate | None, reason: str) -> str:
        if certificate is not None:
            entry = self.pki.revoke(certificate, BAN_REVOCATION_REASON)
        else:
            entry = self.pki.revoke_client(client, BAN_REVOCATION_REASON)
        return f"{client}: {entry.describe()} ({reason})"


class CallbackRevoker:
    """Calls ``callback(client, certificate, reason)``."""

    def __init__(self, callback: Callable[[str, x509.Certificate | None, str], object]) -> None:
        self.callback = callback

    def revoke(self, client: str, certificate: x509.Certificate | None, reason: str) -> str:
        result = self.callback(client, certificate, reason)
        return str(result) if result is not None else f"{client}: revocation requested"


class LogOnlyRevoker:
    """Logs the request; the ban still refuses the client through the pipeline's ledger."""

    def revoke(self, client: str, certificate: x509.Certificate | None, reason: str) -> str:
        log.warning(
            "no revoker configured: %s stays banned but its certificate is not revoked (%s)",
            client,
            reason,
        )
        return f"{client}: banned; certificate not revoked (no CA key here)"
