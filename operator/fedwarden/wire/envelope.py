"""The signed update envelope.

An update is announced by an :class:`Envelope` (training uid, round and round token, client id,
digest of the base model, digest of the payload, number of values, claimed number of examples,
a fresh random nonce, the client's evaluation of the base model when it was asked for one, and
under record-level DP the ε the site has spent on its records and whether its budget is spent)
serialised as protobuf and signed with the key of the client's TLS certificate
(:func:`fedwarden.pki.sign_payload`). The signature covers a domain-separation prefix and the
envelope's bytes exactly as sent; the aggregator verifies it with the public key of the
certificate the client presented in the TLS handshake *before* it decodes the envelope
(:func:`open_envelope`), so a forged or altered header is refused without parsing a byte of it.

The envelope binds the payload to an identity (the certificate), a training, a round attempt,
a base model (no stale or cross-round update) and itself (a nonce: no replay); the payload
digest makes any change to the payload in transit detectable after the last chunk.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from google.protobuf.message import DecodeError

from fedwarden.pki import SignatureError, sign_payload, verify_payload
from fedwarden.wire import fedwarden_pb2 as pb
from fedwarden.wire.errors import WireError
from fedwarden.wire.tensor import DIGEST_BYTES

SIGNING_CONTEXT = b"fedwarden/v1 update envelope\x00"
"""Prefixed to the envelope bytes before signing: a signature made for fedwarden's envelope is
not valid for anything else the same key may sign, and vice versa."""

MAX_EVAL_METRICS = 16
"""Metrics a client may report with its update; their names match :data:`METRIC_NAME`."""
METRIC_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
NONCE_BYTES = 16
ROUND_TOKEN_BYTES = 16
MAX_ENVELOPE_BYTES = 4096


def new_nonce() -> bytes:
    """16 bytes from the OS CSPRNG."""
    return secrets.token_bytes(NONCE_BYTES)


@dataclass(frozen=True)
class Envelope:
    """What a client signs about one update. See the module docstring."""

    training_uid: str
    round: int
    round_token: bytes
    client_id: str
    base_digest: bytes
    payload_digest: bytes
    num_values: int
    num_examples: int = 0
    nonce: bytes = b""
    dtype: str = "float32"
    eval_metrics: Mapping[str, float] = field(default_factory=dict)
    eval_examples: int = 0
    site_epsilon: float | None = None
    site_budget_spent: bool = False

    def to_bytes(self) -> bytes:
        message = pb.Envelope(
            training_uid=self.training_uid,
            round=self.round,
            round_token=self.round_token,
            client_id=self.client_id,
            base_digest=self.base_digest,
            payload_digest=self.payload_digest,
            num_values=self.num_values,
            num_examples=self.num_examples,
            nonce=self.nonce,
            dtype=self.dtype,
            eval_metrics=dict(self.eval_metrics),
            eval_examples=self.eval_examples,
            site_epsilon=self.site_epsilon,
            site_budget_spent=self.site_budget_spent,
        )
        return bytes(message.SerializeToString(deterministic=True))

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse a (verified) envelope; ``malformed-envelope`` when it is not one."""
        try:
            msg = pb.Envelope.FromString(data)
        except DecodeError as exc:
            raise WireError("malformed-envelope", f"the envelope does not parse: {exc}") from exc
        env = cls(
            training_uid=msg.training_uid,
            round=msg.round,
            round_token=msg.round_token,
            client_id=msg.client_id,
            base_digest=msg.base_digest,
            payload_digest=msg.payload_digest,
            num_values=msg.num_values,
            num_examples=msg.num_examples,
            nonce=msg.nonce,
            dtype=msg.dtype,
            eval_metrics=dict(msg.eval_metrics),
            eval_examples=msg.eval_examples,
            site_epsilon=msg.site_epsilon if msg.HasField("site_epsilon") else None,
            site_budget_spent=msg.site_budget_spent,
        )
        problems = []
        if len(env.nonce) != NONCE_BYTES:
            problems.append(f"a nonce of {len(env.nonce)} bytes (expected {NONCE_BYTES})")
        if len(env.base_digest) != DIGEST_BYTES or len(env.payload_digest) != DIGEST_BYTES:
            problems.append(f"digests must be {DIGEST_BYTES} bytes (SHA-256)")
        if not env.client_id:
            problems.append("no client id")
        if len(env.eval_metrics) > MAX_EVAL_METRICS:
            problems.append(
                f"{len(env.eval_metrics)} evaluation metrics (at most {MAX_EVAL_METRICS})"
            )
        bad = sorted(
            name
            for name, value in env.eval_metrics.items()
            if not METRIC_NAME.match(name) or not math.isfinite(value)
        )
        if bad:
            problems.append(
                f"evaluation metrics with a bad name or a non-finite value: {', '.join(bad)[:200]}"
            )
        if env.site_epsilon is not None and not (
            math.isfinite(env.site_epsilon) and env.site_epsilon >= 0
        ):
            problems.append(f"a site epsilon of {env.site_epsilon!r} (a finite number >= 0)")
        if problems:
            raise WireError("malformed-envelope", "the envelope has " + "; ".join(problems))
        return env


@dataclass(frozen=True)
class SignedEnvelope:
    """An envelope's bytes and their signature, as they travel in the update's header."""

    envelope: bytes
    signature: bytes

    def header(self) -> pb.UpdateMessage:
        return pb.UpdateMessage(
            header=pb.UpdateHeader(envelope=self.envelope, signature=self.signature)
        )


def sign_envelope(key: PrivateKeyTypes, envelope: Envelope) -> SignedEnvelope:
    """Serialise ``envelope`` and sign it with ``key`` (the client certificate's key)."""
    data = envelope.to_bytes()
    return SignedEnvelope(data, sign_payload(key, SIGNING_CONTEXT + data))


def open_envelope(certificate: x509.Certificate, envelope: bytes, signature: bytes) -> Envelope:
    """Verify the signature with ``certificate``'s key, *then* parse the envelope.

    Raises :class:`WireError` with ``bad-signature`` (nothing was parsed) or
    ``malformed-envelope`` (a valid signature over bytes that are not an envelope).
    """
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise WireError(
            "malformed-envelope",
            f"an envelope of {len(envelope)} bytes (at most {MAX_ENVELOPE_BYTES})",
        )
    try:
        verify_payload(certificate, SIGNING_CONTEXT + envelope, signature)
    except SignatureError as exc:
        raise WireError("bad-signature", exc.message) from exc
    return Envelope.from_bytes(envelope)
