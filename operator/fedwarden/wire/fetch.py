"""The ``FetchModel`` RPC: the exported model and its signed provenance, for readers only.

Server side: :func:`serve_export` authorises the caller as a reader of the training
(:func:`reader_of`: a verified, unrevoked certificate of the training's CA naming
``.../reader/<name>``, which the operator issues; a client is refused ``not-a-reader``) and
streams ``provenance.json`` then ``model.safetensors`` in chunks. The aggregator serves its
export while it runs; :class:`ModelServer` (``fedwarden model serve``) serves the same RPC from
the export directory once the training is over and the aggregator has exited.

Client side: :func:`fetch_export` writes each file to a temporary file next to its destination as
it arrives, checks it is whole (every offset in order, the announced size), fsyncs and renames it
into place, the model first. What was fetched is only bytes: the caller verifies the pair
against the training's CA (:func:`fedwarden.model.verify_model`), which is what makes it
trustworthy, whoever relayed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc

from fedwarden.pki import (
    CertificateProblem,
    PeerVerifier,
    PKIError,
    load_certificate,
    reader_from_certificate,
    verify_certificate,
)
from fedwarden.wire import fedwarden_pb2 as pb
from fedwarden.wire.errors import REASON_METADATA_KEY, WireError, reason_of_details, status_for
from fedwarden.wire.transport import (
    ReloadingServerCredentials,
    channel_credentials,
    channel_options,
    peer_certificate_pem,
    server_options,
)

log = logging.getLogger("fedwarden.wire")

PROVENANCE_FILE = "provenance.json"
MODEL_FILE = "model.safetensors"
FILES = (PROVENANCE_FILE, MODEL_FILE)
"""In the order they are sent."""
SERVICE = "fedwarden.v1.Federation"
METHOD = f"/{SERVICE}/FetchModel"

ExportPair = tuple[bytes, IO[bytes]]
"""``provenance.json``'s bytes and an open ``model.safetensors`` of the same export."""


# --- serving -----------------------------------------------------------------------------------


def reader_of(verifier: PeerVerifier, peer_pem: bytes | None) -> str:
    """The reader behind a connection's peer certificate; :class:`WireError` otherwise."""
    if peer_pem is None:
        raise WireError("no-certificate", "the connection carries no client certificate")
    try:
        cert = load_certificate(peer_pem, "peer certificate")
    except PKIError as exc:
        raise WireError("bad-certificate", exc.message) from None
    verifier.reload_revocations()
    try:
        verify_certificate(cert, verifier.bundle, purpose="client", crl=verifier.revocations)
        return reader_from_certificate(cert, verifier.training)
    except CertificateProblem as exc:
        reason = "not-a-reader" if exc.reason == "not-a-reader" else "not-authorised"
        raise WireError(reason, exc.message) from None


def open_export(directory: Path) -> ExportPair | None:
    """The export in ``directory``, or ``None`` when there is none. A file opened here keeps its
    content when a later export renames a new one over it; the caller closes it."""
    try:
        provenance = (directory / PROVENANCE_FILE).read_bytes()
        return provenance, (directory / MODEL_FILE).open("rb")
    except FileNotFoundError:
        return None


async def export_chunks(
    provenance: bytes, model: IO[bytes], chunk_bytes: int
) -> AsyncIterator[pb.FileChunk]:
    """The pair as ``FileChunk`` messages: the provenance, then the model read chunk by chunk
    in a worker thread (a model may be hundreds of MB)."""
    for offset in range(0, len(provenance), chunk_bytes):
        yield pb.FileChunk(
            file=PROVENANCE_FILE,
            offset=offset,
            data=provenance[offset : offset + chunk_bytes],
            size=len(provenance),
        )
    size = os.fstat(model.fileno()).st_size
    offset = 0
    while offset < size:
        data = await asyncio.to_thread(model.read, chunk_bytes)
        if not data:
            break
        yield pb.FileChunk(file=MODEL_FILE, offset=offset, data=data, size=size)
        offset += len(data)


async def serve_export(
    context: Any,
    verifier: PeerVerifier,
    open_pair: Callable[[], ExportPair | None],
    *,
    no_model: str,
    chunk_bytes: int,
    stall_timeout: float,
    refused: Callable[[WireError], None],
) -> None:
    """The body of a ``FetchModel`` handler: authorise, then stream the pair. A refusal is
    told to ``refused`` (to count and report it), then aborts the RPC."""
    try:
        reader = reader_of(verifier, peer_certificate_pem(context))
        pair = open_pair()
        if pair is None:
            raise WireError("no-model", no_model)
    except WireError as exc:
        await _abort(context, exc, refused)
        return
    provenance, model = pair
    log.info("the reader %r fetches the exported model", reader)
    with model:
        async for chunk in export_chunks(provenance, model, chunk_bytes):
            try:
                await asyncio.wait_for(context.write(chunk), stall_timeout)
            except TimeoutError:
                stalled = WireError("stalled", "the reader stopped reading the model")
                await _abort(context, stalled, refused)
                return


async def _abort(context: Any, exc: WireError, refused: Callable[[WireError], None]) -> None:
    refused(exc)
    await context.abort(
        status_for(exc.reason),
        f"{exc.reason}: {exc.message}",
        trailing_metadata=((REASON_METADATA_KEY, exc.reason),),
    )


class ModelServer:
    """Serves ``FetchModel`` from an export directory once the aggregator is gone (the operator
    runs it after a training finished), with the aggregator's certificate and trust: the same
    endpoint, the same readers, nothing but the model."""

    def __init__(
        self,
        directory: Path | str,
        *,
        cert: Path,
        key: Path,
        ca: Path,
        verifier: PeerVerifier,
        listen: str,
        chunk_bytes: int = 1 << 20,
        stall_timeout: float = 30.0,
    ) -> None:
        self.directory = Path(directory)
        self.verifier = verifier
        self.credentials = ReloadingServerCredentials(
            cert, key, ca, on_bundle_change=verifier.set_bundle
        )
        self.listen = listen
        self.chunk_bytes = chunk_bytes
        self.stall_timeout = stall_timeout
        self.port: int | None = None

    async def _fetch_model(self, request: bytes, context: Any) -> None:
        await serve_export(
            context,
            self.verifier,
            lambda: open_export(self.directory),
            no_model=f"no model was exported into {self.directory}",
            chunk_bytes=self.chunk_bytes,
            stall_timeout=self.stall_timeout,
            refused=self._refused,
        )

    def _refused(self, refusal: WireError) -> None:
        log.warning("refused a fetch: %s (%s)", refusal.message, refusal.reason)

    async def serve(self, started: Callable[[int], None] | None = None) -> None:
        """Listen until cancelled; ``started(port)`` once listening."""
        server = grpc.aio.server(options=server_options(self.chunk_bytes))
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "FetchModel": grpc.unary_stream_rpc_method_handler(
                    self._fetch_model, response_serializer=pb.FileChunk.SerializeToString
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_secure_port(self.listen, self.credentials.credentials())
        if port == 0:
            raise OSError(f"cannot listen on {self.listen} (in use, or not a local address?)")
        self.port = port
        await server.start()
        if started is not None:
            started(port)
        try:
            await server.wait_for_termination()
        finally:
            await server.stop(grace=1.0)


# --- fetching ----------------------------------------------------------------------------------


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
