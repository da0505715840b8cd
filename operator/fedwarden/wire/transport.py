"""gRPC transport: mutual-TLS credentials, hot reload of the server's key pair, channel options.

The server requires a client certificate signed by the training's CA: gRPC's TLS library
(BoringSSL) refuses a connection without one, with one of another CA, or with an expired one,
during the handshake, before any RPC exists. TLS 1.3 is negotiated whenever the peer offers it
(gRPC's default range is TLS 1.2–1.3). What the handshake cannot check (revocation, enrolment in
this training, bans) the aggregator checks from the peer certificate at the start of every RPC.

:class:`ReloadingServerCredentials` plugs :class:`fedwarden.pki.KeyPairWatcher` into
``grpc.dynamic_ssl_server_credentials``: on each new handshake gRPC asks for the current
configuration, which changes when ``tls.crt``/``tls.key`` change to a matching pair or the CA
bundle changes; established connections keep their sessions, so a training is not dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from fedwarden.pki import KeyPairWatcher, PKIError, TrustBundle
from fedwarden.wire.tensor import DEFAULT_CHUNK_BYTES

log = logging.getLogger("fedwarden.wire")

MESSAGE_SLACK = 64 << 10
"""Bytes allowed on top of a chunk for the message framing and the signed header."""


def message_limit(chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """The gRPC message size limit for a given chunk size: one chunk plus framing."""
    return chunk_bytes + MESSAGE_SLACK


def server_options(chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[tuple[str, Any]]:
    """Server channel arguments: messages limited to about one chunk; keepalive sane."""
    limit = 2 * chunk_bytes + MESSAGE_SLACK
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def channel_options(
    chunk_bytes: int = 4 << 20, server_name: str | None = None
) -> list[tuple[str, Any]]:
    """Client channel arguments; ``server_name`` overrides the name checked in the server's
    certificate (only when the address is not one of its names)."""
    limit = 2 * chunk_bytes + MESSAGE_SLACK
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.enable_retries", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def channel_credentials(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> grpc.ChannelCredentials:
    """Client credentials: trust ``ca_pem`` (the bundle), present ``cert_pem``/``key_pem``."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def peer_certificate_pem(context: Any) -> bytes | None:
    """The PEM certificate the peer presented in the TLS handshake, from the auth context."""
    try:
        certs = context.auth_context().get("x509_pem_cert")
    except Exception:  # a context without TLS
        return None
    if not certs:
        return None
    cert = certs[0]
    return cert if isinstance(cert, bytes) else str(cert).encode()


def tls_version(context: Any) -> str | None:
    try:
        value = context.auth_context().get("ssl_tls_version")
    except Exception:
        return None
    if not value:
        return None
    first = value[0]
    return first.decode() if isinstance(first, bytes) else str(first)


def _file_state(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


class ReloadingServerCredentials:
    """Server credentials that follow ``tls.crt``/``tls.key`` and the CA bundle on disk.

    ``on_bundle_change`` is called with the new :class:`~fedwarden.pki.TrustBundle` when the CA
    bundle changes (the aggregator hands it to its :class:`~fedwarden.pki.PeerVerifier`).
    """

    def __init__(
        self,
        cert_path: Path | str,
        key_path: Path | str,
        ca_path: Path | str,
        *,
        on_bundle_change: Callable[[TrustBundle], None] | None = None,
    ) -> None:
        self.watcher = KeyPairWatcher(cert_path, key_path)
        self.ca_path = Path(ca_path)
        self.on_bundle_change = on_bundle_change
        self._lock = threading.Lock()
        self.ca_pem = self.ca_path.read_bytes()
        TrustBundle.from_pem(self.ca_pem, str(self.ca_path))  # a clear error when it is not PEM
        self._ca_state = _file_state(self.ca_path)
        self._ca_digest = hashlib.sha256(self.ca_pem).digest()
        self.reloads = 0

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.watcher.key_pem, self.watcher.cert_pem)], root_certificates=self.ca_pem
        )

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.configuration(), self._fetch, require_client_authentication=True
        )

    def _bundle_changed(self) -> bool:
        state = _file_state(self.ca_path)
        if state == self._ca_state:
            return False
        data = self.ca_path.read_bytes()
        bundle = TrustBundle.from_pem(data, str(self.ca_path))
        self._ca_state = state
        digest = hashlib.sha256(data).digest()
        if digest == self._ca_digest:
            return False
        self.ca_pem, self._ca_digest = data, digest
        if self.on_bundle_change is not None:
            self.on_bundle_change(bundle)
        return True

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration, or ``None`` (keep)."""
        with self._lock:
            try:
                changed = self.watcher.changed() is not None
                changed = self._bundle_changed() or changed
            except (PKIError, OSError) as exc:
                log.warning("keeping the server's certificate configuration: %s", exc)
                return None
            except Exception:  # never let a reload kill the handshake thread
                log.exception("keeping the server's certificate configuration")
                return None
            if not changed:
                return None
            self.reloads += 1
            log.info("reloaded the server certificate configuration (%d)", self.reloads)
            return self.configuration()
