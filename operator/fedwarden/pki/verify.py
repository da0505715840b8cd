"""Verifying certificates, and authorising a client from its TLS peer certificate.

:func:`verify_certificate` builds the path with cryptography's X.509 verifier (RFC 5280 and the
Web PKI profile: validity, signatures, CA constraints, key usage, extended key usage, names)
against a trust bundle, so a certificate from either CA verifies while a rotation bundle holds
both; it then checks the revocation list. When it refuses, :func:`fedwarden.pki.diagnose.diagnose`
names the reason, so the exception carries the same code ``pki check`` prints.

:class:`PeerVerifier` is what the aggregator runs on each connection, after the TLS handshake
and before it reads a single update: verify the peer certificate, reload the CRL if the file
changed, refuse revoked certificates, and take the client's identity from the URI SAN.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification

from fedwarden.pki.bundle import TrustBundle
from fedwarden.pki.diagnose import Purpose, diagnose
from fedwarden.pki.errors import CertificateProblem, PKIError
from fedwarden.pki.files import load_certificate
from fedwarden.pki.identity import ClientIdentity, TrainingRef, identity_from_certificate
from fedwarden.pki.revocation import RevocationList

log = logging.getLogger("fedwarden.pki")


def verify_certificate(
    cert: x509.Certificate | bytes,
    bundle: TrustBundle | bytes | Iterable[x509.Certificate],
    *,
    purpose: Purpose = "client",
    server_name: str | None = None,
    crl: RevocationList | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Verify ``cert`` for ``purpose`` against ``bundle``; return the CA that issued it.

    A server certificate is verified for ``server_name`` (a DNS name or an IP address). Raises
    :class:`CertificateProblem` whose ``reason`` is a diagnosis code (``expired``,
    ``unknown-issuer``, ``revoked``, ...).
    """
    leaf = cert if isinstance(cert, x509.Certificate) else load_certificate(cert, "certificate")
    trust = TrustBundle.of(bundle)
    when = dt.datetime.now(dt.UTC) if now is None else now
    builder = verification.PolicyBuilder().store(verification.Store(list(trust))).time(when)
    try:
        if purpose == "server":
            if not server_name:
                raise ValueError("verifying a server certificate needs the server_name")
            try:
                subject: verification.Subject = x509.IPAddress(ipaddress.ip_address(server_name))
            except ValueError:
                subject = x509.DNSName(server_name)
            chain = builder.build_server_verifier(subject).verify(leaf, [])
        else:
            chain = builder.build_client_verifier().verify(leaf, []).chain
    except verification.VerificationError as exc:
        problems = diagnose(
            leaf, ca_bundle_pem=trust, expected_name=server_name, purpose=purpose, now=when
        )
        if problems:
            raise problems[0].error() from exc
        raise CertificateProblem(
            "verify-failed", f"{leaf.subject.rfc4514_string()!r} failed verification: {exc}"
        ) from exc
    if crl is not None:
        entry = crl.is_revoked(leaf)
        if entry is not None:
            raise CertificateProblem(
                "revoked", f"the certificate {leaf.subject.rfc4514_string()!r}: {entry.describe()}"
            )
    return chain[-1]


class PeerVerifier:
    """Authorises clients of one training from their TLS peer certificates.

    ``crl_path``, when given, is re-read whenever it changes (one ``stat`` per call otherwise);
    a reload that fails keeps the list in force and is logged with its reason. A path that does
    not exist (yet) is watched all the same: no certificate is revoked until it appears, which
    is logged once. A CRL past its nextUpdate stays in force (its revocations are final; a
    fresh list can only add to them) and is logged once per list: re-signing it is the CA's job
    (``fedwarden pki refresh-crl``; the operator does it on its own).
    """

    def __init__(
        self,
        training: TrainingRef,
        bundle: TrustBundle | bytes | Iterable[x509.Certificate],
        *,
        revocations: RevocationList | None = None,
        crl_path: Path | str | None = None,
    ) -> None:
        self.training = training
        self.bundle = TrustBundle.of(bundle)
        self.crl_path = None if crl_path is None else Path(crl_path)
        self._told: set[str] = set()
        if revocations is None and self.crl_path is not None:
            if self.crl_path.exists():
                revocations = RevocationList.load(self.crl_path, trusted=self.bundle)
            else:
                revocations = RevocationList(trusted=self.bundle)
                self._tell(
                    f"the CRL {self.crl_path} does not exist: no certificate is revoked until it "
                    "appears (it is watched)"
                )
        self.revocations = revocations

    def _tell(self, message: str) -> None:
        if message not in self._told:
            self._told.add(message)
            log.warning("%s", message)

    def set_bundle(self, bundle: TrustBundle | bytes | Iterable[x509.Certificate]) -> None:
        """Swap the trust bundle (a CA rotation starts or ends)."""
        self.bundle = TrustBundle.of(bundle)
        if self.revocations is not None:
            self.revocations.trusted = self.bundle

    def reload_revocations(self) -> bool:
        if self.crl_path is None or self.revocations is None:
            return False
        if not self.crl_path.exists():
            if self.revocations.crls:
                self._tell(f"the CRL {self.crl_path} is gone: keeping the list in force")
            return False
        try:
            changed = self.revocations.reload_if_changed(self.crl_path)
        except PKIError as exc:
            log.warning("keeping the revocation list in force: %s (%s)", exc.message, exc.reason)
            return False
        for stale in self.revocations.stale():
            self._tell(f"{stale}; its revocations stay in force until a fresh list replaces it")
        return changed

    def verify(
        self, peer_certificate: x509.Certificate | bytes, now: dt.datetime | None = None
    ) -> ClientIdentity:
        """The client behind ``peer_certificate`` (DER or PEM), or :class:`CertificateProblem`."""
        cert = (
            peer_certificate
            if isinstance(peer_certificate, x509.Certificate)
            else load_certificate(peer_certificate, "peer certificate")
        )
        self.reload_revocations()
        verify_certificate(cert, self.bundle, purpose="client", crl=self.revocations, now=now)
        return identity_from_certificate(cert, self.training)
