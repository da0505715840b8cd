"""TLS contexts for Python's ``ssl``, and the diagnosis of a live endpoint.

:func:`diagnose_endpoint` connects to ``host:port`` as a fedwarden client would (the CA bundle,
optionally a client certificate, the server name checked), reports whether the handshake went
through, and names each problem in the terms of :mod:`fedwarden.pki.diagnose`: the server's
certificate is fetched a second time without verification when verification fails, so the
report says *why* (expired on which date, issued by which CA while the bundle holds which).

In TLS 1.3 the server checks the client's certificate after the client considers the handshake
done, and its refusal arrives as an alert on the first read. So after a handshake the client
reads briefly (``probe_timeout``): an alert there means the server refused our certificate (or
demanded one we did not send), silence or data means it accepted us.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from fedwarden.pki.bundle import TrustBundle
from fedwarden.pki.diagnose import Problem, diagnose, explain_tls_error
from fedwarden.pki.errors import InvalidInputError
from fedwarden.pki.files import load_certificate, read_bytes
from fedwarden.pki.revocation import RevocationList

PathOrPEM = str | os.PathLike[str] | bytes
"""A file name, or the PEM bytes themselves."""


def _pem(value: PathOrPEM, what: str) -> bytes:
    return value if isinstance(value, bytes) else read_bytes(Path(value), what)


@contextlib.contextmanager
def _as_files(cert: PathOrPEM, key: PathOrPEM) -> Iterator[tuple[str, str]]:
    """Certificate and key as file names (``ssl`` loads key pairs from files only)."""
    if not isinstance(cert, bytes) and not isinstance(key, bytes):
        yield os.fspath(cert), os.fspath(key)
        return
    with tempfile.TemporaryDirectory(prefix="fedwarden-tls-") as tmp:
        os.chmod(tmp, 0o700)
        cert_file, key_file = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_file.write_bytes(_pem(cert, "certificate file"))
        key_file.touch(mode=0o600)
        key_file.write_bytes(_pem(key, "key file"))
        yield str(cert_file), str(key_file)


def _load_key_pair(context: ssl.SSLContext, cert: PathOrPEM, key: PathOrPEM) -> None:
    with _as_files(cert, key) as (cert_file, key_file):
        context.load_cert_chain(cert_file, key_file)


def server_ssl_context(
    cert: PathOrPEM,
    key: PathOrPEM,
    ca_bundle: PathOrPEM,
    *,
    require_client_certificate: bool = True,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    crl: PathOrPEM | None = None,
) -> ssl.SSLContext:
    """A server context for mutual TLS: client certificates required and verified.

    With ``crl`` (a ``crl.pem`` holding the CRL of every CA in the bundle) OpenSSL refuses a
    revoked client certificate during the handshake. It then also refuses *every* client when
    a CRL is missing for an issuer or past its nextUpdate, so keep the CRL fresh.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = minimum_version
    _load_key_pair(context, cert, key)
    context.load_verify_locations(cadata=_pem(ca_bundle, "CA bundle").decode("ascii"))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    if crl is not None:
        # cadata takes certificates only; a CRL must come from a file
        if isinstance(crl, bytes):
            with tempfile.TemporaryDirectory(prefix="fedwarden-crl-") as tmp:
                crl_file = Path(tmp, "crl.pem")
                crl_file.write_bytes(crl)
                context.load_verify_locations(cafile=str(crl_file))
        else:
            read_bytes(Path(crl), "CRL file")  # a clear error when it is missing
            context.load_verify_locations(cafile=os.fspath(crl))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def client_ssl_context(
    ca_bundle: PathOrPEM,
    cert: PathOrPEM | None = None,
    key: PathOrPEM | None = None,
    *,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_bundle`` and its name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = minimum_version
    context.load_verify_locations(cadata=_pem(ca_bundle, "CA bundle").decode("ascii"))
    context.check_hostname = check_hostname
    if (cert is None) != (key is None):
        raise InvalidInputError(
            "missing-file", "a client certificate needs its key, and a key its certificate"
        )
    if cert is not None and key is not None:
        _load_key_pair(context, cert, key)
    return context


@dataclass
class EndpointReport:
    """What :func:`diagnose_endpoint` found."""

    host: str
    port: int
    server_name: str
    connected: bool = False
    handshake: bool = False
    """The handshake went through and the server did not refuse us right after it."""
    tls_version: str | None = None
    cipher: str | None = None
    client_certificate_sent: bool = False
    server_certificate: x509.Certificate | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.handshake and not self.problems

    def to_dict(self) -> dict[str, object]:
        cert = self.server_certificate
        return {
            "endpoint": f"{self.host}:{self.port}",
            "server_name": self.server_name,
            "connected": self.connected,
            "handshake": self.handshake,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "client_certificate_sent": self.client_certificate_sent,
            "server_certificate": None
            if cert is None
            else {
                "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(),
                "serial": f"{cert.serial_number:x}",
                "not_after": cert.not_valid_after_utc.isoformat(),
            },
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
        }


def _fetch_server_certificate(
    host: str,
    port: int,
    server_name: str,
    client_cert: PathOrPEM | None,
    client_key: PathOrPEM | None,
    timeout: float,
) -> x509.Certificate | None:
    """The server's leaf certificate, fetched without verifying it (to say what is wrong)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        if client_cert is not None and client_key is not None:
            _load_key_pair(context, client_cert, client_key)
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError, InvalidInputError):
        return None
    return None if not der else x509.load_der_x509_certificate(der)


def diagnose_endpoint(
    host: str,
    port: int,
    ca_bundle: PathOrPEM | TrustBundle,
    client_cert: PathOrPEM | None = None,
    client_key: PathOrPEM | None = None,
    server_name: str | None = None,
    *,
    crl: RevocationList | PathOrPEM | None = None,
    timeout: float = 5.0,
    probe_timeout: float = 1.0,
    now: dt.datetime | None = None,
    alpn: Iterable[str] = ("h2",),
) -> EndpointReport:
    """Connect to a live TLS endpoint as a fedwarden client would and name what goes wrong.

    ``server_name`` (default ``host``) is the name the server's certificate must carry. ALPN
    offers ``h2`` because gRPC servers refuse a handshake without it.
    """
    name = server_name or host
    report = EndpointReport(host, port, name)
    bundle_pem = (
        ca_bundle.to_pem() if isinstance(ca_bundle, TrustBundle) else _pem(ca_bundle, "CA bundle")
    )
    bundle = TrustBundle.from_pem(bundle_pem)
    revocations: RevocationList | None
    if crl is None or isinstance(crl, RevocationList):
        revocations = crl
    else:
        revocations = RevocationList.from_pem(_pem(crl, "CRL file"))
    own_cert_pem = None if client_cert is None else _pem(client_cert, "client certificate")
    own_key_pem = None if client_key is None else _pem(client_key, "client key")

    try:
        context = client_ssl_context(bundle_pem, own_cert_pem, own_key_pem)
    except ssl.SSLError as exc:
        report.problems = explain_tls_error(
            exc,
            side="client",
            ca_bundle=bundle,
            own_certificate=own_cert_pem,
            own_key=own_key_pem,
            now=now,
        )
        return report
    alpn_protocols = list(alpn)
    if alpn_protocols:
        context.set_alpn_protocols(alpn_protocols)
    report.client_certificate_sent = own_cert_pem is not None

    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        report.problems = explain_tls_error(exc, side="client")
        return report
    report.connected = True

    def explain(exc: BaseException, peer: x509.Certificate | None = None) -> list[Problem]:
        return explain_tls_error(
            exc,
            side="client",
            ca_bundle=bundle,
            peer_certificate=peer,
            own_certificate=own_cert_pem,
            own_key=own_key_pem,
            expected_name=name,
            crl=revocations,
            now=now,
        )

    with raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=name)
        except ssl.SSLCertVerificationError as exc:
            peer = _fetch_server_certificate(host, port, name, client_cert, client_key, timeout)
            report.server_certificate = peer
            report.problems = explain(exc, peer)
            return report
        except (ssl.SSLError, OSError) as exc:
            report.problems = explain(exc)
            return report
        with tls:
            report.tls_version = tls.version()
            cipher = tls.cipher()
            report.cipher = None if cipher is None else cipher[0]
            der = tls.getpeercert(binary_form=True)
            if der:
                report.server_certificate = x509.load_der_x509_certificate(der)
            tls.settimeout(probe_timeout)
            closed = False
            try:
                closed = tls.recv(1) == b""
            except TimeoutError:
                pass  # the server waits for a request: it accepted us
            except ssl.SSLZeroReturnError:
                closed = True
            except (ssl.SSLError, OSError) as exc:
                report.problems = explain(exc)
                return report
    report.handshake = True
    if closed and own_cert_pem is None:
        # TLS 1.3: the server checks the client's certificate after the client considers the
        # handshake done, and closes; without a certificate there is only one reason
        report.problems.append(
            Problem(
                "client-cert-required",
                "the server closed the connection after the handshake and no client "
                "certificate was sent: it requires one (mutual TLS)",
            )
        )
    elif closed:
        report.problems.append(
            Problem(
                "refused-after-handshake",
                "the server completed the handshake, then closed the connection without a "
                "word: it refused us after TLS (a revoked, unenrolled or banned certificate?)",
            )
        )
        if own_cert_pem is not None:
            report.problems += diagnose(
                own_cert_pem, ca_bundle_pem=bundle, crl=revocations, purpose="client", now=now
            )
    if report.server_certificate is not None:
        report.problems += diagnose(
            report.server_certificate,
            ca_bundle_pem=bundle,
            crl=revocations,
            expected_name=name,
            purpose="server",
            now=now,
        )
    return report


def peer_certificate(sock: ssl.SSLSocket) -> x509.Certificate | None:
    """The certificate the peer presented on an established ``ssl`` socket."""
    der = sock.getpeercert(binary_form=True)
    return None if not der else load_certificate(der, "peer certificate")
