"""Who a certificate names: the training a CA belongs to and the client a certificate speaks for.

Identities are SPIFFE IDs (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md),
carried as the one URI subjectAltName of a certificate::

    spiffe://<trust-domain>/ns/<namespace>/training/<training>                      the CA
    spiffe://<trust-domain>/ns/<namespace>/training/<training>/client/<client>      a client
    spiffe://<trust-domain>/ns/<namespace>/training/<training>/aggregator           the server
    spiffe://<trust-domain>/ns/<namespace>/training/<training>/reader/<reader>      a reader

A reader may fetch the exported model from the aggregator and nothing else; it is no client
(:func:`identity_from_certificate` refuses it) and a client is no reader
(:func:`reader_from_certificate` refuses it).

The aggregator takes a client's identity from the URI of its TLS peer certificate, never from a
message, and :func:`identity_from_certificate` refuses everything that is not exactly a client of
the expected training: no URI, several URIs, another scheme, another trust domain, another
namespace or training, the aggregator's own identity, a path with extra segments.

Names follow Kubernetes: the namespace is a DNS-1123 label, training and client names are
DNS-1123 subdomains. Names are limited to 63 characters because the training and client names
are also the commonName of certificates (at most 64 characters in X.509).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

from fedwarden.pki.errors import CertificateProblem, InvalidInputError

DEFAULT_TRUST_DOMAIN = "fedwarden.local"

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
MAX_NAME_LENGTH = 63


def _check(kind: str, value: str, pattern: re.Pattern[str], rule: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError("invalid-name", f"{kind} must be a non-empty string")
    if len(value) > limit:
        raise InvalidInputError(
            "invalid-name", f"{kind} {value!r} is {len(value)} characters long; at most {limit}"
        )
    if not pattern.match(value) or ".." in value:
        raise InvalidInputError("invalid-name", f"{kind} {value!r} is not valid: {rule}")
    return value


def check_namespace(value: str) -> str:
    return _check(
        "namespace",
        value,
        _LABEL,
        "use lower-case letters, digits and '-', starting and ending with a letter or digit",
        MAX_NAME_LENGTH,
    )


def check_name(kind: str, value: str) -> str:
    """Check a training or client name (a DNS-1123 subdomain of at most 63 characters)."""
    return _check(
        kind,
        value,
        _SUBDOMAIN,
        "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
        MAX_NAME_LENGTH,
    )


def check_trust_domain(value: str) -> str:
    return _check(
        "trust domain",
        value,
        _TRUST_DOMAIN,
        "use lower-case letters, digits, '.', '-' and '_' (SPIFFE trust domain)",
        255,
    )


@dataclass(frozen=True)
class TrainingRef:
    """A training: the scope of one CA and of every identity it certifies."""

    namespace: str
    training: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN

    def __post_init__(self) -> None:
        check_namespace(self.namespace)
        check_name("training name", self.training)
        check_trust_domain(self.trust_domain)

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/training/{self.training}"

    @property
    def aggregator_uri(self) -> str:
        return f"{self.uri}/aggregator"

    def reader_uri(self, name: str) -> str:
        return f"{self.uri}/reader/{check_name('reader name', name)}"

    def client(self, name: str) -> ClientIdentity:
        return ClientIdentity(self.namespace, self.training, name, self.trust_domain)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.training}"

    @classmethod
    def from_uri(cls, uri: str) -> TrainingRef:
        trust_domain, segments = _split(uri)
        if len(segments) != 4 or segments[0] != "ns" or segments[2] != "training":
            raise InvalidInputError(
                "malformed-identity",
                f"{uri!r} is not a training identity "
                "(spiffe://<trust-domain>/ns/<namespace>/training/<name>)",
            )
        return cls(segments[1], segments[3], trust_domain)


@dataclass(frozen=True)
class ClientIdentity:
    """A client of a training, as named by its certificate."""

    namespace: str
    training: str
    client: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN

    def __post_init__(self) -> None:
        check_namespace(self.namespace)
        check_name("training name", self.training)
        check_name("client name", self.client)
        check_trust_domain(self.trust_domain)

    @property
    def training_ref(self) -> TrainingRef:
        return TrainingRef(self.namespace, self.training, self.trust_domain)

    @property
    def uri(self) -> str:
        return f"{self.training_ref.uri}/client/{self.client}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def from_uri(cls, uri: str) -> ClientIdentity:
        trust_domain, segments = _split(uri)
        if (
            len(segments) != 6
            or segments[0] != "ns"
            or segments[2] != "training"
            or segments[4] != "client"
        ):
            raise InvalidInputError(
                "malformed-identity",
                f"{uri!r} is not a client identity "
                "(spiffe://<trust-domain>/ns/<namespace>/training/<name>/client/<client>)",
            )
        return cls(segments[1], segments[3], segments[5], trust_domain)


def _split(uri: str) -> tuple[str, list[str]]:
    prefix = "spiffe://"
    if not uri.startswith(prefix):
        raise InvalidInputError("malformed-identity", f"{uri!r} is not a spiffe:// URI")
    rest = uri[len(prefix) :]
    trust_domain, _, path = rest.partition("/")
    if not trust_domain or not path or "?" in rest or "#" in rest or "%" in rest:
        raise InvalidInputError("malformed-identity", f"{uri!r} is not a valid SPIFFE ID")
    return trust_domain, path.split("/")


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def common_names(name: x509.Name) -> list[str]:
    return [str(attr.value) for attr in name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]


def identity_from_certificate(cert: x509.Certificate, training: TrainingRef) -> ClientIdentity:
    """The client a peer certificate names, if it is a client of ``training``; else raise.

    Raises :class:`CertificateProblem` with reason ``no-identity`` (no URI SAN),
    ``malformed-identity`` (several URIs, or one that is not a client SPIFFE ID),
    ``foreign-trust-domain``, ``wrong-training`` or ``name-mismatch`` (the commonName differs
    from the client named by the URI).
    """
    uris = uri_sans(cert)
    if not uris:
        raise CertificateProblem(
            "no-identity",
            f"certificate {cert.subject.rfc4514_string()!r} carries no URI subjectAltName; "
            f"a client certificate must name its client as {training.uri}/client/<name>",
        )
    if len(uris) > 1:
        raise CertificateProblem(
            "malformed-identity",
            f"certificate carries {len(uris)} URI subjectAltNames ({', '.join(uris)}); "
            "exactly one is allowed",
        )
    uri = uris[0]
    try:
        trust_domain, _ = _split(uri)
    except InvalidInputError as exc:
        raise CertificateProblem("malformed-identity", exc.message) from exc
    if trust_domain != training.trust_domain:
        raise CertificateProblem(
            "foreign-trust-domain",
            f"identity {uri!r} belongs to trust domain {trust_domain!r}, "
            f"expected {training.trust_domain!r}",
        )
    try:
        identity = ClientIdentity.from_uri(uri)
    except InvalidInputError as exc:
        raise CertificateProblem("malformed-identity", exc.message) from exc
    if identity.training_ref != training:
        raise CertificateProblem(
            "wrong-training",
            f"identity {uri!r} is a client of training {identity.training_ref}, "
            f"expected a client of {training}",
        )
    cns = common_names(cert.subject)
    if cns != [identity.client]:
        raise CertificateProblem(
            "name-mismatch",
            f"commonName {', '.join(cns) or '(none)'} differs from the client "
            f"{identity.client!r} named by the URI",
        )
    return identity


def training_of_cas(cas: Iterable[x509.Certificate]) -> TrainingRef:
    """The training the CAs were made for (the URI of ``fedwarden pki init-ca``); the first CA
    that names one decides."""
    subjects = []
    for ca in cas:
        subjects.append(ca.subject.rfc4514_string())
        for uri in uri_sans(ca):
            try:
                return TrainingRef.from_uri(uri)
            except InvalidInputError:
                continue
    raise InvalidInputError(
        "not-a-fedwarden-ca",
        "no CA in the bundle names a training (a URI spiffe://<trust-domain>/ns/<namespace>/"
        f"training/<name>): {'; '.join(subjects)}",
    )


def reader_from_certificate(cert: x509.Certificate, training: TrainingRef) -> str:
    """The reader a (verified) peer certificate names, if it is a reader of ``training``; else
    :class:`CertificateProblem` with reason ``not-a-reader``."""
    uris = uri_sans(cert)
    prefix = f"{training.uri}/reader/"
    if len(uris) != 1 or not uris[0].startswith(prefix) or "/" in uris[0][len(prefix) :]:
        who = ", ".join(uris) or cert.subject.rfc4514_string()
        raise CertificateProblem(
            "not-a-reader",
            f"{who} is not a reader of training {training} ({prefix}<name>); only a reader "
            "identity issued by the operator may fetch the model",
        )
    return uris[0][len(prefix) :]
