"""The trained model as a file: named tensors in and out, the signed provenance of an export, and
its verification. It uses :mod:`fedwarden.pipeline` (the parameter layout) and
:mod:`fedwarden.pki` (signatures, certificate chains) and nothing else of fedwarden.

See docs/apps.md, "The trained model and its provenance".
"""

from fedwarden.model.provenance import (
    FORMAT,
    MODEL_FILE,
    PROVENANCE_FILE,
    SIGNING_CONTEXT,
    ExportedModel,
    ModelVerificationError,
    Signer,
    VerifiedModel,
    canonical_json,
    export_model,
    sha256_hex,
    verify_model,
)
from fedwarden.model.tensors import (
    SUFFIXES,
    ModelFileError,
    NamedTensors,
    check_layout,
    check_tensors,
    layout_vector,
    parse_safetensors,
    read_tensors,
    safetensors_bytes,
)

__all__ = [
    "FORMAT",
    "MODEL_FILE",
    "PROVENANCE_FILE",
    "SIGNING_CONTEXT",
    "SUFFIXES",
    "ExportedModel",
    "ModelFileError",
    "ModelVerificationError",
    "NamedTensors",
    "Signer",
    "VerifiedModel",
    "canonical_json",
    "check_layout",
    "check_tensors",
    "export_model",
    "layout_vector",
    "parse_safetensors",
    "read_tensors",
    "safetensors_bytes",
    "sha256_hex",
    "verify_model",
]
