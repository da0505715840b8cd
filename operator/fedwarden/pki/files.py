"""Reading and writing keys and certificates, and where they live on disk.

Keys are written as unencrypted PKCS#8 PEM with mode 0600 (as Kubernetes Secrets hold them);
every file is written atomically (a temporary file in the same directory, fsync, rename), so a
reader such as the aggregator reloading ``crl.pem`` never sees half a file.

Two layouts:

- :class:`PKIDirectory`, a training's PKI as the CA keeps it::

      ca.crt  ca.key          the current CA (ca.key mode 0600, the directory 0700)
      ca-bundle.crt           the trust bundle to hand out: the current CA, and the previous
                              one while a CA rotation is under way
      crl.pem                 the revocation lists of every CA in the bundle
      revocations.json        the revoked serials and CRL numbers: crl.pem is rebuilt from it
      server.crt  server.key  the aggregator's certificate (the key only if the CA made it)
      clients/<name>.crt      each client's certificate, and <name>.key if the CA made the key
      previous/ca.crt|ca.key  the CA being rotated out

- :class:`TLSDirectory`, what one process mounts, named as in a ``kubernetes.io/tls`` Secret::

      tls.crt  tls.key  ca.crt     (ca.crt holds the trust bundle)
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from fedwarden.pki.errors import InvalidInputError

_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"
_CRL_BEGIN = b"-----BEGIN X509 CRL-----"


# --- bytes <-> objects -----------------------------------------------------------------------


def load_certificates(data: bytes, source: str = "input") -> list[x509.Certificate]:
    """Every certificate in PEM ``data`` (a bundle), or the one certificate in DER ``data``."""
    if _CERT_BEGIN in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise InvalidInputError(
                "bad-pem", f"{source}: a PEM certificate block cannot be read ({exc})"
            ) from exc
    if data[:1] == b"\x30":
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            pass
    what = _what_is(data)
    raise InvalidInputError("bad-pem", f"{source}: no certificate found ({what})")


def load_certificate(data: bytes, source: str = "input") -> x509.Certificate:
    """The first certificate in ``data`` (the leaf, when ``data`` is a chain)."""
    return load_certificates(data, source)[0]


def load_private_key(data: bytes, source: str = "input") -> PrivateKeyTypes:
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data:
        raise InvalidInputError(
            "bad-key",
            f"{source}: the private key is encrypted; fedwarden reads unencrypted keys "
            "(decrypt it with `openssl pkey -in KEY -out KEY.plain`)",
        )
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        what = _what_is(data)
        raise InvalidInputError("bad-key", f"{source}: no private key found ({what})") from exc
    except UnsupportedAlgorithm as exc:
        raise InvalidInputError(
            "bad-key", f"{source}: the private key cannot be used: {exc}"
        ) from exc


def load_csr(data: bytes, source: str = "input") -> x509.CertificateSigningRequest:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        what = _what_is(data)
        raise InvalidInputError(
            "malformed-csr", f"{source}: no certificate signing request found ({what})"
        ) from exc


def _what_is(data: bytes) -> str:
    if not data.strip():
        return "the input is empty"
    for line in data.splitlines():
        if line.startswith(b"-----BEGIN "):
            label = line.decode("ascii", "replace").strip("-").removeprefix("BEGIN ")
            return f"it holds a PEM block of type {label!r}"
    return "it is neither PEM nor DER"


def certificates_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS#8, unencrypted (Kubernetes Secrets and cert-manager store keys this way)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- files -----------------------------------------------------------------------------------


def write_atomic(path: Path | str, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` with ``mode``: temporary file, fsync, rename, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_private_key(path: Path | str, key: PrivateKeyTypes | bytes) -> Path:
    """Write a private key as PKCS#8 PEM, readable by its owner only (0600)."""
    data = key if isinstance(key, bytes) else private_key_pem(key)
    return write_atomic(path, data, 0o600)


def write_certificates(
    path: Path | str, certs: Sequence[x509.Certificate] | x509.Certificate | bytes
) -> Path:
    if isinstance(certs, bytes):
        data = certs
    elif isinstance(certs, x509.Certificate):
        data = certificate_pem(certs)
    else:
        data = certificates_pem(certs)
    return write_atomic(path, data, 0o644)


def read_bytes(path: Path | str, what: str = "file") -> bytes:
    """Read a file, turning the usual mistakes into an :class:`InvalidInputError`."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidInputError("missing-file", f"{what} {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise InvalidInputError("missing-file", f"{what} {path} is a directory") from exc
    except PermissionError as exc:
        raise InvalidInputError("missing-file", f"{what} {path} cannot be read") from exc


def read_certificates(path: Path | str) -> list[x509.Certificate]:
    return load_certificates(read_bytes(path, "certificate file"), str(path))


def read_certificate(path: Path | str) -> x509.Certificate:
    return load_certificate(read_bytes(path, "certificate file"), str(path))


def read_private_key(path: Path | str) -> PrivateKeyTypes:
    return load_private_key(read_bytes(path, "key file"), str(path))


def read_csr(path: Path | str) -> x509.CertificateSigningRequest:
    return load_csr(read_bytes(path, "CSR file"), str(path))


def key_file_mode_problem(path: Path | str) -> str | None:
    """Why a key file's permissions are too open, or ``None`` when only its owner can read it."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        return f"key file {path} has mode {mode:04o}; it must be readable by its owner only (0600)"
    return None


def split_pem_blocks(data: bytes, begin: bytes) -> list[bytes]:
    """The PEM blocks of one type in ``data``, each with its BEGIN/END lines."""
    blocks: list[bytes] = []
    start = data.find(begin)
    end_marker = begin.replace(b"BEGIN", b"END")
    while start != -1:
        end = data.find(end_marker, start)
        if end == -1:
            break
        end += len(end_marker)
        blocks.append(data[start:end] + b"\n")
        start = data.find(begin, end)
    return blocks


def crl_blocks(data: bytes) -> list[bytes]:
    return split_pem_blocks(data, _CRL_BEGIN)


# --- layouts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PKIDirectory:
    """A training's PKI directory, as the CA keeps it (see the module docstring)."""

    root: Path

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def bundle(self) -> Path:
        return self.root / "ca-bundle.crt"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def revocation_state(self) -> Path:
        return self.root / "revocations.json"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    @property
    def previous(self) -> Path:
        return self.root / "previous"

    @property
    def previous_ca_cert(self) -> Path:
        return self.previous / "ca.crt"

    @property
    def previous_ca_key(self) -> Path:
        return self.previous / "ca.key"

    def client_cert(self, name: str) -> Path:
        return self.clients / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.clients / f"{name}.key"

    def create(self) -> None:
        """Make the directory, readable by its owner only (it holds the CA's key)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def exists(self) -> bool:
        return self.ca_cert.exists() and self.ca_key.exists()


@dataclass(frozen=True)
class TLSDirectory:
    """A directory in the shape of a ``kubernetes.io/tls`` Secret: tls.crt, tls.key, ca.crt."""

    root: Path

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def cert(self) -> Path:
        return self.root / "tls.crt"

    @property
    def key(self) -> Path:
        return self.root / "tls.key"

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    def write(
        self,
        cert: x509.Certificate | bytes,
        key: PrivateKeyTypes | bytes | None,
        ca_bundle: Sequence[x509.Certificate] | bytes,
    ) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if key is not None:
            write_private_key(self.key, key)
        write_certificates(self.cert, cert)
        write_certificates(self.ca, ca_bundle)
