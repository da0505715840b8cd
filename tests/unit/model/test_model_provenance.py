"""The export (model.safetensors + signed provenance.json) and its verification."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedwarden.model import (
    MODEL_FILE,
    PROVENANCE_FILE,
    ModelVerificationError,
    Signer,
    export_model,
    read_tensors,
    verify_model,
)
from fedwarden.pipeline import ParameterLayout
from fedwarden.pki import CertificateAuthority, IssuedCertificate, TrainingRef

LAYOUT = ParameterLayout(("dense.weight", "dense.bias"), ((3, 4), (3,)))
TRAINING = TrainingRef("team-a", "digits")


@dataclass
class Training:
    ca: CertificateAuthority
    aggregator: Signer
    client: Signer


def signer_of(issued: IssuedCertificate) -> Signer:
    assert issued.key is not None
    return Signer(issued.key, (issued.certificate,))


@pytest.fixture(scope="module")
def training() -> Training:
    ca = CertificateAuthority.create(TRAINING)
    server = ca.issue_server(["digits-aggregator.team-a.svc"])
    return Training(ca, signer_of(server), signer_of(ca.issue_client("alice")))


def facts(rounds: int = 3) -> dict[str, Any]:
    return {
        "training": {"uid": "uid-1", "identity": TRAINING.uri},
        "rounds_completed": rounds,
        "privacy": {"mode": "central", "epsilon": 0.8, "delta": 1e-5},
        "bans": {"mallory": "3 strikes, the last in round 2: outlier"},
    }


def export(directory: Path, signer: Signer, rounds: int = 3) -> Path:
    vector = np.arange(LAYOUT.size, dtype=np.float32) / 10
    export_model(directory, vector, LAYOUT, facts(rounds), signer)
    return directory


def failure(directory: Path, ca: CertificateAuthority) -> ModelVerificationError:
    with pytest.raises(ModelVerificationError) as info:
        verify_model(directory, [ca.certificate])
    assert "\n" not in str(info.value)
    return info.value


def test_a_good_export_verifies_and_loads_as_named_tensors(
    tmp_path: Path, training: Training
) -> None:
    out = export(tmp_path / "out", training.aggregator)
    verified = verify_model(out, [training.ca.certificate])
    assert verified.signer == TRAINING.aggregator_uri
    assert verified.training == TRAINING.uri
    assert verified.rounds_completed == 3
    assert verified.layout == LAYOUT
    summary = verified.summary()
    assert summary["epsilon"] == 0.8
    assert summary["sha256"] == verified.sha256
    tensors = read_tensors(out / MODEL_FILE)
    assert tensors["dense.weight"].shape == (3, 4)
    body = json.loads((out / PROVENANCE_FILE).read_text())["provenance"]
    assert body["bans"] == facts()["bans"]
    assert body["model"]["layout"] == [
        {"name": "dense.weight", "shape": [3, 4]},
        {"name": "dense.bias", "shape": [3]},
    ]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_flipped_byte_in_the_model_fails_on_its_hash(tmp_path: Path, training: Training) -> None:
    out = export(tmp_path / "out", training.aggregator)
    data = bytearray((out / MODEL_FILE).read_bytes())
    data[-1] ^= 0x01
    (out / MODEL_FILE).write_bytes(bytes(data))
    error = failure(out, training.ca)
    assert error.reason == "hash-mismatch"
    assert "SHA-256" in error.message


def test_a_changed_byte_in_the_provenance_fails_on_its_signature(
    tmp_path: Path, training: Training
) -> None:
    out = export(tmp_path / "out", training.aggregator)
    text = (out / PROVENANCE_FILE).read_text()
    assert '"rounds_completed": 3' in text
    (out / PROVENANCE_FILE).write_text(
        text.replace('"rounds_completed": 3', '"rounds_completed": 4')
    )
    error = failure(out, training.ca)
    assert error.reason == "bad-signature"
    assert "signature does not verify" in error.message


def test_a_provenance_signed_by_a_client_fails(tmp_path: Path, training: Training) -> None:
    out = export(tmp_path / "out", training.client)
    error = failure(out, training.ca)
    assert error.reason == "not-the-aggregator"
    assert "/client/alice" in error.message


def test_a_provenance_signed_under_a_foreign_ca_fails(tmp_path: Path, training: Training) -> None:
    foreign = CertificateAuthority.create(TRAINING)  # same names, another key
    out = export(tmp_path / "out", signer_of(foreign.issue_server(["x.team-a.svc"])))
    error = failure(out, training.ca)
    assert error.reason == "untrusted-signer"


def test_the_aggregator_of_another_training_is_not_this_trainings(
    tmp_path: Path, training: Training
) -> None:
    other = CertificateAuthority.create(TrainingRef("team-a", "other"))
    out = export(tmp_path / "out", signer_of(other.issue_server(["x.team-a.svc"])))
    error = failure(out, training.ca)
    assert error.reason == "untrusted-signer"
    assert verify_model(out, [other.certificate]).training == TrainingRef("team-a", "other").uri


def test_missing_and_malformed_files_are_named(tmp_path: Path, training: Training) -> None:
    out = export(tmp_path / "out", training.aggregator)
    (out / MODEL_FILE).unlink()
    assert failure(out, training.ca).reason == "missing-file"
    (out / PROVENANCE_FILE).write_text("{not json")
    error = failure(out, training.ca)
    assert error.reason == "malformed-provenance"
    assert "not valid JSON" in error.message


def test_a_model_of_another_layout_fails_on_the_layout(
    tmp_path: Path, training: Training, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a signed hash over tensors that differ from the recorded layout: only a buggy exporter
    # makes one, and verify must still say so
    from fedwarden.model import provenance, safetensors_bytes

    other = ParameterLayout(("w",), ((LAYOUT.size,),))
    monkeypatch.setattr(
        provenance, "safetensors_bytes", lambda v, _layout, meta: safetensors_bytes(v, other, meta)
    )
    out = export(tmp_path / "out", training.aggregator)
    error = failure(out, training.ca)
    assert error.reason == "layout-mismatch"
    assert "missing dense.weight, dense.bias; unexpected w" in error.message


def test_an_export_replaces_the_previous_one(tmp_path: Path, training: Training) -> None:
    out = export(tmp_path / "out", training.aggregator, rounds=1)
    export(out, training.aggregator, rounds=2)
    assert verify_model(out, [training.ca.certificate]).rounds_completed == 2
