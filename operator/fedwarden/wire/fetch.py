"""Fetching the aggregator's exported model (the ``FetchModel`` RPC) as a reader of the training.

The aggregator streams ``provenance.json`` and then ``model.safetensors`` in chunks; each file is
written to a temporary file next to its destination as it arrives, checked to be whole (every
offset in order, the announced size), fsynced and renamed into place, the model first. What was
fetched is only bytes: the caller verifies the pair against the training's CA
(:func:`fedwarden.model.verify_model`), which is what makes it trustworthy, whoever relayed it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc

from fedwarden.wire import fedwarden_pb2 as pb
from fedwarden.wire.errors import WireError, reason_of_details
from fedwarden.wire.transport import channel_credentials, channel_options

FILES = ("provenance.json", "model.safetensors")
METHOD = "/fedwarden.v1.Federation/FetchModel"


@dataclass(frozen=True)
class FetchedFile:
    path: Path
    size: int


class _Download:
    """One file being received into a temporary file in ``directory``."""

    def __init__(self, directory: Path, name: str, size: int) -> None:
        self.final = directory / name
        self.size = size
        self.received = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        self.tmp = Path(tmp)
        self.handle: IO[bytes] = os.fdopen(fd, "wb")

    def add(self, chunk: pb.FileChunk) -> None:
        if chunk.offset != self.received or chunk.size != self.size:
            raise WireError(
                "malformed-chunk",
                f"{self.final.name}: a chunk at offset {chunk.offset} of {chunk.size} bytes, "
                f"expected offset {self.received} of {self.size}",
            )
        if self.received + len(chunk.data) > self.size:
            raise WireError("malformed-chunk", f"{self.final.name}: more bytes than announced")
        self.handle.write(chunk.data)
        self.received += len(chunk.data)

    def finish(self) -> FetchedFile:
        if self.received != self.size:
            raise WireError(
                "truncated",
                f"{self.final.name}: the stream ended after {self.received} of {self.size} bytes",
            )
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return FetchedFile(self.final, self.size)

    def discard(self) -> None:
        self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def fetch_export(
    server: str,
    out: Path | str,
    *,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    server_name: str | None = None,
    timeout: float = 600.0,
) -> list[FetchedFile]:
    """Fetch the export from the aggregator at ``server`` (``HOST:PORT``) into ``out``.

    Raises :class:`WireError` with the server's reason code (``not-a-reader``, ``no-model``,
    ...) or ``unavailable`` with gRPC's details when the aggregator cannot be reached.
    """
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    downloads: dict[str, _Download] = {}
    credentials = channel_credentials(ca_pem, cert_pem, key_pem)
    try:
        with grpc.secure_channel(
            server, credentials, options=channel_options(server_name=server_name)
        ) as channel:
            call = channel.unary_stream(
                METHOD,
                request_serializer=pb.FetchModelRequest.SerializeToString,
                response_deserializer=pb.FileChunk.FromString,
            )
            for chunk in call(pb.FetchModelRequest(), timeout=timeout):
                if chunk.file not in FILES:
                    raise WireError("malformed-chunk", f"a chunk of an unknown file {chunk.file!r}")
                if chunk.file not in downloads:
                    downloads[chunk.file] = _Download(directory, chunk.file, chunk.size)
                downloads[chunk.file].add(chunk)
        missing = [name for name in FILES if name not in downloads]
        if missing:
            raise WireError("truncated", f"the aggregator sent no {' and no '.join(missing)}")
        fetched = {name: download.finish() for name, download in downloads.items()}
        # the model first: a provenance never names a model that is not in place yet
        for name in reversed(FILES):
            os.replace(downloads[name].tmp, downloads[name].final)
        _fsync_directory(directory)
        return [fetched[name] for name in FILES]
    except grpc.RpcError as exc:
        details = exc.details() or str(exc.code())
        reason = reason_of_details(details) or exc.code().name.lower().replace("_", "-")
        raise WireError(reason, f"{server}: {details}") from None
    finally:
        for download in downloads.values():
            download.discard()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
