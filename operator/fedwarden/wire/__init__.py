"""fedwarden's federated-learning protocol: the gRPC service, chunked tensors, the signed update
envelope and mutual-TLS transport helpers. It uses :mod:`fedwarden.pki` and nothing else of
fedwarden. The service is defined in ``fedwarden.proto`` (package ``fedwarden.v1``); the
generated ``fedwarden_pb2`` modules are checked in and kept current by a drift test.

See docs/runtime.md for the protocol, the order of the checks and the reason codes.
"""

from fedwarden.wire import fedwarden_pb2 as pb
from fedwarden.wire.envelope import (
    MAX_EVAL_METRICS,
    METRIC_NAME,
    NONCE_BYTES,
    ROUND_TOKEN_BYTES,
    SIGNING_CONTEXT,
    Envelope,
    SignedEnvelope,
    new_nonce,
    open_envelope,
    sign_envelope,
)
from fedwarden.wire.errors import (
    REASON_METADATA_KEY,
    REASONS,
    ReasonInfo,
    WireError,
    reason_of_details,
    status_for,
)
from fedwarden.wire.tensor import (
    DEFAULT_CHUNK_BYTES,
    DIGEST_BYTES,
    DTYPE,
    MAX_CHUNK_BYTES,
    TensorAssembler,
    as_wire_array,
    check_chunk_bytes,
    iter_chunks,
    tensor_digest,
)
from fedwarden.wire.transport import (
    ReloadingServerCredentials,
    channel_credentials,
    channel_options,
    message_limit,
    peer_certificate_pem,
    server_options,
    tls_version,
)

SERVICE = "fedwarden.v1.Federation"


def method_path(name: str) -> str:
    """The full gRPC method path, e.g. ``/fedwarden.v1.Federation/SubmitUpdate``."""
    return f"/{SERVICE}/{name}"


__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DIGEST_BYTES",
    "DTYPE",
    "MAX_CHUNK_BYTES",
    "MAX_EVAL_METRICS",
    "METRIC_NAME",
    "NONCE_BYTES",
    "REASONS",
    "REASON_METADATA_KEY",
    "ROUND_TOKEN_BYTES",
    "SERVICE",
    "SIGNING_CONTEXT",
    "Envelope",
    "ReasonInfo",
    "ReloadingServerCredentials",
    "SignedEnvelope",
    "TensorAssembler",
    "WireError",
    "as_wire_array",
    "channel_credentials",
    "channel_options",
    "check_chunk_bytes",
    "iter_chunks",
    "message_limit",
    "method_path",
    "new_nonce",
    "open_envelope",
    "pb",
    "peer_certificate_pem",
    "reason_of_details",
    "server_options",
    "sign_envelope",
    "status_for",
    "tensor_digest",
    "tls_version",
]
