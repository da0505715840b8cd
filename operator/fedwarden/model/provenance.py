"""The trained model out: ``model.safetensors`` and a signed ``provenance.json``, and checking them.

:func:`export_model` writes, into one directory,

- ``model.safetensors``: the global model as named float32 tensors in the app's layout;
- ``provenance.json``: how it was made (training, rounds, ε and δ, the pipeline's configuration,
  who took part in which round, who was banned and why, the layout, the model file's SHA-256,
  fedwarden's version, the time), signed with the aggregator's key.

The signature covers ``SIGNING_CONTEXT`` followed by the canonical JSON of the ``provenance``
object (sorted keys, no whitespace, UTF-8, no NaN), and ``provenance.json`` carries the signer's
certificate chain, so that someone holding only the training's CA certificate can check it:
:func:`verify_model` verifies the chain to the CA, that the signer is the training's aggregator
(its ``.../aggregator`` SPIFFE ID, a server certificate; never a client), the signature, the
model file's SHA-256 and that the file parses to the recorded layout. The chain is verified at
the signing time the provenance records: a model stays verifiable after the aggregator's
short-lived certificate expires, as a signed release does after its signing certificate does.

Both files are written atomically (temporary file, fsync, rename), the model first and then the
provenance that names its hash: a reader sees whole files, and a pair caught between the two
renames fails :func:`verify_model` on the hash rather than passing with the wrong model.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy.typing as npt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from fedwarden import __version__
from fedwarden.model.tensors import (
    ModelFileError,
    check_layout,
    check_tensors,
    parse_safetensors,
    safetensors_bytes,
)
from fedwarden.pipeline import ParameterLayout
from fedwarden.pki import (
    CertificateProblem,
    InvalidInputError,
    PKIError,
    SignatureError,
    TrainingRef,
    TrustBundle,
    certificate_pem,
    load_certificates,
    read_certificates,
    read_private_key,
    sign_payload,
    verify_certificate,
    verify_payload,
)
from fedwarden.pki.files import write_atomic
from fedwarden.pki.identity import uri_sans

FORMAT = "fedwarden.provenance/v1"
SIGNING_CONTEXT = b"fedwarden.provenance/v1\n"
"""Prefixed to what is signed, so that no other message signed with the aggregator's key can pass
as a provenance (and no provenance as another message)."""
MODEL_FILE = "model.safetensors"
PROVENANCE_FILE = "provenance.json"


class ModelVerificationError(Exception):
    """An export that does not verify; ``reason`` is a short code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


def canonical_json(value: Any) -> bytes:
    """The one byte string a JSON value is signed as (sorted keys, no whitespace, UTF-8)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layout_to_json(layout: ParameterLayout) -> list[dict[str, Any]]:
    """The layout as a list, in order: canonical JSON sorts object keys, and order matters."""
    return [{"name": n, "shape": list(s)} for n, s in zip(layout.names, layout.shapes, strict=True)]


def layout_from_json(value: Any) -> ParameterLayout:
    if not isinstance(value, list) or not value:
        raise ValueError("the layout must be a non-empty list of {name, shape}")
    return ParameterLayout(
        tuple(str(t["name"]) for t in value),
        tuple(tuple(int(d) for d in t["shape"]) for t in value),
    )


# --- signing and writing ---------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """A private key and its certificate chain (leaf first): the aggregator's server identity."""

    key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...]

    @classmethod
    def from_files(cls, cert: Path | str, key: Path | str) -> Signer:
        """Read on every export: the aggregator's certificate is renewed while it runs."""
        return cls(read_private_key(key), tuple(read_certificates(cert)))


@dataclass(frozen=True)
class ExportedModel:
    """What an export wrote."""

    directory: Path
    round: int
    sha256: str
    """Of ``model.safetensors``'s bytes."""


def _algorithm(key: PrivateKeyTypes) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ecdsa-sha256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa-pss-sha256"
    return type(key).__name__


def export_model(
    directory: Path | str,
    vector: npt.ArrayLike,
    layout: ParameterLayout,
    facts: Mapping[str, Any],
    signer: Signer,
    *,
    lock: threading.Lock | None = None,
    now: dt.datetime | None = None,
) -> ExportedModel:
    """Write ``model.safetensors`` and the signed ``provenance.json`` into ``directory``.

    ``facts`` is what the caller knows of the training (``training``, ``rounds_completed``,
    ``privacy``, ``aggregation``, ``participation``, ``bans``...); ``rounds_completed`` is
    required. The model, the layout, the version and the time are added here. ``lock``, when
    given, is held over the two renames, so that a reader taking it sees a matching pair.
    """
    directory = Path(directory)
    rounds = int(facts["rounds_completed"])
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    leaf = signer.chain[0]
    uris = uri_sans(leaf)
    model_bytes = safetensors_bytes(
        vector, layout, {"producer": f"fedwarden {__version__}", "round": str(rounds)}
    )
    digest = sha256_hex(model_bytes)
    body: dict[str, Any] = {
        **facts,
        "format": FORMAT,
        "model": {
            "file": MODEL_FILE,
            "sha256": digest,
            "bytes": len(model_bytes),
            "dtype": "float32",
            "num_parameters": layout.size,
            "layout": layout_to_json(layout),
        },
        "signer": uris[0] if len(uris) == 1 else leaf.subject.rfc4514_string(),
        "fedwarden_version": __version__,
        "created": when.isoformat().replace("+00:00", "Z"),
    }
    signature = sign_payload(signer.key, SIGNING_CONTEXT + canonical_json(body))
    document = {
        "provenance": body,
        "signature": {
            "algorithm": _algorithm(signer.key),
            "value": base64.b64encode(signature).decode("ascii"),
            "certificates": [certificate_pem(c).decode("ascii") for c in signer.chain],
        },
    }
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    directory.mkdir(parents=True, exist_ok=True)
    with lock if lock is not None else contextlib.nullcontext():
        write_atomic(directory / MODEL_FILE, model_bytes)
        write_atomic(directory / PROVENANCE_FILE, (text + "\n").encode("utf-8"))
    return ExportedModel(directory, rounds, digest)


# --- verifying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedModel:
    """An export that passed every check of :func:`verify_model`."""

    directory: Path
    sha256: str
    training: str
    """The training's SPIFFE ID, from the CA that the signer chains to."""
    signer: str
    """The aggregator's SPIFFE ID."""
    signed_at: str
    rounds_completed: int
    layout: ParameterLayout
    provenance: dict[str, Any] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: what ``fedwarden model verify --json`` prints."""
        body = self.provenance
        privacy = body.get("privacy") or {}
        return {
            "verified": True,
            "directory": str(self.directory),
            "sha256": self.sha256,
            "training": self.training,
            "training_uid": (body.get("training") or {}).get("uid"),
            "signer": self.signer,
            "signed_at": self.signed_at,
            "rounds_completed": self.rounds_completed,
            "status": body.get("status"),
            "epsilon": privacy.get("epsilon"),
            "delta": privacy.get("delta"),
            "num_parameters": self.layout.size,
            "layout": layout_to_json(self.layout),
        }


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelVerificationError("missing-file", f"{path}: no {what} (no such file)") from None
    except OSError as exc:
        raise ModelVerificationError(
            "missing-file", f"{path}: the {what} cannot be read ({exc.strerror or exc})"
        ) from None


def _malformed(path: Path, why: str) -> ModelVerificationError:
    return ModelVerificationError("malformed-provenance", f"{path}: {why}")


def _parse_document(path: Path, raw: bytes) -> tuple[dict[str, Any], bytes, list[x509.Certificate]]:
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _malformed(path, f"not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _malformed(path, "not a JSON object")
    body, signature = document.get("provenance"), document.get("signature")
    if not isinstance(body, dict) or not isinstance(signature, dict):
        raise _malformed(path, "needs a 'provenance' object and a 'signature' object")
    if body.get("format") != FORMAT:
        raise _malformed(path, f"format {body.get('format')!r}; this version reads {FORMAT}")
    try:
        value = base64.b64decode(str(signature.get("value", "")), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(path, "the signature value is not base64") from None
    pems = signature.get("certificates")
    if not isinstance(pems, list) or not pems or not all(isinstance(p, str) for p in pems):
        raise _malformed(path, "the signature carries no certificate chain")
    try:
        chain = load_certificates("".join(pems).encode("ascii"), "the signer's chain")
    except (PKIError, UnicodeEncodeError) as exc:
        raise _malformed(path, f"the signer's certificate chain cannot be read ({exc})") from None
    return body, value, chain


def _signed_at(path: Path, body: Mapping[str, Any]) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(str(body.get("created", "")).replace("Z", "+00:00"))
    except ValueError:
        raise _malformed(path, f"'created' is not a time: {body.get('created')!r}") from None
    if when.tzinfo is None:
        raise _malformed(path, "'created' has no time zone")
    return when


def _check_signer(
    leaf: x509.Certificate, bundle: TrustBundle, when: dt.datetime
) -> tuple[TrainingRef, str]:
    """The training whose CA issued ``leaf`` and the aggregator identity ``leaf`` names."""
    uris = uri_sans(leaf)
    who = ", ".join(uris) or leaf.subject.rfc4514_string()
    if len(uris) != 1 or not uris[0].endswith("/aggregator"):
        raise ModelVerificationError(
            "not-the-aggregator",
            f"the provenance is signed by {who}, not by a training's aggregator "
            "(spiffe://<trust-domain>/ns/<namespace>/training/<name>/aggregator)",
        )
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    if not names:
        raise ModelVerificationError(
            "not-the-aggregator", f"the signer {who} has no DNS name or IP address of a server"
        )
    try:
        anchor = verify_certificate(leaf, bundle, purpose="server", server_name=names[0], now=when)
    except CertificateProblem as exc:
        raise ModelVerificationError(
            "untrusted-signer",
            f"the signer's certificate ({who}) does not verify against the CA at the signing "
            f"time {when:%Y-%m-%d %H:%M:%S} UTC: {exc.message} ({exc.reason})",
        ) from None
    training: TrainingRef | None = None
    for uri in uri_sans(anchor):
        try:
            training = TrainingRef.from_uri(uri)
        except InvalidInputError:
            continue
    if training is None or uris[0] != training.aggregator_uri:
        raise ModelVerificationError(
            "not-the-aggregator",
            f"the signer {uris[0]} is not the aggregator of the CA's training "
            f"({training.aggregator_uri if training else 'the CA names no training'})",
        )
    return training, uris[0]


def verify_model(
    directory: Path | str, ca_bundle: TrustBundle | bytes | Sequence[x509.Certificate]
) -> VerifiedModel:
    """Check an export against the training's CA; raise :class:`ModelVerificationError` naming
    the first check that fails: the provenance's form, the signer's chain to the CA, that the
    signer is the aggregator, the signature, the model file's SHA-256, its layout."""
    directory = Path(directory)
    bundle = TrustBundle.of(ca_bundle)
    provenance_path, model_path = directory / PROVENANCE_FILE, directory / MODEL_FILE
    body, signature, chain = _parse_document(provenance_path, _read(provenance_path, "provenance"))
    when = _signed_at(provenance_path, body)
    training, signer = _check_signer(chain[0], bundle, when)
    try:
        verify_payload(chain[0], SIGNING_CONTEXT + canonical_json(body), signature)
    except SignatureError as exc:
        raise ModelVerificationError(
            "bad-signature",
            f"{provenance_path}: the signature does not verify with the aggregator's key: the "
            f"provenance was altered after it was signed ({exc.message})",
        ) from None
    except ValueError as exc:  # NaN or Inf cannot be canonical JSON, so it was never signed
        raise _malformed(provenance_path, f"cannot be canonicalised ({exc})") from None
    model = body.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("sha256"), str):
        raise _malformed(provenance_path, "names no model sha256")
    data = _read(model_path, "model")
    digest = sha256_hex(data)
    if digest != model["sha256"]:
        raise ModelVerificationError(
            "hash-mismatch",
            f"{model_path}: its SHA-256 is {digest}, the signed provenance says "
            f"{model['sha256']}: the model file was altered or replaced",
        )
    try:
        layout = layout_from_json(model.get("layout"))
    except (ValueError, TypeError, KeyError) as exc:
        raise _malformed(provenance_path, f"the model's layout cannot be read ({exc})") from None
    try:
        tensors = check_tensors(parse_safetensors(data, str(model_path)), str(model_path))
    except ModelFileError as exc:
        raise ModelVerificationError("bad-model-file", str(exc)) from None
    try:
        check_layout(tensors, layout)
    except ModelFileError as exc:
        raise ModelVerificationError("layout-mismatch", f"{model_path}: {exc}") from None
    return VerifiedModel(
        directory=directory,
        sha256=digest,
        training=training.uri,
        signer=signer,
        signed_at=str(body["created"]),
        rounds_completed=int(body.get("rounds_completed", 0)),
        layout=layout,
        provenance=body,
    )
