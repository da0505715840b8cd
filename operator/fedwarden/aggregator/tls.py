"""Where the aggregator's certificates come from, and whom it trusts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from fedwarden.pki import (
    InvalidInputError,
    PeerVerifier,
    PKIDirectory,
    TLSDirectory,
    TrainingRef,
    TrustBundle,
    read_certificate,
)
from fedwarden.pki.identity import training_of_cas


@dataclass(frozen=True)
class ServerTLS:
    """The aggregator's key pair, the trust bundle clients are verified against, and the CRL.

    ``pki_dir`` (a training's CA directory) is only needed to revoke banned clients' certificates
    in place (:class:`~fedwarden.aggregator.revocation.CRLRevoker`).
    """

    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None
    pki_dir: Path | None = None

    @classmethod
    def from_pki_dir(
        cls,
        pki_dir: Path | str,
        *,
        cert: Path | str | None = None,
        key: Path | str | None = None,
    ) -> ServerTLS:
        """The layout of ``fedwarden pki``: ``server.crt``/``server.key`` (unless given),
        ``ca-bundle.crt`` and ``crl.pem`` of the CA directory."""
        d = PKIDirectory(pki_dir)
        bundle = d.bundle if d.bundle.exists() else d.ca_cert
        tls = cls(
            cert=Path(cert) if cert else d.server_cert,
            key=Path(key) if key else d.server_key,
            ca=bundle,
            crl=d.crl,  # watched even if absent: a later `pki revoke` writes it
            pki_dir=d.root,
        )
        tls.check()
        return tls

    @classmethod
    def from_tls_dir(cls, tls_dir: Path | str, *, crl: Path | str | None = None) -> ServerTLS:
        """A directory shaped like a ``kubernetes.io/tls`` Secret (tls.crt, tls.key, ca.crt)."""
        d = TLSDirectory(tls_dir)
        tls = cls(cert=d.cert, key=d.key, ca=d.ca, crl=Path(crl) if crl else None)
        tls.check()
        return tls

    def check(self) -> None:
        for what, path in (("certificate", self.cert), ("key", self.key), ("CA bundle", self.ca)):
            if not path.exists():
                raise InvalidInputError(
                    "missing-file", f"the server's {what} {path} does not exist"
                )
        self._check_chain()

    def _check_chain(self) -> None:
        """The server certificate must be issued by a CA of the bundle the clients are verified
        against: otherwise the aggregator would serve one training's clients while trusting
        another's, and every client would only see its connection closed."""
        cert = read_certificate(self.cert)
        bundle = self.bundle()
        for ca in bundle:
            if ca.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return
        raise InvalidInputError(
            "server-not-in-bundle",
            f"the server certificate {self.cert} was issued by "
            f"{cert.issuer.rfc4514_string()!r}, which is not a CA of the bundle {self.ca} "
            f"({'; '.join(bundle.subjects())}): they belong to different trainings (another "
            "training's --pki-dir or --ca?)",
        )

    def bundle(self) -> TrustBundle:
        return TrustBundle.load(self.ca)

    def training(self) -> TrainingRef:
        return training_from_bundle(self.bundle())

    def verifier(self) -> PeerVerifier:
        return PeerVerifier(self.training(), self.bundle(), crl_path=self.crl)


def training_from_bundle(bundle: TrustBundle) -> TrainingRef:
    """The training a trust bundle's CAs were made for (the URI of ``fedwarden pki init-ca``)."""
    return training_of_cas(bundle)
