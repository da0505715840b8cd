"""A training's PKI on disk: the operations ``fedwarden pki`` and the operator perform.

:class:`TrainingPKI` works on a :class:`~fedwarden.pki.files.PKIDirectory`: it creates the CA,
issues and records certificates, signs CSRs under the policy, revokes (re-signing ``crl.pem``),
and rotates the CA in two steps:

1. :meth:`TrainingPKI.start_rotation` moves the current CA to ``previous/``, makes a new CA and
   writes ``ca-bundle.crt`` = new + old; hand this bundle to every party, then reissue the
   server's and clients' certificates (from the new CA); both verify meanwhile.
2. :meth:`TrainingPKI.finish_rotation`, once nothing uses a certificate of the old CA, drops it
   from the bundle and from ``crl.pem`` and deletes ``previous/``.

Issued certificates are recorded (``server.crt``, ``clients/<name>.crt``) so that they can be
revoked by client name and listed; keys are recorded only when asked (the in-cluster operator
keeps them to fill Secrets; the command line writes them only to ``--out``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from fedwarden.pki.bundle import TrustBundle
from fedwarden.pki.ca import (
    DEFAULT_CA_DURATION,
    DEFAULT_LEAF_DURATION,
    CertificateAuthority,
    IssuedCertificate,
)
from fedwarden.pki.csr import SigningPolicy, sign_csr
from fedwarden.pki.errors import InvalidInputError
from fedwarden.pki.files import (
    PKIDirectory,
    TLSDirectory,
    load_certificate,
    read_bytes,
    read_certificate,
    read_private_key,
    write_atomic,
    write_certificates,
    write_private_key,
)
from fedwarden.pki.identity import TrainingRef, check_name
from fedwarden.pki.keys import as_signing_key
from fedwarden.pki.revocation import DEFAULT_CRL_VALIDITY, RevocationList, RevokedEntry


class TrainingPKI:
    """The CA directory of one training, and what can be done with it."""

    def __init__(self, root: Path | str | PKIDirectory) -> None:
        self.dir = root if isinstance(root, PKIDirectory) else PKIDirectory(root)
        self._ca: CertificateAuthority | None = None

    # --- creating ----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        root: Path | str,
        training: TrainingRef,
        *,
        duration: dt.timedelta = DEFAULT_CA_DURATION,
        now: dt.datetime | None = None,
        overwrite: bool = False,
    ) -> TrainingPKI:
        """Create the CA, an empty CRL and the trust bundle in ``root``."""
        pki = cls(root)
        if pki.dir.ca_cert.exists() and not overwrite:
            raise InvalidInputError(
                "exists",
                f"{pki.dir.ca_cert} already exists; a CA is made once per training "
                "(rotate it with `fedwarden pki rotate-ca`)",
            )
        ca = CertificateAuthority.create(training, duration=duration, now=now)
        ca.save(pki.dir)
        write_certificates(pki.dir.bundle, ca.certificate)
        pki._ca = ca
        pki._save_revocations(RevocationList.empty(ca, now=now))
        return pki

    # --- reading -----------------------------------------------------------------------

    @property
    def ca(self) -> CertificateAuthority:
        if self._ca is None:
            self._ca = CertificateAuthority.load(self.dir)
        return self._ca

    @property
    def training(self) -> TrainingRef:
        return self.ca.training

    def previous_ca(self) -> CertificateAuthority | None:
        if not self.dir.previous_ca_cert.exists():
            return None
        return CertificateAuthority(
            read_certificate(self.dir.previous_ca_cert),
            as_signing_key(read_private_key(self.dir.previous_ca_key)),
        )

    def bundle(self) -> TrustBundle:
        if self.dir.bundle.exists():
            return TrustBundle.load(self.dir.bundle)
        return TrustBundle([self.ca.certificate])

    def revocations(self, *, now: dt.datetime | None = None) -> RevocationList:
        """``crl.pem``, brought up to the CA's recorded state (``revocations.json``) if the file
        was lost or replaced by an older copy; :meth:`_save_revocations` writes both back."""
        if self.dir.crl.exists():
            revocations = RevocationList.load(self.dir.crl, trusted=self.bundle())
        else:
            revocations = RevocationList(trusted=self.bundle())
        if self.dir.revocation_state.exists():
            state = json.loads(read_bytes(self.dir.revocation_state, "revocation state"))
            for ca in filter(None, (self.ca, self.previous_ca())):
                revocations.restore(state, ca, now=now)
        return revocations

    def _save_revocations(self, revocations: RevocationList) -> None:
        """The state first: a crash between the two writes leaves a CRL that the state
        rebuilds, never a state behind the CRL."""
        state = json.dumps(revocations.state(), indent=2, sort_keys=True) + "\n"
        write_atomic(self.dir.revocation_state, state.encode(), 0o644)
        revocations.save(self.dir.crl)

    # --- issuing -----------------------------------------------------------------------

    def issue_server(
        self,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str] = (),
        *,
        duration: dt.timedelta = DEFAULT_LEAF_DURATION,
        keep_key: bool = False,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        issued = self.ca.issue_server(dns_names, ip_addresses, duration=duration, now=now)
        write_certificates(self.dir.server_cert, issued.certificate)
        if keep_key and issued.key is not None:
            write_private_key(self.dir.server_key, issued.key)
        return issued

    def issue_client(
        self,
        client: str,
        *,
        duration: dt.timedelta = DEFAULT_LEAF_DURATION,
        keep_key: bool = False,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        issued = self.ca.issue_client(client, duration=duration, now=now)
        self._record_client(client, issued.certificate)
        if keep_key and issued.key is not None:
            write_private_key(self.dir.client_key(client), issued.key)
        return issued

    def sign(
        self,
        csr_pem: bytes,
        client: str,
        *,
        policy: SigningPolicy | None = None,
        duration: dt.timedelta | None = None,
        now: dt.datetime | None = None,
    ) -> bytes:
        """Sign a remote site's CSR for ``client`` under ``policy``; record and return the cert."""
        cert_pem = sign_csr(self.ca, csr_pem, client, policy, duration=duration, now=now)
        self._record_client(client, load_certificate(cert_pem))
        return cert_pem

    def _record_client(self, client: str, cert: x509.Certificate) -> None:
        check_name("client name", client)
        self.dir.clients.mkdir(parents=True, exist_ok=True)
        write_certificates(self.dir.client_cert(client), cert)

    def write_tls_directory(self, out: Path | str, issued: IssuedCertificate) -> TLSDirectory:
        """Write ``issued`` as a directory shaped like a ``kubernetes.io/tls`` Secret."""
        tls = TLSDirectory(out)
        tls.write(issued.certificate, issued.key, self.bundle().to_pem())
        return tls

    # --- revoking ----------------------------------------------------------------------

    def revoke(
        self,
        cert: x509.Certificate,
        reason: str = "unspecified",
        *,
        now: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_CRL_VALIDITY,
    ) -> RevokedEntry:
        """Revoke ``cert`` with the CA that issued it (current or previous) and save crl.pem."""
        signer = self._issuer_of(cert)
        revocations = self.revocations(now=now)
        entry = revocations.revoke(cert, reason, ca=signer, now=now, validity=validity)
        self._save_revocations(revocations)
        return entry

    def revoke_client(
        self,
        client: str,
        reason: str = "unspecified",
        *,
        now: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_CRL_VALIDITY,
    ) -> RevokedEntry:
        path = self.dir.client_cert(check_name("client name", client))
        if not path.exists():
            raise InvalidInputError(
                "missing-file",
                f"no certificate recorded for client {client!r} ({path}); revoke with --cert",
            )
        return self.revoke(read_certificate(path), reason, now=now, validity=validity)

    def refresh_crl(
        self, *, now: dt.datetime | None = None, validity: dt.timedelta = DEFAULT_CRL_VALIDITY
    ) -> RevocationList:
        """Re-sign the CRL of every CA in the bundle with a new nextUpdate."""
        revocations = self.revocations(now=now)
        for ca in filter(None, (self.ca, self.previous_ca())):
            revocations.refresh(ca, now=now, validity=validity)
        self._save_revocations(revocations)
        return revocations

    def _issuer_of(self, cert: x509.Certificate) -> CertificateAuthority:
        for ca in filter(None, (self.ca, self.previous_ca())):
            if cert.issuer == ca.certificate.subject:
                return ca
        raise InvalidInputError(
            "wrong-issuer",
            f"the certificate was issued by {cert.issuer.rfc4514_string()!r}, which is not this "
            f"training's CA ({self.ca.subject!r})",
        )

    # --- rotating the CA ---------------------------------------------------------------

    def start_rotation(
        self, *, duration: dt.timedelta = DEFAULT_CA_DURATION, now: dt.datetime | None = None
    ) -> CertificateAuthority:
        """Make a new CA; keep the old in ``previous/``; the bundle holds both (new first)."""
        if self.dir.previous_ca_cert.exists():
            raise InvalidInputError(
                "rotation-in-progress",
                "a CA rotation is already under way; finish it first "
                "(`fedwarden pki rotate-ca --finish`)",
            )
        old = self.ca
        new = CertificateAuthority.create(old.training, duration=duration, now=now)
        self.dir.previous.mkdir(mode=0o700, exist_ok=True)
        write_private_key(self.dir.previous_ca_key, old.key)
        write_certificates(self.dir.previous_ca_cert, old.certificate)
        new.save(self.dir)
        write_certificates(self.dir.bundle, [new.certificate, old.certificate])
        self._ca = new
        revocations = self.revocations(now=now)
        revocations.refresh(new, now=now)
        self._save_revocations(revocations)
        return new

    def finish_rotation(self) -> None:
        """Drop the previous CA from the bundle and the CRL file; delete ``previous/``."""
        old = self.previous_ca()
        if old is None:
            raise InvalidInputError("no-rotation", "no CA rotation is under way")
        revocations = self.revocations()
        revocations.drop_issuer(old.certificate.subject)
        write_certificates(self.dir.bundle, self.ca.certificate)
        revocations.trusted = TrustBundle([self.ca.certificate])
        self._save_revocations(revocations)
        shutil.rmtree(self.dir.previous)
