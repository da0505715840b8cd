"""Where the aggregator's certificates come from, and whom it trusts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedwarden.pki import (
    InvalidInputError,
    PeerVerifier,
    PKIDirectory,
    TLSDirectory,
    TrainingRef,
    TrustBundle,
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
            crl=d.crl if d.crl.exists() else None,
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
        if self.crl is not None and not self.crl.exists():
            raise InvalidInputError("missing-file", f"the CRL {self.crl} does not exist")

    def bundle(self) -> TrustBundle:
        return TrustBundle.load(self.ca)

    def training(self) -> TrainingRef:
        return training_from_bundle(self.bundle())

    def verifier(self) -> PeerVerifier:
        return PeerVerifier(self.training(), self.bundle(), crl_path=self.crl)


def training_from_bundle(bundle: TrustBundle) -> TrainingRef:
    """The training a trust bundle's CAs were made for (the URI of ``fedwarden pki init-ca``)."""
    return training_of_cas(bundle)
