"""Why a certificate, or a TLS handshake, fails — in words, with a code and a fix.

A failed TLS handshake with no stated cause is the most common complaint in federated-learning
frameworks' trackers. :func:`diagnose` inspects a certificate (and optionally its key, the CA
bundle, a CRL, the name it should carry and its purpose) and returns every :class:`Problem` it
finds; :func:`explain_tls_error` maps an ``ssl.SSLError`` (our verification of the peer failed,
or the peer's alert saying it refused us) plus the certificates at hand to the same problems, so
the aggregator, the client and ``fedwarden pki check`` all state the same specific reason.

Each code is stable (scripts and the docs' troubleshooting table rely on it); :data:`HINTS` gives
a one-line fix for each. Certificates made by any tool can be diagnosed, not only fedwarden's.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedwarden.pki.bundle import TrustBundle, directly_issued_by, is_ca
from fedwarden.pki.csr import eku_name
from fedwarden.pki.errors import CertificateProblem, PKIError
from fedwarden.pki.files import load_certificate, load_private_key
from fedwarden.pki.identity import (
    ClientIdentity,
    TrainingRef,
    common_names,
    identity_from_certificate,
    uri_sans,
)
from fedwarden.pki.keys import describe_key, key_policy_problem, same_public_key
from fedwarden.pki.revocation import RevocationList

Purpose = Literal["client", "server"]

HINTS: dict[str, str] = {
    "expired": "renew it: `fedwarden pki issue` (in-cluster) or a new CSR signed with "
    "`fedwarden pki sign`; the operator renews at 2/3 of the lifetime",
    "not-yet-valid": "check the clocks (NTP) of this machine and of the CA's; the certificate "
    "starts later than this machine's time",
    "unknown-issuer": "use a certificate issued by this training's CA, or give the CA bundle "
    "that holds its issuer (ca.crt; ca-bundle.crt during a CA rotation)",
    "ca-expired": "rotate the CA (`fedwarden pki rotate-ca`) and reissue the certificates",
    "ca-not-yet-valid": "check the clocks (NTP); the CA starts later than this machine's time",
    "name-mismatch": "reissue for the name peers use (server: `pki server --dns/--ip`; client: "
    "`pki issue/sign --client`), or connect with the name the certificate has",
    "no-identity": "client certificates must carry the client's spiffe:// URI; enrol with "
    "`fedwarden pki csr` + `pki sign`, or `pki issue`",
    "foreign-identity": "use the certificate made for this training; its URI names another "
    "trust domain, namespace or training",
    "revoked": "a revoked certificate cannot be used again; enrol anew with a new key "
    "(`fedwarden pki csr` + `fedwarden pki sign`)",
    "key-mismatch": "pair the certificate with the key it was issued for (tls.crt and tls.key "
    "of the same Secret); compare `openssl x509 -noout -pubkey` with `openssl pkey -pubout`",
    "wrong-key-usage": "reissue with key usage digitalSignature (`fedwarden pki` does this)",
    "wrong-extended-key-usage": "reissue for the right purpose: clientAuth for a client "
    "(`pki issue`/`pki sign`), serverAuth for the aggregator (`pki server`)",
    "ca-as-leaf": "present a certificate issued by the CA, not the CA's own certificate",
    "self-signed-leaf": "replace the self-signed certificate with one issued by the training's "
    "CA (`fedwarden pki server` / `pki issue` / `pki sign`)",
    "unsupported-key": "make a new key, EC P-256 (`fedwarden pki csr`) or RSA >= 3072, "
    "and enrol it",
    "weak-signature": "reissue the certificate; SHA-1 and MD5 signatures are refused by "
    "current TLS libraries",
    "crl-stale": "publish a fresh CRL (`fedwarden pki refresh-crl`); the operator re-signs it "
    "before nextUpdate",
    "crl-untrusted": "use the crl.pem of this training's CA; this CRL is not signed by a CA in "
    "the bundle",
    "crl-wrong-issuer": "give the crl.pem of the CA that issued the certificate",
    "key-permissions": "chmod 600 the key file; only its owner may read it",
    "unreachable": "check the host and port, that the aggregator runs, and network policies "
    "or firewalls between here and there",
    "not-tls": "the endpoint does not speak TLS on this port (plaintext, or another protocol); "
    "check the port",
    "tls-version": "both sides must allow TLS 1.2 or 1.3; upgrade the older side",
    "client-cert-required": "give the client certificate and key (`--cert/--key`, or "
    "tls.crt/tls.key); fedwarden's aggregator requires mutual TLS",
    "certificate-rejected": "the peer refused our certificate; run `fedwarden pki check` on it "
    "with the peer's CA bundle and fix what it names",
    "refused-after-handshake": "the server accepted TLS but refused the client: see its log; "
    "check that the certificate is not revoked and the client is enrolled and not banned",
    "handshake-failed": "run `fedwarden pki check --endpoint HOST:PORT` with the certificates "
    "at hand; see the peer's log for its side of the reason",
    "verify-failed": "run `fedwarden pki check` on the certificate with the CA bundle",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a certificate or a connection: a stable code, what, and a fix."""

    code: str
    message: str
    hint: str = ""

    def __post_init__(self) -> None:
        if not self.hint:
            object.__setattr__(self, "hint", HINTS.get(self.code, ""))

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}

    def error(self) -> CertificateProblem:
        return CertificateProblem(self.code, self.message)


# --- helpers ---------------------------------------------------------------------------------


def _when(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


def _span(delta: dt.timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 2 * 3600:
        return f"{seconds // 3600} hours"
    if seconds >= 120:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


def _now(now: dt.datetime | None) -> dt.datetime:
    now = dt.datetime.now(dt.UTC) if now is None else now
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # duplicate or malformed extensions
        return None


def _as_cert(value: x509.Certificate | bytes, source: str) -> x509.Certificate:
    return value if isinstance(value, x509.Certificate) else load_certificate(value, source)


def _as_key(value: PrivateKeyTypes | bytes, source: str) -> PrivateKeyTypes:
    return load_private_key(value, source) if isinstance(value, bytes) else value


def _key_usage_names(ku: x509.KeyUsage) -> list[str]:
    names = [
        ("digitalSignature", ku.digital_signature),
        ("nonRepudiation", ku.content_commitment),
        ("keyEncipherment", ku.key_encipherment),
        ("dataEncipherment", ku.data_encipherment),
        ("keyAgreement", ku.key_agreement),
        ("keyCertSign", ku.key_cert_sign),
        ("cRLSign", ku.crl_sign),
    ]
    return [name for name, present in names if present]


def _eku_names(oids: Iterable[x509.ObjectIdentifier]) -> list[str]:
    return [eku_name(oid) for oid in oids]


def _dns_matches(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


# --- the checks ------------------------------------------------------------------------------


def _validity(cert: x509.Certificate, now: dt.datetime, *, ca: bool = False) -> list[Problem]:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    who = f"the CA {_subject(cert)!r}" if ca else f"the certificate {_subject(cert)!r}"
    prefix = "ca-" if ca else ""
    if now > not_after:
        return [
            Problem(
                f"{prefix}expired",
                f"{who} expired on {_when(not_after)}, {_span(now - not_after)} ago "
                f"(valid {_when(not_before)} to {_when(not_after)}; now is {_when(now)})",
            )
        ]
    if now < not_before:
        return [
            Problem(
                f"{prefix}not-yet-valid",
                f"{who} is valid only from {_when(not_before)}, {_span(not_before - now)} from now "
                f"(this machine's clock reads {_when(now)})",
            )
        ]
    return []


def _usage(cert: x509.Certificate, purpose: Purpose) -> list[Problem]:
    problems: list[Problem] = []
    bc = _ext(cert, x509.BasicConstraints)
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        problems.append(
            Problem(
                "ca-as-leaf",
                f"{_subject(cert)!r} is a CA certificate (BasicConstraints CA:TRUE) presented "
                f"as a {purpose} certificate",
            )
        )
    ku = _ext(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.digital_signature:
        problems.append(
            Problem(
                "wrong-key-usage",
                f"key usage is {', '.join(_key_usage_names(ku)) or '(none)'}; a TLS {purpose} "
                "certificate needs digitalSignature",
            )
        )
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if purpose == "client":
        needed, needed_name = ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth"
    else:
        needed, needed_name = ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth"
    if isinstance(eku, x509.ExtendedKeyUsage):
        oids = list(eku)
        if needed not in oids and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in oids:
            problems.append(
                Problem(
                    "wrong-extended-key-usage",
                    f"extended key usage is {', '.join(_eku_names(oids)) or '(none)'}; "
                    f"a {purpose} certificate needs {needed_name}",
                )
            )
    return problems


def _strength(cert: x509.Certificate) -> list[Problem]:
    problems: list[Problem] = []
    try:
        why = key_policy_problem(cert.public_key(), min_rsa_bits=2048)
    except UnsupportedAlgorithm as exc:
        why = f"the key type is not supported ({exc})"
    if why is not None:
        problems.append(Problem("unsupported-key", f"the certificate's key: {why}"))
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if isinstance(algorithm, hashes.SHA1 | hashes.MD5):
        problems.append(
            Problem("weak-signature", f"the certificate is signed with {algorithm.name.upper()}")
        )
    return problems


def _server_name(cert: x509.Certificate, expected: str) -> list[Problem]:
    san = _ext(cert, x509.SubjectAlternativeName)
    if not isinstance(san, x509.SubjectAlternativeName):
        cns = ", ".join(common_names(cert.subject)) or "(none)"
        return [
            Problem(
                "name-mismatch",
                f"expected the server name {expected!r}, but the certificate has no "
                f"subjectAltName (commonName {cns} is ignored by TLS clients since RFC 6125)",
            )
        ]
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    try:
        ip = ipaddress.ip_address(expected)
    except ValueError:
        ip = None
    if ip is not None:
        if str(ip) in ips:
            return []
    elif any(_dns_matches(pattern, expected) for pattern in dns):
        return []
    found = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
    return [
        Problem(
            "name-mismatch",
            f"expected the server name {expected!r}, the certificate is for "
            f"{', '.join(found) or '(no DNS or IP names)'}",
        )
    ]


def _client_name(cert: x509.Certificate, expected: str) -> list[Problem]:
    cns = common_names(cert.subject)
    uris = uri_sans(cert)
    found = f"commonName {', '.join(map(repr, cns)) or '(none)'}, URI {', '.join(uris) or '(none)'}"
    if expected.startswith("spiffe://"):
        if uris == [expected]:
            return []
        return [Problem("name-mismatch", f"expected the identity {expected}, found {found}")]
    uri_clients: list[str] = []
    for uri in uris:
        try:
            uri_clients.append(ClientIdentity.from_uri(uri).client)
        except PKIError:
            continue
    if cns == [expected] and (not uris or uri_clients == [expected]):
        return []
    return [Problem("name-mismatch", f"expected the client {expected!r}, found {found}")]


def _chain(
    cert: x509.Certificate, bundle: TrustBundle, now: dt.datetime, purpose: Purpose
) -> tuple[list[Problem], x509.Certificate | None]:
    issuer = bundle.issuer_of(cert)
    if issuer is None:
        if cert in bundle:
            return [], None  # a pinned self-signed certificate; reported as self-signed-leaf
        subjects = "; ".join(repr(s) for s in bundle.subjects())
        issuer_name = cert.issuer.rfc4514_string() or "(empty)"
        if bundle.same_name_as_issuer(cert):
            message = (
                f"the certificate names {issuer_name!r} as its issuer and the bundle holds a CA "
                "of that name, but that CA's key did not sign it: another CA with the same name "
                "signed it (a re-created or rotated CA?)"
            )
        else:
            message = (
                f"the certificate was issued by {issuer_name!r}, which is not in the CA bundle; "
                f"the bundle holds {subjects}"
            )
        return [Problem("unknown-issuer", message)], None
    problems = _validity(issuer, now, ca=True)
    if not is_ca(issuer):
        problems.append(
            Problem(
                "unknown-issuer",
                f"the issuer {_subject(issuer)!r} in the bundle is not a CA certificate "
                "(no BasicConstraints CA:TRUE)",
            )
        )
    if purpose == "client":
        problems += _training_identity(cert, issuer)
    return problems, issuer


def _training_identity(cert: x509.Certificate, issuer: x509.Certificate) -> list[Problem]:
    """For a fedwarden CA (one naming a training), the client must be a client of it."""
    training: TrainingRef | None = None
    for uri in uri_sans(issuer):
        try:
            training = TrainingRef.from_uri(uri)
            break
        except PKIError:
            continue
    if training is None:
        return []
    try:
        identity_from_certificate(cert, training)
    except CertificateProblem as exc:
        code = {"no-identity": "no-identity", "name-mismatch": "name-mismatch"}.get(
            exc.reason, "foreign-identity"
        )
        return [Problem(code, exc.message)]
    return []


def _revocation(
    cert: x509.Certificate,
    crl: RevocationList,
    bundle: TrustBundle | None,
    issuer: x509.Certificate | None,
    now: dt.datetime,
) -> list[Problem]:
    problems: list[Problem] = []
    own = crl.crl_for(cert.issuer)
    if own is None:
        issuers = ", ".join(repr(c.issuer.rfc4514_string()) for c in crl.crls) or "(empty file)"
        problems.append(
            Problem(
                "crl-wrong-issuer",
                f"the CRL holds lists from {issuers}, none from the certificate's issuer "
                f"{cert.issuer.rfc4514_string()!r}; revocation was not checked",
            )
        )
        return problems
    if issuer is not None:
        signer = issuer.public_key()
        valid = False
        try:
            valid = own.is_signature_valid(signer)  # type: ignore[arg-type]
        except (TypeError, UnsupportedAlgorithm):
            valid = False
        if not valid:
            problems.append(
                Problem(
                    "crl-untrusted",
                    f"the CRL of {own.issuer.rfc4514_string()!r} is not signed by the key of the "
                    "CA in the bundle; it is not trusted",
                )
            )
    elif bundle is not None and not any(
        ca.subject == own.issuer and own.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        for ca in bundle
    ):
        problems.append(
            Problem(
                "crl-untrusted",
                f"the CRL of {own.issuer.rfc4514_string()!r} is not signed by a CA in the bundle",
            )
        )
    entry = crl.is_revoked(cert)
    if entry is not None:
        problems.append(
            Problem("revoked", f"the certificate {_subject(cert)!r}: {entry.describe()}")
        )
    next_update = own.next_update_utc
    if next_update is not None and now > next_update:
        problems.append(
            Problem(
                "crl-stale",
                f"the CRL of {own.issuer.rfc4514_string()!r} was due to be replaced on "
                f"{_when(next_update)} (nextUpdate), {_span(now - next_update)} ago; peers that "
                "check CRLs strictly refuse every certificate until it is",
            )
        )
    return problems


def diagnose(
    cert_pem: x509.Certificate | bytes,
    key_pem: PrivateKeyTypes | bytes | None = None,
    ca_bundle_pem: TrustBundle | bytes | Iterable[x509.Certificate] | None = None,
    crl: RevocationList | bytes | None = None,
    expected_name: str | None = None,
    purpose: Purpose = "client",
    now: dt.datetime | None = None,
) -> list[Problem]:
    """Every problem with a certificate for ``purpose``; an empty list when it is healthy.

    ``cert_pem`` may be a chain (the first certificate is diagnosed). ``expected_name`` is the
    server name (DNS name or IP) for ``purpose="server"``; for ``"client"`` the client name or its
    full spiffe:// identity. Unreadable input raises
    :class:`~fedwarden.pki.errors.InvalidInputError`.
    """
    if purpose not in ("client", "server"):
        raise ValueError(f"purpose must be 'client' or 'server', got {purpose!r}")
    cert = _as_cert(cert_pem, "certificate")
    now = _now(now)
    bundle = None if ca_bundle_pem is None else TrustBundle.of(ca_bundle_pem)
    revocations = RevocationList.from_pem(crl) if isinstance(crl, bytes) else crl

    problems = _validity(cert, now)
    problems += _usage(cert, purpose)
    if cert.issuer == cert.subject and directly_issued_by(cert, cert):
        problems.append(
            Problem(
                "self-signed-leaf",
                f"{_subject(cert)!r} is self-signed: no CA vouches for it",
            )
        )
    problems += _strength(cert)
    if expected_name:
        named = (
            _server_name(cert, expected_name)
            if purpose == "server"
            else _client_name(cert, expected_name)
        )
        problems += named
    issuer: x509.Certificate | None = None
    if bundle is not None:
        chained, issuer = _chain(cert, bundle, now, purpose)
        seen = {p.code for p in problems}
        problems += [p for p in chained if not (p.code == "name-mismatch" and p.code in seen)]
    if revocations is not None:
        problems += _revocation(cert, revocations, bundle, issuer, now)
    if key_pem is not None:
        key = _as_key(key_pem, "key")
        if not same_public_key(key.public_key(), cert.public_key()):
            problems.append(
                Problem(
                    "key-mismatch",
                    f"the private key ({describe_key(key)}) is not the key of the certificate "
                    f"{_subject(cert)!r} ({describe_key(cert.public_key())}, serial "
                    f"{cert.serial_number:x})",
                )
            )
    return problems


# --- mapping TLS errors ----------------------------------------------------------------------

_VERIFY_CODES: dict[int, str] = {
    2: "unknown-issuer",  # unable to get issuer certificate
    7: "unknown-issuer",  # certificate signature failure
    9: "not-yet-valid",
    10: "expired",
    12: "crl-stale",  # CRL has expired
    18: "self-signed-leaf",  # self-signed certificate (depth 0)
    19: "unknown-issuer",  # self-signed certificate in chain
    20: "unknown-issuer",  # unable to get local issuer certificate
    21: "unknown-issuer",  # unable to verify the first certificate
    23: "revoked",
    24: "unknown-issuer",  # invalid CA certificate
    26: "wrong-extended-key-usage",  # unsupported certificate purpose
    27: "unknown-issuer",  # certificate not trusted
    28: "unknown-issuer",  # certificate rejected
    62: "name-mismatch",  # hostname mismatch
    64: "name-mismatch",  # IP address mismatch
    66: "unsupported-key",  # EE key too small
    67: "unsupported-key",  # CA key too small
    68: "weak-signature",  # CA md too weak
}


def explain_verify_code(code: int, message: str = "", peer: Purpose = "server") -> Problem:
    """The problem an OpenSSL verification error code (``verify_code``) stands for."""
    name = _VERIFY_CODES.get(code, "verify-failed")
    detail = message or f"verification error {code}"
    return Problem(name, f"the {peer}'s certificate failed verification: {detail}")


_ALERTS: dict[str, tuple[str, str]] = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        "client-cert-required",
        "the server requires a client certificate and none was sent",
    ),
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        "client-cert-required",
        "the client sent no certificate; this server requires one (mutual TLS)",
    ),
    "TLSV1_ALERT_UNKNOWN_CA": (
        "unknown-issuer",
        "the peer does not trust the CA that issued our certificate",
    ),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": ("expired", "the peer says our certificate has expired"),
    "SSLV3_ALERT_CERTIFICATE_REVOKED": ("revoked", "the peer says our certificate is revoked"),
    "SSLV3_ALERT_BAD_CERTIFICATE": (
        "certificate-rejected",
        "the peer refused our certificate (bad certificate)",
    ),
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": (
        "certificate-rejected",
        "the peer refused our certificate (unsupported certificate: wrong key usage?)",
    ),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": (
        "certificate-rejected",
        "the peer refused our certificate (certificate unknown)",
    ),
    "TLSV1_ALERT_DECRYPT_ERROR": (
        "handshake-failed",
        "the peer could not verify our handshake signature (does the key match the certificate?)",
    ),
    "TLSV1_ALERT_PROTOCOL_VERSION": (
        "tls-version",
        "the peer does not support our TLS versions",
    ),
    "UNSUPPORTED_PROTOCOL": ("tls-version", "no TLS version is acceptable to both sides"),
    "NO_PROTOCOLS_AVAILABLE": ("tls-version", "no TLS version is enabled"),
    "WRONG_VERSION_NUMBER": ("not-tls", "the peer does not speak TLS (wrong version number)"),
    "HTTP_REQUEST": ("not-tls", "the peer sent plain HTTP, not TLS"),
    "RECORD_LAYER_FAILURE": ("not-tls", "the peer's bytes are not TLS records"),
    "PACKET_LENGTH_TOO_LONG": ("not-tls", "the peer's bytes are not TLS records"),
    "KEY_VALUES_MISMATCH": ("key-mismatch", "the private key does not match the certificate"),
    "NO_SHARED_CIPHER": ("handshake-failed", "the two sides share no cipher suite"),
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "handshake-failed",
        "the peer aborted the handshake (handshake failure alert)",
    ),
}


def explain_tls_error(
    error: BaseException,
    *,
    side: Purpose,
    ca_bundle: TrustBundle | bytes | Iterable[x509.Certificate] | None = None,
    peer_certificate: x509.Certificate | bytes | None = None,
    own_certificate: x509.Certificate | bytes | None = None,
    own_key: PrivateKeyTypes | bytes | None = None,
    expected_name: str | None = None,
    crl: RevocationList | bytes | None = None,
    now: dt.datetime | None = None,
) -> list[Problem]:
    """The specific reasons behind a failed handshake or authorisation, as :class:`Problem` s.

    ``side`` is the role of the caller (``"server"`` for the aggregator, ``"client"`` for a
    client). ``peer_certificate`` is what the peer presented, when it could be captured;
    ``expected_name`` is the name the peer should carry. ``own_certificate`` / ``own_key`` are
    ours, examined when the peer's alert says it refused them.
    """
    peer_role: Purpose = "client" if side == "server" else "server"
    if isinstance(error, PKIError):
        return [Problem(error.reason, error.message)]

    if isinstance(error, ssl.SSLCertVerificationError):
        base = explain_verify_code(
            int(error.verify_code or 0), str(error.verify_message or error.reason or ""), peer_role
        )
        if peer_certificate is None:
            return [base]
        detailed = diagnose(
            peer_certificate,
            ca_bundle_pem=ca_bundle,
            crl=crl,
            expected_name=expected_name,
            purpose=peer_role,
            now=now,
        )
        matching = [p for p in detailed if p.code == base.code]
        if matching:
            return matching + [p for p in detailed if p.code != base.code]
        return [base, *detailed]

    if isinstance(error, ssl.SSLError):
        reason = str(getattr(error, "reason", "") or "")
        code, message = _ALERTS.get(reason, ("handshake-failed", ""))
        if not message:
            message = f"the TLS handshake failed: {error}"
        if (
            reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"
            and side == "client"
            and own_certificate is None
        ):
            code = "client-cert-required"
            message = (
                "the server aborted the handshake and no client certificate was sent; "
                "it most likely requires one (TLS 1.2 servers say so with a generic alert)"
            )
        base = Problem(code, message)
        if code in ("client-cert-required", "tls-version", "not-tls"):
            return [base]
        if own_certificate is None:
            return [base]
        own_cert = _as_cert(own_certificate, "our certificate")
        if code == "unknown-issuer":
            message += f" (it was issued by {own_cert.issuer.rfc4514_string()!r})"
            base = Problem(code, message)
        own = diagnose(
            own_cert,
            key_pem=own_key,
            ca_bundle_pem=ca_bundle,
            crl=crl,
            purpose=side,
            now=now,
        )
        matching = [p for p in own if p.code == code]
        if matching:
            return [Problem(code, f"{message}: {matching[0].message}")] + [
                p for p in own if p.code != code
            ]
        return [base, *own]

    if isinstance(error, ConnectionRefusedError):
        return [Problem("unreachable", f"the connection was refused ({error})")]
    if isinstance(error, socket.timeout | TimeoutError):
        return [Problem("unreachable", "the connection timed out")]
    if isinstance(error, ConnectionResetError | BrokenPipeError | EOFError):
        return [
            Problem(
                "handshake-failed",
                f"the peer closed the connection during the handshake ({type(error).__name__})",
            )
        ]
    if isinstance(error, OSError):
        return [Problem("unreachable", f"the connection failed: {error}")]
    return [Problem("handshake-failed", f"{type(error).__name__}: {error}")]
