"""The demo's man in the middle: a TLS-inspecting relay that alters updates in transit.

The scenario: one site's trust store was given the relay's CA (as a corporate TLS-inspection
box's CA often is), so the site's client accepts the relay as the aggregator. The relay is an
insider: it holds a client certificate of the training's own CA, under its own name, and
connects upstream with it. Everything passes through byte for byte, except ``SubmitUpdate``,
where it flips bits of the first payload chunk before forwarding.

What fedwarden does about it: the aggregator takes the identity from the TLS peer (the relay),
not from the envelope (the victim), and refuses the update (``identity-mismatch``); a relay that
rewrote the envelope's client id would break the victim's signature, and one that kept both
would still fail the payload digest. Strikes then ban the relay's identity and revoke its
certificate, after which it cannot connect at all. The victim's updates are lost, which is the
right outcome: no altered update is ever aggregated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from fedwarden.wire import SERVICE, channel_credentials, channel_options, method_path
from fedwarden.wire import fedwarden_pb2 as pb

log = logging.getLogger(__name__)


@dataclass
class RelayCounters:
    """What the relay did, for the demo's report."""

    forwarded_calls: int = 0
    intercepted_updates: int = 0
    """Updates the relay set out to alter; the aggregator may refuse one at its header (the
    relay's identity is not the envelope's) before a payload chunk passes to be altered."""
    tampered_updates: int = 0
    upstream_refusals: list[str] = field(default_factory=list)


class TamperingRelay:
    """A gRPC relay: TLS towards the victim with its own certificate, mTLS upstream as itself."""

    def __init__(
        self,
        *,
        upstream: str,
        upstream_ca: bytes,
        upstream_cert: bytes,
        upstream_key: bytes,
        server_cert: bytes,
        server_key: bytes,
        upstream_server_name: str | None = None,
    ) -> None:
        self._channel = grpc.secure_channel(
            upstream,
            channel_credentials(upstream_ca, upstream_cert, upstream_key),
            options=channel_options(server_name=upstream_server_name),
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers((self._handlers(),))
        self._credentials = grpc.ssl_server_credentials([(server_key, server_cert)])
        self.counters = RelayCounters()
        self._lock = threading.Lock()
        self.port = 0

    def start(self) -> str:
        self.port = self._server.add_secure_port("127.0.0.1:0", self._credentials)
        self._server.start()
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=1).wait()
        self._channel.close()

    def _handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Join": grpc.unary_unary_rpc_method_handler(self._unary("Join")),
                "Poll": grpc.unary_unary_rpc_method_handler(self._unary("Poll")),
                "GetModel": grpc.unary_stream_rpc_method_handler(self._get_model),
                "SubmitUpdate": grpc.stream_unary_rpc_method_handler(self._submit),
            },
        )

    def _unary(self, name: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        call = self._channel.unary_unary(method_path(name))

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            self._count()
            try:
                response: bytes = call(request, timeout=context.time_remaining())
            except grpc.RpcError as error:
                self._refused(error, context)
            return response

        return forward

    def _get_model(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._count()
        try:
            yield from self._channel.unary_stream(method_path("GetModel"))(
                request, timeout=context.time_remaining()
            )
        except grpc.RpcError as error:
            self._refused(error, context)

    def _submit(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._count()
        with self._lock:
            self.counters.intercepted_updates += 1
        try:
            reply: bytes = self._channel.stream_unary(method_path("SubmitUpdate"))(
                self._tamper(requests), timeout=context.time_remaining()
            )
        except grpc.RpcError as error:
            self._refused(error, context)
        return reply

    def _tamper(self, requests: Iterator[bytes]) -> Iterator[bytes]:
        tampered = False
        for raw in requests:
            message = pb.UpdateMessage.FromString(raw)
            if not tampered and message.WhichOneof("body") == "chunk" and message.chunk:
                altered = bytearray(message.chunk)
                altered[3] ^= 0x80  # little-endian float32: flip the sign of the first value
                message.chunk = bytes(altered)
                raw = message.SerializeToString()
                tampered = True
                with self._lock:
                    self.counters.tampered_updates += 1
            yield raw

    def _count(self) -> None:
        with self._lock:
            self.counters.forwarded_calls += 1

    def _refused(self, error: Any, context: grpc.ServicerContext) -> None:
        details = error.details() or ""
        with self._lock:
            self.counters.upstream_refusals.append(details)
        context.abort(error.code(), details)
