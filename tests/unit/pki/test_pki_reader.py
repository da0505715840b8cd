"""The reader identity: a client certificate of the training that may fetch the exported model
and cannot act as a client; a client certificate is no reader."""

from __future__ import annotations

import pytest

from fedwarden.pki import (
    CertificateAuthority,
    CertificateProblem,
    TrainingRef,
    identity_from_certificate,
    reader_from_certificate,
    verify_certificate,
)

TRAINING = TrainingRef("team-a", "digits")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TRAINING)


def test_a_reader_certificate_names_its_reader_and_verifies_as_a_client(
    ca: CertificateAuthority,
) -> None:
    reader = ca.issue_reader("model-fetch").certificate
    verify_certificate(reader, [ca.certificate], purpose="client")
    assert reader_from_certificate(reader, TRAINING) == "model-fetch"
    assert TRAINING.reader_uri("model-fetch").endswith("/training/digits/reader/model-fetch")


def test_a_reader_is_no_client_and_a_client_is_no_reader(ca: CertificateAuthority) -> None:
    reader = ca.issue_reader("model-fetch").certificate
    with pytest.raises(CertificateProblem) as as_client:
        identity_from_certificate(reader, TRAINING)
    assert as_client.value.reason == "malformed-identity"
    client = ca.issue_client("alice").certificate
    with pytest.raises(CertificateProblem) as as_reader:
        reader_from_certificate(client, TRAINING)
    assert as_reader.value.reason == "not-a-reader"


def test_a_reader_of_another_training_is_refused(ca: CertificateAuthority) -> None:
    reader = ca.issue_reader("model-fetch").certificate
    with pytest.raises(CertificateProblem, match="not a reader of training team-a/other"):
        reader_from_certificate(reader, TrainingRef("team-a", "other"))
