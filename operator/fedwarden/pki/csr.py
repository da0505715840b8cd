"""CSR enrolment for remote sites: the site makes its key, the CA signs under a policy.

A remote site runs :func:`create_csr` (``fedwarden pki csr``): its private key is made and stays
on the site; only the CSR travels. The CA runs :func:`sign_csr` (``fedwarden pki sign``), which
refuses, with every reason at once, a CSR that:

- does not parse, or whose signature does not verify with its own key (altered after signing);
- holds a key fedwarden does not accept (see :mod:`fedwarden.pki.keys`: RSA below 3072 bits,
  DSA, Ed25519, curves other than P-256 and P-384);
- asks to be a CA (BasicConstraints CA:TRUE, or keyCertSign / cRLSign key usage);
- names anyone but the expected client: the commonName must be the client's name and the one
  URI subjectAltName its SPIFFE ID; any other subjectAltName (DNS, IP, e-mail, another URI) is
  refused, as is an extended key usage other than clientAuth or an unknown critical extension;
- would live longer than the policy's maximum.

The CA decides what goes into the certificate: subject, extensions and lifetime are written from
the expected identity and the policy, never copied from the CSR (other subject attributes and
non-critical extensions in the CSR are ignored). A CSR cannot ask for a lifetime; the signer
chooses one up to the policy's maximum.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedwarden.pki.ca import DEFAULT_LEAF_DURATION, CertificateAuthority, client_subject, hash_for
from fedwarden.pki.errors import InvalidInputError, PolicyViolationError
from fedwarden.pki.files import certificate_pem, load_csr, private_key_pem
from fedwarden.pki.identity import ClientIdentity, common_names
from fedwarden.pki.keys import KeyAlgorithm, SigningKey, generate_key, key_policy_problem
from fedwarden.pki.rotation import MINIMUM_DURATION, describe_duration


@dataclass(frozen=True)
class SigningPolicy:
    """What the CA signs: the longest lifetime it grants, and the smallest RSA key."""

    max_duration: dt.timedelta = DEFAULT_LEAF_DURATION
    default_duration: dt.timedelta = DEFAULT_LEAF_DURATION
    min_rsa_bits: int = 3072

    def __post_init__(self) -> None:
        if self.default_duration > self.max_duration:
            raise ValueError(
                f"default duration {describe_duration(self.default_duration)} exceeds the maximum "
                f"{describe_duration(self.max_duration)}"
            )
        if self.default_duration < MINIMUM_DURATION:
            raise ValueError(f"the default duration must be at least {MINIMUM_DURATION}")


def create_csr(
    identity: ClientIdentity,
    *,
    key: SigningKey | None = None,
    algorithm: KeyAlgorithm = "ecdsa-p256",
) -> tuple[bytes, bytes]:
    """Make a key (unless given) and a CSR for ``identity``; return ``(key_pem, csr_pem)``.

    The CSR asks for exactly what :func:`sign_csr` grants: commonName = the client's name, the
    client's SPIFFE ID as the one URI subjectAltName, extended key usage clientAuth.
    """
    key = key if key is not None else generate_key(algorithm)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(client_subject(identity))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hash_for(key))
    )
    return private_key_pem(key), csr.public_bytes(Encoding.PEM)


def check_csr(
    csr: x509.CertificateSigningRequest,
    identity: ClientIdentity,
    policy: SigningPolicy,
) -> list[tuple[str, str]]:
    """Every rule of :func:`sign_csr` the CSR breaks, as ``(reason, message)`` pairs."""
    violations: list[tuple[str, str]] = []
    if not csr.is_signature_valid:
        violations.append(
            (
                "bad-signature",
                "the CSR's signature does not verify with its own public key "
                "(it was altered after it was signed, or is corrupt)",
            )
        )
    try:
        problem = key_policy_problem(csr.public_key(), policy.min_rsa_bits)
    except UnsupportedAlgorithm as exc:
        problem = f"the CSR's key type is not supported ({exc})"
    if problem is not None:
        violations.append(("weak-key", problem))

    found_cns = common_names(csr.subject)
    if found_cns != [identity.client]:
        violations.append(
            (
                "name-mismatch",
                f"the CSR's commonName is {', '.join(map(repr, found_cns)) or '(none)'}, "
                f"expected {identity.client!r}",
            )
        )

    try:
        extensions = list(csr.extensions)
    except ValueError as exc:  # duplicate or malformed extensions
        return [*violations, ("malformed-csr", f"the CSR's extensions cannot be read ({exc})")]
    saw_san = False
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints):
            if value.ca:
                violations.append(("ca-requested", "the CSR asks for a CA certificate (CA:TRUE)"))
        elif isinstance(value, x509.KeyUsage):
            if value.key_cert_sign or value.crl_sign:
                violations.append(
                    (
                        "ca-requested",
                        "the CSR asks for keyCertSign/cRLSign key usage (a CA's key usage)",
                    )
                )
        elif isinstance(value, x509.ExtendedKeyUsage):
            others = [eku_name(oid) for oid in value if oid != ExtendedKeyUsageOID.CLIENT_AUTH]
            if others:
                violations.append(
                    (
                        "wrong-extended-key-usage",
                        f"the CSR asks for extended key usage {', '.join(others)}; "
                        "a client certificate gets clientAuth only",
                    )
                )
        elif isinstance(value, x509.SubjectAlternativeName):
            saw_san = True
            violations += _check_sans(value, identity)
        elif ext.critical:
            violations.append(
                (
                    "unsupported-extension",
                    "the CSR has a critical extension fedwarden does not know "
                    f"({ext.oid.dotted_string})",
                )
            )
    if not saw_san:
        violations.append(
            (
                "missing-identity",
                f"the CSR has no subjectAltName; it must ask for the URI {identity.uri} "
                "(`fedwarden pki csr` adds it; with openssl: "
                f"-addext subjectAltName=URI:{identity.uri})",
            )
        )
    return violations


_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


def eku_name(oid: x509.ObjectIdentifier) -> str:
    return _EKU_NAMES.get(oid, oid.dotted_string)


def _check_sans(
    san: x509.SubjectAlternativeName, identity: ClientIdentity
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    others = [name for name in san if not isinstance(name, x509.UniformResourceIdentifier)]
    if not uris:
        out.append(
            ("missing-identity", f"the CSR's subjectAltName has no URI; expected {identity.uri}")
        )
    elif identity.uri not in uris:
        out.append(
            (
                "identity-mismatch",
                f"the CSR asks for identity {', '.join(uris)}, expected {identity.uri}",
            )
        )
    extra = [u for u in uris if u != identity.uri] if identity.uri in uris else []
    extra_names = [f"URI:{u}" for u in extra] + [_general_name(n) for n in others]
    if extra_names:
        out.append(
            (
                "extra-san",
                f"the CSR asks for subjectAltNames beyond the client's identity: "
                f"{', '.join(extra_names)}",
            )
        )
    return out


def _general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    return type(name).__name__


def sign_csr(
    ca: CertificateAuthority,
    csr_pem: bytes,
    expected_client: str | ClientIdentity,
    policy: SigningPolicy | None = None,
    *,
    duration: dt.timedelta | None = None,
    now: dt.datetime | None = None,
) -> bytes:
    """Sign a remote site's CSR for ``expected_client`` under ``policy``; return the cert PEM.

    Raises :class:`PolicyViolationError` listing every broken rule (see the module docstring).
    """
    policy = policy if policy is not None else SigningPolicy()
    training = ca.training
    if isinstance(expected_client, ClientIdentity):
        if expected_client.training_ref != training:
            raise InvalidInputError(
                "wrong-training",
                f"{expected_client.uri} is not a client of this CA's training ({training})",
            )
        identity = expected_client
    else:
        identity = training.client(expected_client)
    try:
        csr = load_csr(csr_pem, "CSR")
    except InvalidInputError as exc:
        raise PolicyViolationError([("malformed-csr", exc.message)]) from exc

    violations = check_csr(csr, identity, policy)
    lifetime = duration if duration is not None else policy.default_duration
    if lifetime > policy.max_duration:
        violations.append(
            (
                "lifetime",
                f"a lifetime of {describe_duration(lifetime)} exceeds the policy's maximum of "
                f"{describe_duration(policy.max_duration)}",
            )
        )
    elif lifetime < MINIMUM_DURATION:
        violations.append(
            (
                "lifetime",
                f"a lifetime of {describe_duration(lifetime)} is below the minimum of "
                f"{describe_duration(MINIMUM_DURATION)}",
            )
        )
    if violations:
        raise PolicyViolationError(violations)
    cert = ca.sign_client_key(csr.public_key(), identity.client, duration=lifetime, now=now)
    return certificate_pem(cert)
