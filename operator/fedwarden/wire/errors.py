"""Why the protocol refuses something: reason codes, their gRPC status, and the exception.

Every refusal on the wire carries a short kebab-case ``reason`` code (the same vocabulary as the
aggregator's counters and reports, listed in docs/runtime.md) and a sentence. The code travels
to the peer as the first word of the gRPC status details (``"bad-signature: ..."``) and in the
trailing metadata key ``fedwarden-reason``, so that a client can act on it and a test can
assert it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import grpc

Stage = Literal["peer", "update", "model"]


@dataclass(frozen=True)
class ReasonInfo:
    """What a reason code means: the stage that refuses, the gRPC status, a description."""

    stage: Stage
    status: grpc.StatusCode
    description: str
    retryable: bool = False


REASON_METADATA_KEY = "fedwarden-reason"

_P: Stage = "peer"
_U: Stage = "update"
_M: Stage = "model"
_S = grpc.StatusCode

REASONS: dict[str, ReasonInfo] = {
    # --- the peer: authorisation from the TLS certificate, before anything is read ----------
    "no-certificate": ReasonInfo(
        _P, _S.UNAUTHENTICATED, "the connection carries no client certificate"
    ),
    "bad-certificate": ReasonInfo(_P, _S.UNAUTHENTICATED, "the peer certificate cannot be read"),
    "revoked": ReasonInfo(_P, _S.PERMISSION_DENIED, "the client's certificate is revoked"),
    "banned": ReasonInfo(_P, _S.PERMISSION_DENIED, "the client was banned by the pipeline"),
    "not-authorised": ReasonInfo(
        _P,
        _S.UNAUTHENTICATED,
        "the certificate fails verification or names no client of this training",
    ),
    "wrong-training": ReasonInfo(
        _P, _S.FAILED_PRECONDITION, "the client asked for another training"
    ),
    "malformed-request": ReasonInfo(_P, _S.INVALID_ARGUMENT, "a request message does not parse"),
    # --- a submitted update, in the order the server checks ----------------------------------
    "malformed-message": ReasonInfo(
        _U, _S.INVALID_ARGUMENT, "a stream message is not a protobuf UpdateMessage"
    ),
    "missing-header": ReasonInfo(
        _U, _S.INVALID_ARGUMENT, "the stream does not start with the signed header"
    ),
    "bad-signature": ReasonInfo(
        _U,
        _S.INVALID_ARGUMENT,
        "the envelope's signature does not verify with the TLS certificate's key",
    ),
    "malformed-envelope": ReasonInfo(_U, _S.INVALID_ARGUMENT, "the signed envelope does not parse"),
    "identity-mismatch": ReasonInfo(
        _U, _S.PERMISSION_DENIED, "the envelope names another client than the TLS certificate"
    ),
    "replay": ReasonInfo(_U, _S.INVALID_ARGUMENT, "the envelope (its nonce) was seen before"),
    "round-closed": ReasonInfo(
        _U, _S.FAILED_PRECONDITION, "no round is open for updates", retryable=True
    ),
    "wrong-round": ReasonInfo(
        _U, _S.FAILED_PRECONDITION, "the envelope is for another round or attempt"
    ),
    "not-sampled": ReasonInfo(_U, _S.PERMISSION_DENIED, "the client is not sampled for the round"),
    "duplicate": ReasonInfo(
        _U, _S.ALREADY_EXISTS, "the client's update for the round is already in"
    ),
    "too-many-attempts": ReasonInfo(
        _U, _S.RESOURCE_EXHAUSTED, "too many refused submissions this round"
    ),
    "wrong-base-model": ReasonInfo(
        _U, _S.FAILED_PRECONDITION, "the update was computed from another global model"
    ),
    "unsupported-dtype": ReasonInfo(_U, _S.INVALID_ARGUMENT, "the payload is not float32"),
    "oversized": ReasonInfo(
        _U,
        _S.RESOURCE_EXHAUSTED,
        "the update, or one of its messages, is larger than the configured maximum",
    ),
    "wrong-size": ReasonInfo(_U, _S.INVALID_ARGUMENT, "the update does not have the model's size"),
    "malformed-chunk": ReasonInfo(
        _U, _S.INVALID_ARGUMENT, "a chunk is not a whole number of float32 values"
    ),
    "truncated": ReasonInfo(
        _U, _S.INVALID_ARGUMENT, "the stream ended before the announced values", retryable=True
    ),
    "tampered": ReasonInfo(
        _U, _S.DATA_LOSS, "the payload's digest differs from the signed one (altered in transit)"
    ),
    "stalled": ReasonInfo(
        _U, _S.DEADLINE_EXCEEDED, "the client sent nothing for too long", retryable=True
    ),
    # --- the pipeline's verdicts (after the round closes) ------------------------------------
    "invalid-update": ReasonInfo(
        _U, _S.OK, "the pipeline's validation refused the values (NaN, Inf, norm)"
    ),
    "outlier": ReasonInfo(_U, _S.OK, "a statistical outlier in the round's cohort"),
    "free-riding": ReasonInfo(_U, _S.OK, "a zero, replayed or noise-only update"),
    "poisoning": ReasonInfo(
        _U, _S.OK, "points against the cohort's median while the cohort agrees"
    ),
    # --- the global model (FL04) -------------------------------------------------------------
    "model-not-sampled": ReasonInfo(
        _M, _S.PERMISSION_DENIED, "the model is served only to clients sampled for the open round"
    ),
    "model-wrong-round": ReasonInfo(_M, _S.FAILED_PRECONDITION, "the request names another round"),
    "throttled": ReasonInfo(
        _M, _S.RESOURCE_EXHAUSTED, "too many downloads of the model this round"
    ),
    # --- the exported model (FetchModel) -----------------------------------------------------
    "not-a-reader": ReasonInfo(
        _M, _S.PERMISSION_DENIED, "only the training's reader identity may fetch the export"
    ),
    "no-model": ReasonInfo(
        _M, _S.NOT_FOUND, "no model was exported yet, or the aggregator exports none"
    ),
}
"""Every reason code the runtime reports, by stage. docs/runtime.md has the same table."""


def status_for(reason: str) -> grpc.StatusCode:
    info = REASONS.get(reason)
    return info.status if info is not None else grpc.StatusCode.INVALID_ARGUMENT


class WireError(Exception):
    """A refusal with a reason code (see :data:`REASONS`) and a sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def status(self) -> grpc.StatusCode:
        return status_for(self.reason)

    @property
    def details(self) -> str:
        """The gRPC status details: ``"<reason>: <message>"``."""
        return f"{self.reason}: {self.message}"

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"WireError(reason={self.reason!r}, message={self.message!r})"


def reason_of_details(details: str | None) -> str | None:
    """The reason code at the head of a status' details, if it is one of :data:`REASONS`."""
    if not details:
        return None
    head, sep, _ = details.partition(":")
    head = head.strip()
    return head if sep and head in REASONS else None
