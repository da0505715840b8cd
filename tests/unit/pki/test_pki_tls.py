"""Real TLS on 127.0.0.1: a Python ``ssl`` server requiring client certificates (TLS 1.3) with
fedwarden's server certificate, probed by ``openssl s_client`` and by ``diagnose_endpoint``.

Every socket, thread and subprocess is bounded by a timeout; only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pki_openssl import CLIENT_EXTENSIONS, SERVER_EXTENSIONS

from fedwarden.pki import (
    CertificateProblem,
    PeerVerifier,
    TLSDirectory,
    TrainingPKI,
    diagnose_endpoint,
    explain_tls_error,
    server_ssl_context,
)

TIMEOUT = 30.0  # seconds; a bound against hangs, never a performance requirement

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class TLSServer:
    """Accepts connections on 127.0.0.1, records each outcome; says hello to authorised peers."""

    def __init__(self, context: ssl.SSLContext, verifier: PeerVerifier | None = None) -> None:
        self.context = context
        self.verifier = verifier
        self.outcomes: queue.Queue[tuple[str, object]] = queue.Queue()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(TIMEOUT)
            try:
                tls = self.context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.outcomes.put(("refused", exc))
                conn.close()
                continue
            with tls:
                if self.verifier is not None:
                    try:
                        identity = self.verifier.verify(tls.getpeercert(binary_form=True))
                    except CertificateProblem as exc:
                        self.outcomes.put(("unauthorised", exc))
                        continue  # close without reading anything
                else:
                    identity = None
                version = tls.version()
                try:
                    tls.sendall(b"hello\n")
                    tls.unwrap()
                except (ssl.SSLError, OSError):
                    pass
                self.outcomes.put(("accepted", (version, identity)))

    def outcome(self) -> tuple[str, object]:
        return self.outcomes.get(timeout=TIMEOUT)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=TIMEOUT)


@dataclass
class World:
    store: TrainingPKI
    server: TLSDirectory
    good: TLSDirectory
    expired: TLSDirectory
    revoked: TLSDirectory
    foreign: TLSDirectory
    bundle: Path


@pytest.fixture
def world(tmp_path, training, openssl) -> World:
    now = dt.datetime.now(dt.UTC)
    store = TrainingPKI.init(tmp_path / "ca", training, now=now - dt.timedelta(days=200))
    bundle = store.dir.bundle

    def tls_dir(name, issued):
        return store.write_tls_directory(tmp_path / name, issued)

    server = tls_dir("server", store.issue_server(["localhost"], ["127.0.0.1"]))
    good = tls_dir("good", store.issue_client("site-1"))
    expired = tls_dir(
        "expired",
        store.issue_client(
            "site-2", now=now - dt.timedelta(days=100), duration=dt.timedelta(days=30)
        ),
    )
    revoked = tls_dir("revoked", store.issue_client("site-3"))
    store.revoke_client("site-3", "key-compromise")
    # a client certificate from a CA made by openssl, not by fedwarden
    foreign_ca = openssl.ca("foreign-ca", "/CN=Foreign CA")
    crt, key = openssl.leaf("foreign-client", "/CN=site-1", foreign_ca, CLIENT_EXTENSIONS)
    foreign = TLSDirectory(tmp_path / "foreign")
    foreign.write(crt.read_bytes(), key.read_bytes(), foreign_ca[0].read_bytes())
    return World(store, server, good, expired, revoked, foreign, bundle)


@contextlib.contextmanager
def serving(world: World, *, crl: bool = False, verifier: bool = False) -> Iterator[TLSServer]:
    context = server_ssl_context(
        world.server.cert,
        world.server.key,
        world.bundle,
        minimum_version=ssl.TLSVersion.TLSv1_3,
        crl=world.store.dir.crl if crl else None,
    )
    peer_verifier = None
    if verifier:
        peer_verifier = PeerVerifier(
            world.store.training, world.store.bundle(), crl_path=world.store.dir.crl
        )
    server = TLSServer(context, peer_verifier)
    try:
        yield server
    finally:
        server.close()


def s_client(
    port: int, ca: Path, client: TLSDirectory | None = None
) -> subprocess.CompletedProcess:
    args = [
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca),
        "-verify_return_error", "-verify_ip", "127.0.0.1", "-ign_eof",
    ]  # fmt: skip
    if client is not None:
        args += ["-cert", str(client.cert), "-key", str(client.key)]
    return subprocess.run(
        args,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def codes(problems) -> list[str]:
    return [p.code for p in problems]


def test_a_valid_client_certificate_completes_a_tls13_handshake(world):
    with serving(world, verifier=True) as server:
        result = s_client(server.port, world.bundle, world.good)
        assert result.returncode == 0, result.stderr
        assert "hello" in result.stdout
        assert "TLSv1.3" in result.stdout
        assert "Verify return code: 0 (ok)" in result.stdout
        kind, (version, identity) = server.outcome()
        assert (kind, version) == ("accepted", "TLSv1.3")
        assert identity.uri == "spiffe://fedwarden.local/ns/team-a/training/mnist/client/site-1"

        report = diagnose_endpoint(
            "127.0.0.1", server.port, world.bundle, world.good.cert, world.good.key
        )
        assert report.ok, report.problems
        assert report.tls_version == "TLSv1.3"
        assert report.server_certificate.subject.rfc4514_string().startswith("CN=localhost")


def test_no_client_certificate_is_refused(world):
    with serving(world) as server:
        result = s_client(server.port, world.bundle)
        assert result.returncode != 0
        assert "alert certificate required" in result.stderr
        kind, exc = server.outcome()
        assert kind == "refused"
        assert codes(explain_tls_error(exc, side="server")) == ["client-cert-required"]

        report = diagnose_endpoint("127.0.0.1", server.port, world.bundle)
        assert not report.handshake
        (problem,) = report.problems
        assert problem.code == "client-cert-required"
        assert "requires a client certificate and none was sent" in problem.message


def test_a_certificate_from_another_ca_is_refused(world):
    with serving(world) as server:
        result = s_client(server.port, world.bundle, world.foreign)
        assert result.returncode != 0
        assert "alert unknown ca" in result.stderr
        kind, exc = server.outcome()
        assert kind == "refused"
        assert isinstance(exc, ssl.SSLCertVerificationError)
        assert codes(explain_tls_error(exc, side="server")) == ["unknown-issuer"]

        report = diagnose_endpoint(
            "127.0.0.1", server.port, world.bundle, world.foreign.cert, world.foreign.key
        )
        assert not report.handshake
        assert codes(report.problems)[0] == "unknown-issuer"
        assert "issued by 'CN=Foreign CA'" in report.problems[0].message


def test_an_expired_certificate_is_refused(world):
    with serving(world) as server:
        result = s_client(server.port, world.bundle, world.expired)
        assert result.returncode != 0
        assert "alert certificate expired" in result.stderr
        kind, exc = server.outcome()
        assert kind == "refused"
        assert codes(explain_tls_error(exc, side="server")) == ["expired"]

        report = diagnose_endpoint(
            "127.0.0.1", server.port, world.bundle, world.expired.cert, world.expired.key
        )
        assert not report.handshake
        assert codes(report.problems) == ["expired"]
        assert "expired on" in report.problems[0].message


def test_a_revoked_certificate_is_refused_after_the_handshake_by_the_verifier(world):
    with serving(world, verifier=True) as server:
        s_client(server.port, world.bundle, world.revoked)
        kind, exc = server.outcome()
        assert kind == "unauthorised"
        assert exc.reason == "revoked"
        assert "key-compromise" in exc.message

        report = diagnose_endpoint(
            "127.0.0.1",
            server.port,
            world.bundle,
            world.revoked.cert,
            world.revoked.key,
            crl=world.store.dir.crl,
        )
        assert codes(report.problems) == ["refused-after-handshake", "revoked"]
        assert server.outcome()[0] == "unauthorised"


def test_a_revoked_certificate_is_refused_at_the_handshake_with_a_crl(world):
    with serving(world, crl=True) as server:
        result = s_client(server.port, world.bundle, world.revoked)
        assert result.returncode != 0
        assert "alert certificate revoked" in result.stderr
        kind, exc = server.outcome()
        assert kind == "refused"
        assert codes(explain_tls_error(exc, side="server")) == ["revoked"]
        # the good certificate still passes the CRL check
        assert s_client(server.port, world.bundle, world.good).returncode == 0

        report = diagnose_endpoint(
            "127.0.0.1",
            server.port,
            world.bundle,
            world.revoked.cert,
            world.revoked.key,
            crl=world.store.dir.crl,
        )
        assert codes(report.problems) == ["revoked"]
        assert "key-compromise" in report.problems[0].message


def test_diagnose_endpoint_names_the_servers_problems(world, openssl, tmp_path):
    # the server's certificate is for localhost / 127.0.0.1, not the name we ask for
    with serving(world) as server:
        report = diagnose_endpoint(
            "127.0.0.1", server.port, world.bundle, world.good.cert, world.good.key,
            server_name="aggregator.team-a.svc",
        )  # fmt: skip
        assert not report.handshake
        assert codes(report.problems) == ["name-mismatch"]
        assert "DNS:localhost, IP:127.0.0.1" in report.problems[0].message

    # a server with an openssl-made certificate from another CA
    foreign_ca = openssl.ca("srv-ca", "/CN=Server Elsewhere CA")
    crt, key = openssl.leaf("srv", "/CN=localhost", foreign_ca, SERVER_EXTENSIONS)
    context = server_ssl_context(crt, key, world.bundle, minimum_version=ssl.TLSVersion.TLSv1_3)
    server = TLSServer(context)
    try:
        report = diagnose_endpoint(
            "127.0.0.1", server.port, world.bundle, world.good.cert, world.good.key
        )
    finally:
        server.close()
    assert codes(report.problems) == ["unknown-issuer"]
    assert "'CN=Server Elsewhere CA'" in report.problems[0].message
    assert world.store.ca.subject in report.problems[0].message


def test_diagnose_endpoint_reports_an_expired_server_certificate(world, tmp_path):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=100)
    old = world.store.ca.issue_server(["localhost"], ["127.0.0.1"], now=past,
                                      duration=dt.timedelta(days=10))  # fmt: skip
    old_dir = world.store.write_tls_directory(tmp_path / "old-server", old)
    context = server_ssl_context(old_dir.cert, old_dir.key, world.bundle)
    server = TLSServer(context)
    try:
        report = diagnose_endpoint(
            "127.0.0.1", server.port, world.bundle, world.good.cert, world.good.key
        )
    finally:
        server.close()
    assert codes(report.problems) == ["expired"]
    assert "expired on" in report.problems[0].message
    assert report.server_certificate is not None


def test_diagnose_endpoint_unreachable_and_not_tls():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free_port = probe.getsockname()[1]
    report = diagnose_endpoint("127.0.0.1", free_port, _any_bundle(), timeout=TIMEOUT)
    assert codes(report.problems) == ["unreachable"]
    assert not report.connected

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def plaintext() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                conn.recv(1024)

    thread = threading.Thread(target=plaintext, daemon=True)
    thread.start()
    try:
        report = diagnose_endpoint(
            "127.0.0.1", listener.getsockname()[1], _any_bundle(), timeout=TIMEOUT
        )
    finally:
        listener.close()
        thread.join(timeout=TIMEOUT)
    assert codes(report.problems) == ["not-tls"]


def test_a_tls12_only_client_meets_a_tls13_server(world):
    with serving(world) as server:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(world.bundle)
        context.load_cert_chain(world.good.cert, world.good.key)
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as raw,
            pytest.raises(ssl.SSLError) as info,
        ):
            context.wrap_socket(raw, server_hostname="localhost")
        assert codes(explain_tls_error(info.value, side="client")) == ["tls-version"]


def _any_bundle() -> bytes:
    from fedwarden.pki import CertificateAuthority, TrainingRef

    return CertificateAuthority.create(TrainingRef("x", "y")).cert_pem
