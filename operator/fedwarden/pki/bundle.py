"""Trust bundles: the CA certificates a peer accepts, one or several.

Normally a training's bundle holds its one CA. During a CA rotation it holds the old and the new
CA (concatenated PEM, new first), so certificates from either verify while they are being
replaced; when the last certificate of the old CA is gone, the bundle goes back to one CA.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from fedwarden.pki.errors import InvalidInputError
from fedwarden.pki.files import certificates_pem, load_certificates, read_bytes


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, colon-separated hex as openssl prints it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def directly_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s subject is ``cert``'s issuer and its key verifies the signature."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


class TrustBundle:
    """An ordered, de-duplicated set of trusted CA certificates."""

    def __init__(self, cas: Iterable[x509.Certificate]) -> None:
        seen: set[bytes] = set()
        unique: list[x509.Certificate] = []
        for ca in cas:
            digest = hashlib.sha256(ca.tbs_certificate_bytes).digest()
            if digest not in seen:
                seen.add(digest)
                unique.append(ca)
        if not unique:
            raise InvalidInputError("bad-pem", "a trust bundle needs at least one CA certificate")
        self.cas: tuple[x509.Certificate, ...] = tuple(unique)

    @classmethod
    def from_pem(cls, data: bytes, source: str = "CA bundle") -> TrustBundle:
        return cls(load_certificates(data, source))

    @classmethod
    def load(cls, path: Path | str) -> TrustBundle:
        return cls.from_pem(read_bytes(path, "CA bundle"), str(path))

    @classmethod
    def of(cls, value: TrustBundle | bytes | Iterable[x509.Certificate]) -> TrustBundle:
        if isinstance(value, TrustBundle):
            return value
        if isinstance(value, bytes):
            return cls.from_pem(value)
        return cls(value)

    def to_pem(self) -> bytes:
        return certificates_pem(self.cas)

    def __iter__(self) -> Iterator[x509.Certificate]:
        return iter(self.cas)

    def __len__(self) -> int:
        return len(self.cas)

    def __contains__(self, cert: object) -> bool:
        return isinstance(cert, x509.Certificate) and any(
            ca.tbs_certificate_bytes == cert.tbs_certificate_bytes for ca in self.cas
        )

    def with_ca(self, ca: x509.Certificate, *, first: bool = True) -> TrustBundle:
        return TrustBundle((ca, *self.cas) if first else (*self.cas, ca))

    def without(self, ca: x509.Certificate) -> TrustBundle:
        gone = ca.tbs_certificate_bytes
        return TrustBundle(c for c in self.cas if c.tbs_certificate_bytes != gone)

    def subjects(self) -> list[str]:
        return [ca.subject.rfc4514_string() for ca in self.cas]

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The CA in this bundle that signed ``cert``, or ``None``."""
        for ca in self.cas:
            if directly_issued_by(cert, ca):
                return ca
        return None

    def same_name_as_issuer(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """CAs whose subject equals ``cert``'s issuer (whether or not their key signed it)."""
        return [ca for ca in self.cas if ca.subject == cert.issuer]


def rotation_bundle(new_ca: x509.Certificate, old_ca: x509.Certificate) -> bytes:
    """The PEM bundle to hand out during a CA rotation: the new CA, then the old."""
    return TrustBundle([new_ca, old_ca]).to_pem()
