"""A certificate authority per training, and the certificates it issues.

Each training has its own CA, so a certificate of one training is worthless in another and a
training's whole PKI goes away with it. The CA is ECDSA P-256, self-signed, with
``BasicConstraints(ca=True, path_length=0)`` (it signs leaves only, never another CA), key usage
keyCertSign and cRLSign, and the training's SPIFFE ID as its URI subjectAltName, from which
:attr:`CertificateAuthority.training` is read back. Serial numbers are random 159-bit integers.

Leaves follow cert-manager's conventions: 90 days by default, ``BasicConstraints(ca=False)``,
key usage digitalSignature (ECDSA keys neither encipher nor agree keys in TLS 1.3), subject and
authority key identifiers. Server certificates carry extended key usage serverAuth, the DNS names
and IP addresses the aggregator is reached by, and the aggregator's SPIFFE ID; client
certificates carry clientAuth, the client's name as commonName and its SPIFFE ID as the one URI.

Validity starts five minutes in the past so that a peer whose clock is a little behind does not
see a brand new certificate as "not yet valid"; a leaf never outlives its CA (its notAfter is
capped at the CA's).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedwarden.pki.errors import CertificateProblem, InvalidInputError
from fedwarden.pki.files import (
    PKIDirectory,
    certificate_pem,
    load_certificate,
    load_private_key,
    private_key_pem,
    read_certificate,
    read_private_key,
    write_certificates,
    write_private_key,
)
from fedwarden.pki.identity import (
    ClientIdentity,
    TrainingRef,
    check_name,
    uri_sans,
)
from fedwarden.pki.keys import SigningKey, as_signing_key, generate_key, same_public_key

DEFAULT_CA_DURATION = dt.timedelta(days=365)
DEFAULT_LEAF_DURATION = dt.timedelta(days=90)
"""cert-manager's default certificate duration (2160h)."""
BACKDATE = dt.timedelta(minutes=5)

_HOSTNAME = re.compile(
    r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(when: dt.datetime | None) -> dt.datetime:
    when = utcnow() if when is None else when
    if when.tzinfo is None:
        raise ValueError("times must be timezone-aware (use datetime.now(datetime.UTC))")
    return when.astimezone(dt.UTC).replace(microsecond=0)


def hash_for(key: SigningKey) -> hashes.SHA256 | hashes.SHA384:
    """SHA-384 for a P-384 key, SHA-256 otherwise (the pairing TLS 1.3 signature schemes use)."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _name(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def check_dns_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > 253 or not _HOSTNAME.match(name):
        raise InvalidInputError(
            "invalid-name",
            f"{name!r} is not a DNS name (lower-case labels of letters, digits and '-', "
            "separated by '.'; a leading '*.' is allowed)",
        )
    return name


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise InvalidInputError("invalid-name", f"{value!r} is not an IP address") from exc


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and, when the CA made it, its private key."""

    certificate: x509.Certificate
    key: SigningKey | None = None

    @property
    def cert_pem(self) -> bytes:
        return certificate_pem(self.certificate)

    @property
    def key_pem(self) -> bytes:
        if self.key is None:
            raise InvalidInputError("bad-key", "this certificate was issued for a CSR; no key")
        return private_key_pem(self.key)


@dataclass(frozen=True)
class CertificateAuthority:
    """A training's CA: its certificate and private key."""

    certificate: x509.Certificate
    key: SigningKey

    def __post_init__(self) -> None:
        if not same_public_key(self.certificate.public_key(), self.key.public_key()):
            raise InvalidInputError("key-mismatch", "the CA key does not match the CA certificate")
        try:
            bc = self.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is None or not bc.ca:
            raise InvalidInputError(
                "not-a-ca",
                f"{self.certificate.subject.rfc4514_string()!r} is not a CA certificate "
                "(no BasicConstraints CA:TRUE)",
            )

    # --- creating and loading ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        training: TrainingRef,
        *,
        duration: dt.timedelta = DEFAULT_CA_DURATION,
        now: dt.datetime | None = None,
        key: SigningKey | None = None,
    ) -> CertificateAuthority:
        """A new self-signed CA for ``training`` (ECDSA P-256 unless ``key`` is given)."""
        if duration <= dt.timedelta(0):
            raise ValueError(f"the CA duration must be positive, got {duration}")
        now = _aware(now)
        key = key if key is not None else generate_key("ecdsa-p256")
        public = key.public_key()
        ski = x509.SubjectKeyIdentifier.from_public_key(public)
        subject = _name(
            (NameOID.ORGANIZATION_NAME, "fedwarden"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, training.namespace),
            # a second OU tells the CAs of one training apart (after a rotation, two CAs are
            # trusted at once; issuer names, CRLs and messages must not confuse them)
            (
                NameOID.ORGANIZATIONAL_UNIT_NAME,
                f"CA {now:%Y-%m-%dT%H:%M:%SZ} {ski.digest.hex()[:8]}",
            ),
            (NameOID.COMMON_NAME, training.training),
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + duration)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(training.uri)]),
                critical=False,
            )
            .sign(key, hash_for(key))
        )
        return cls(cert, key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        return cls(
            load_certificate(cert_pem, "CA certificate"),
            as_signing_key(load_private_key(key_pem, "CA key")),
        )

    @classmethod
    def load(cls, directory: PKIDirectory | str) -> CertificateAuthority:
        d = directory if isinstance(directory, PKIDirectory) else PKIDirectory(directory)
        if not d.root.is_dir():
            raise InvalidInputError("missing-file", f"CA directory {d.root} does not exist")
        return cls(read_certificate(d.ca_cert), as_signing_key(read_private_key(d.ca_key)))

    def save(self, directory: PKIDirectory | str) -> PKIDirectory:
        """Write ca.crt and ca.key (0600) into ``directory`` (made 0700)."""
        d = directory if isinstance(directory, PKIDirectory) else PKIDirectory(directory)
        d.create()
        write_private_key(d.ca_key, self.key)
        write_certificates(d.ca_cert, self.certificate)
        return d

    # --- what it is ---------------------------------------------------------------------

    @property
    def training(self) -> TrainingRef:
        uris = uri_sans(self.certificate)
        for uri in uris:
            try:
                return TrainingRef.from_uri(uri)
            except InvalidInputError:
                continue
        raise InvalidInputError(
            "not-a-fedwarden-ca",
            f"CA {self.subject!r} carries no training identity "
            "(a URI spiffe://<trust-domain>/ns/<namespace>/training/<name>); "
            "it was not made by `fedwarden pki init-ca`",
        )

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def cert_pem(self) -> bytes:
        return certificate_pem(self.certificate)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    # --- issuing ------------------------------------------------------------------------

    def issue_server(
        self,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str] = (),
        *,
        duration: dt.timedelta = DEFAULT_LEAF_DURATION,
        now: dt.datetime | None = None,
        key: SigningKey | None = None,
    ) -> IssuedCertificate:
        """A key and certificate for the aggregator, for ``dns_names`` and ``ip_addresses``."""
        names = [check_dns_name(n) for n in dns_names]
        ips = [parse_ip(ip) for ip in ip_addresses]
        if not names and not ips:
            raise InvalidInputError(
                "invalid-name", "a server certificate needs at least one DNS name or IP address"
            )
        key = key if key is not None else generate_key("ecdsa-p256")
        training = self.training
        common_name = names[0] if names and len(names[0]) <= 64 else training.training
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ip) for ip in ips]
        sans.append(x509.UniformResourceIdentifier(training.aggregator_uri))
        cert = self._sign_leaf(
            _name(
                (NameOID.ORGANIZATION_NAME, "fedwarden"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, training.namespace),
                (NameOID.COMMON_NAME, common_name),
            ),
            key.public_key(),
            sans,
            ExtendedKeyUsageOID.SERVER_AUTH,
            duration=duration,
            now=now,
        )
        return IssuedCertificate(cert, key)

    def issue_client(
        self,
        client: str,
        *,
        duration: dt.timedelta = DEFAULT_LEAF_DURATION,
        now: dt.datetime | None = None,
        key: SigningKey | None = None,
    ) -> IssuedCertificate:
        """A key and certificate for ``client`` (in-cluster enrolment: the CA makes the key)."""
        key = key if key is not None else generate_key("ecdsa-p256")
        cert = self.sign_client_key(key.public_key(), client, duration=duration, now=now)
        return IssuedCertificate(cert, key)

    def issue_reader(
        self,
        name: str,
        *,
        duration: dt.timedelta = DEFAULT_LEAF_DURATION,
        now: dt.datetime | None = None,
        key: SigningKey | None = None,
    ) -> IssuedCertificate:
        """A key and client certificate for a reader of the training (``.../reader/<name>``):
        it may fetch the exported model from the aggregator, and cannot act as a client."""
        key = key if key is not None else generate_key("ecdsa-p256")
        training = self.training
        cert = self._sign_leaf(
            _name(
                (NameOID.ORGANIZATION_NAME, "fedwarden"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, training.namespace),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, training.training),
                (NameOID.COMMON_NAME, f"reader {name}"),
            ),
            key.public_key(),
            [x509.UniformResourceIdentifier(training.reader_uri(name))],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            duration=duration,
            now=now,
        )
        return IssuedCertificate(cert, key)

    def sign_client_key(
        self,
        public_key: CertificatePublicKeyTypes,
        client: str,
        *,
        duration: dt.timedelta = DEFAULT_LEAF_DURATION,
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A client certificate for ``public_key``; the CA writes subject and extensions."""
        identity = self.training.client(check_name("client name", client))
        return self._sign_leaf(
            client_subject(identity),
            public_key,
            [x509.UniformResourceIdentifier(identity.uri)],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            duration=duration,
            now=now,
        )

    def _sign_leaf(
        self,
        subject: x509.Name,
        public_key: CertificatePublicKeyTypes,
        sans: Iterable[x509.GeneralName],
        eku: x509.ObjectIdentifier,
        *,
        duration: dt.timedelta,
        now: dt.datetime | None,
    ) -> x509.Certificate:
        if duration <= dt.timedelta(0):
            raise ValueError(f"the certificate duration must be positive, got {duration}")
        now = _aware(now)
        ca_not_before = self.certificate.not_valid_before_utc
        ca_not_after = self.certificate.not_valid_after_utc
        if now >= ca_not_after:
            raise CertificateProblem(
                "ca-expired",
                f"the CA {self.subject!r} expired on {ca_not_after:%Y-%m-%d %H:%M:%S} UTC; "
                "rotate it (`fedwarden pki rotate-ca`) before issuing",
            )
        if now < ca_not_before:
            raise CertificateProblem(
                "ca-not-yet-valid",
                f"the CA {self.subject!r} is valid only from {ca_not_before:%Y-%m-%d %H:%M:%S} UTC",
            )
        not_before = max(now - BACKDATE, ca_not_before)
        not_after = min(now + duration, ca_not_after)
        try:
            ca_ski = self.certificate.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(aki, critical=False)
            .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
            .sign(self.key, hash_for(self.key))
        )


def client_subject(identity: ClientIdentity) -> x509.Name:
    return _name(
        (NameOID.ORGANIZATION_NAME, "fedwarden"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, identity.namespace),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, identity.training),
        (NameOID.COMMON_NAME, identity.client),
    )
