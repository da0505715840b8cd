"""`fedwarden model verify` through click's CliRunner: exit 0 with what was verified, exit 1
with the reason (a flipped byte in the model, a changed byte in the provenance, a client's or a
foreign CA's signature)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from fedwarden.commands.model import model
from fedwarden.model import MODEL_FILE, PROVENANCE_FILE, Signer, export_model
from fedwarden.pipeline import ParameterLayout
from fedwarden.pki import CertificateAuthority, IssuedCertificate, TrainingRef

LAYOUT = ParameterLayout(("w", "b"), ((4, 2), (2,)))
TRAINING = TrainingRef("team-a", "digits")


def signer_of(issued: IssuedCertificate) -> Signer:
    assert issued.key is not None
    return Signer(issued.key, (issued.certificate,))


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TRAINING)


def export(tmp_path: Path, signer: Signer, ca: CertificateAuthority) -> tuple[Path, Path]:
    out = tmp_path / "model"
    facts = {
        "rounds_completed": 5,
        "status": "completed",
        "privacy": {"epsilon": 0.9, "delta": 1e-5},
    }
    export_model(out, np.ones(LAYOUT.size, np.float32), LAYOUT, facts, signer)
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    return out, ca_file


def verify(out: Path, ca_file: Path, *extra: str, code: int) -> Result:
    result = CliRunner().invoke(model, ["verify", str(out), "--ca", str(ca_file), *extra])
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def test_a_good_export_verifies(tmp_path: Path, ca: CertificateAuthority) -> None:
    out, ca_file = export(tmp_path, signer_of(ca.issue_server(["agg.team-a.svc"])), ca)
    result = verify(out, ca_file, code=0)
    assert result.output.startswith("verified ")
    assert "round 5" in result.output
    assert TRAINING.aggregator_uri in result.output
    summary = json.loads(verify(out, ca_file, "--json", code=0).output)
    assert summary["verified"] is True
    assert summary["layout"] == [{"name": "w", "shape": [4, 2]}, {"name": "b", "shape": [2]}]


def test_a_flipped_byte_in_the_model_names_the_hash(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    out, ca_file = export(tmp_path, signer_of(ca.issue_server(["agg.team-a.svc"])), ca)
    data = bytearray((out / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x80
    (out / MODEL_FILE).write_bytes(bytes(data))
    result = verify(out, ca_file, code=1)
    assert "not verified" in result.output
    assert "SHA-256" in result.output
    assert "(hash-mismatch)" in result.output
    failure = json.loads(verify(out, ca_file, "--json", code=1).output)
    assert failure == {"verified": False, "reason": "hash-mismatch", "message": failure["message"]}


def test_a_changed_byte_in_the_provenance_names_the_signature(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    out, ca_file = export(tmp_path, signer_of(ca.issue_server(["agg.team-a.svc"])), ca)
    text = (out / PROVENANCE_FILE).read_bytes()
    position = text.index(b'"epsilon": 0.9') + len(b'"epsilon": 0.')
    changed = text[:position] + b"1" + text[position + 1 :]
    (out / PROVENANCE_FILE).write_bytes(changed)
    result = verify(out, ca_file, code=1)
    assert "signature does not verify" in result.output
    assert "(bad-signature)" in result.output


def test_a_client_signature_is_refused(tmp_path: Path, ca: CertificateAuthority) -> None:
    out, ca_file = export(tmp_path, signer_of(ca.issue_client("alice")), ca)
    result = verify(out, ca_file, code=1)
    assert "(not-the-aggregator)" in result.output
    assert "client/alice" in result.output


def test_a_foreign_ca_is_refused(tmp_path: Path, ca: CertificateAuthority) -> None:
    foreign = CertificateAuthority.create(TRAINING)
    out, ca_file = export(tmp_path, signer_of(foreign.issue_server(["agg.team-a.svc"])), ca)
    result = verify(out, ca_file, code=1)
    assert "does not verify against the CA" in result.output
    assert "(untrusted-signer)" in result.output
