"""The signed envelope: signature verified before parsing, with the certificate's key."""

from __future__ import annotations

import dataclasses

import pytest

from fedwarden.pki import CertificateAuthority, TrainingRef, generate_key
from fedwarden.wire import Envelope, WireError, new_nonce, open_envelope, pb, sign_envelope


@pytest.fixture(scope="module")
def issued():
    ca = CertificateAuthority.create(TrainingRef("team-a", "digits"))
    return ca.issue_client("site-1")


def envelope(**changes: object) -> Envelope:
    base = Envelope(
        training_uid="uid",
        round=3,
        round_token=b"t" * 16,
        client_id="site-1",
        base_digest=b"b" * 32,
        payload_digest=b"p" * 32,
        num_values=650,
        num_examples=40,
        nonce=new_nonce(),
    )
    return dataclasses.replace(base, **changes)


def test_sign_and_open(issued) -> None:
    env = envelope()
    signed = sign_envelope(issued.key, env)
    assert open_envelope(issued.certificate, signed.envelope, signed.signature) == env
    header = signed.header()
    assert header.WhichOneof("body") == "header"
    assert pb.UpdateMessage.FromString(header.SerializeToString()) == header


def test_altered_envelope_or_other_key_is_a_bad_signature(issued) -> None:
    signed = sign_envelope(issued.key, envelope())
    altered = bytearray(signed.envelope)
    altered[-1] ^= 1
    for data, signature in (
        (bytes(altered), signed.signature),
        (signed.envelope, sign_envelope(generate_key(), envelope()).signature),
        (signed.envelope, b""),
    ):
        with pytest.raises(WireError) as info:
            open_envelope(issued.certificate, data, signature)
        assert info.value.reason == "bad-signature"


def test_signature_over_garbage_is_malformed(issued) -> None:
    from fedwarden.pki import sign_payload
    from fedwarden.wire import SIGNING_CONTEXT

    junk = b"\xff\xff\xff"
    with pytest.raises(WireError) as info:
        open_envelope(issued.certificate, junk, sign_payload(issued.key, SIGNING_CONTEXT + junk))
    assert info.value.reason == "malformed-envelope"


def test_short_nonce_or_digest_is_malformed(issued) -> None:
    for env in (envelope(nonce=b"x"), envelope(base_digest=b"short"), envelope(client_id="")):
        signed = sign_envelope(issued.key, env)
        with pytest.raises(WireError) as info:
            open_envelope(issued.certificate, signed.envelope, signed.signature)
        assert info.value.reason == "malformed-envelope"


def test_domain_separation(issued) -> None:
    """A signature over the bare envelope bytes (no context prefix) does not verify."""
    from fedwarden.pki import sign_payload

    data = envelope().to_bytes()
    with pytest.raises(WireError) as info:
        open_envelope(issued.certificate, data, sign_payload(issued.key, data))
    assert info.value.reason == "bad-signature"


def test_evaluation_metrics_are_signed_and_bounded(issued) -> None:
    env = envelope(eval_metrics={"accuracy": 0.9, "loss": 0.3}, eval_examples=25)
    signed = sign_envelope(issued.key, env)
    opened = open_envelope(issued.certificate, signed.envelope, signed.signature)
    assert (dict(opened.eval_metrics), opened.eval_examples) == ({"accuracy": 0.9, "loss": 0.3}, 25)
    too_many = {f"m{i}": 0.0 for i in range(17)}
    for metrics, message in (
        (too_many, "17 evaluation metrics"),
        ({"accuracy": float("nan")}, "non-finite value: accuracy"),
        ({"bad name!": 1.0}, "bad name"),
    ):
        signed = sign_envelope(issued.key, envelope(eval_metrics=metrics))
        with pytest.raises(WireError, match=message) as info:
            open_envelope(issued.certificate, signed.envelope, signed.signature)
        assert info.value.reason == "malformed-envelope"


def test_the_site_epsilon_is_signed_and_absent_unless_reported(issued) -> None:
    plain = sign_envelope(issued.key, envelope())
    assert open_envelope(issued.certificate, plain.envelope, plain.signature).site_epsilon is None
    private = envelope(site_epsilon=0.0, site_budget_spent=True)
    signed = sign_envelope(issued.key, private)
    opened = open_envelope(issued.certificate, signed.envelope, signed.signature)
    assert opened.site_epsilon == 0.0  # reported as zero, which is not "absent"
    assert opened.site_budget_spent
    raised = envelope(site_epsilon=0.1).to_bytes()
    with pytest.raises(WireError) as caught:  # a lowered or raised ε breaks the signature
        open_envelope(issued.certificate, raised, signed.signature)
    assert caught.value.reason == "bad-signature"
    bad = sign_envelope(issued.key, envelope(site_epsilon=float("inf")))
    with pytest.raises(WireError, match="site epsilon"):
        open_envelope(issued.certificate, bad.envelope, bad.signature)
