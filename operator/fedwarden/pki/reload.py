"""Hot reload of a key pair (the aggregator's server certificate) without dropping connections.

:class:`KeyPairWatcher` watches ``tls.crt`` and ``tls.key`` (as mounted from a Secret, or written
by ``fedwarden pki``) and hands out the new pair when the files change, after checking that the
key matches the certificate: a pair caught half-way through an update (the certificate replaced,
the key not yet) is not handed out; the previous pair stays in use until a matching pair is in
place. Change detection costs two ``stat`` calls (mtime, size, inode, so that the symlink swap
Kubernetes uses to update a Secret volume is seen), then a content hash.

gRPC servers plug this into ``grpc.dynamic_ssl_server_credentials``: the fetcher returns a new
certificate configuration when :meth:`KeyPairWatcher.changed` returns a pair, ``None`` otherwise;
established connections keep their session, new handshakes use the new certificate.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fedwarden.pki.errors import InvalidInputError
from fedwarden.pki.files import load_certificates, load_private_key, read_bytes
from fedwarden.pki.keys import same_public_key


def _stat(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


class KeyPairWatcher:
    """The current (certificate chain PEM, key PEM) of two files, reloaded when they change."""

    def __init__(self, cert_path: Path | str, key_path: Path | str) -> None:
        self.cert_path, self.key_path = Path(cert_path), Path(key_path)
        self._stats: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
        self._digest: bytes | None = None
        self.cert_pem, self.key_pem = self._read_pair()
        self._stats = (_stat(self.cert_path), _stat(self.key_path))

    def _read_pair(self) -> tuple[bytes, bytes]:
        cert_pem = read_bytes(self.cert_path, "certificate file")
        key_pem = read_bytes(self.key_path, "key file")
        leaf = load_certificates(cert_pem, str(self.cert_path))[0]
        key = load_private_key(key_pem, str(self.key_path))
        if not same_public_key(leaf.public_key(), key.public_key()):
            raise InvalidInputError(
                "key-mismatch",
                f"{self.key_path} is not the key of {self.cert_path} "
                f"({leaf.subject.rfc4514_string()!r}); keeping the pair in use",
            )
        self._digest = hashlib.sha256(cert_pem + b"\0" + key_pem).digest()
        return cert_pem, key_pem

    def changed(self) -> tuple[bytes, bytes] | None:
        """The new pair if the files changed to a valid, matching pair; ``None`` otherwise.

        Raises :class:`InvalidInputError` (and keeps the current pair) when the files changed
        but cannot be read or do not match; call again later, the update may be half-way.
        """
        try:
            stats = (_stat(self.cert_path), _stat(self.key_path))
        except FileNotFoundError as exc:
            raise InvalidInputError(
                "missing-file", f"{exc.filename} disappeared; keeping the pair in use"
            ) from exc
        if stats == self._stats:
            return None
        previous = self._digest
        pair = self._read_pair()
        self._stats = stats
        if self._digest == previous:
            return None
        self.cert_pem, self.key_pem = pair
        return pair
