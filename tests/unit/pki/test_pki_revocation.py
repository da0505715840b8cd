import datetime as dt
import os

import pytest
from cryptography import x509

from fedwarden.pki import (
    CertificateAuthority,
    CertificateProblem,
    PeerVerifier,
    RevocationList,
    SignatureError,
    TrainingPKI,
    create_csr,
    load_certificate,
    load_private_key,
    sign_csr,
    sign_payload,
    verify_payload,
)
from fedwarden.pki.keys import generate_key


def test_the_crl_is_signed_by_the_ca_and_names_serial_date_and_reason(ca, now):
    site = ca.issue_client("site-1", now=now).certificate
    other = ca.issue_client("site-2", now=now).certificate
    rl = RevocationList.empty(ca, now=now)
    assert rl.is_revoked(site) is None
    entry = rl.revoke(site, "key-compromise", ca=ca, now=now)
    assert (entry.serial, entry.revoked_at, entry.reason) == (
        site.serial_number,
        now,
        "key-compromise",
    )
    assert rl.is_revoked(site) == entry
    assert rl.is_revoked(other) is None

    crl = x509.load_pem_x509_crl(rl.to_pem())
    assert crl.issuer == ca.certificate.subject
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.next_update_utc == now + dt.timedelta(days=7)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    revoked = crl.get_revoked_certificate_by_serial_number(site.serial_number)
    assert revoked is not None
    reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise


def test_revoking_twice_keeps_the_first_and_unspecified_is_left_out(ca, now):
    site = ca.issue_client("site-1", now=now).certificate
    rl = RevocationList.empty(ca, now=now)
    first = rl.revoke(site.serial_number, ca=ca, now=now)
    again = rl.revoke(site, "key-compromise", ca=ca, now=now + dt.timedelta(hours=1))
    assert again == first
    assert first.reason == "unspecified"
    revoked = x509.load_pem_x509_crl(rl.to_pem())[0]
    with pytest.raises(x509.ExtensionNotFound):
        revoked.extensions.get_extension_for_class(x509.CRLReason)  # RFC 5280: omit it


def test_a_crl_of_another_ca_is_not_trusted(ca, other_ca):
    foreign = RevocationList.empty(other_ca)
    with pytest.raises(CertificateProblem) as info:
        RevocationList.from_pem(foreign.to_pem(), trusted=[ca.certificate])
    assert info.value.reason == "crl-untrusted"


def test_a_certificate_of_another_ca_cannot_be_revoked_by_this_one(ca, other_ca):
    rl = RevocationList.empty(ca)
    with pytest.raises(ValueError, match="revoke it with its own CA"):
        rl.revoke(other_ca.issue_client("x").certificate, ca=ca)


def test_reload_picks_up_a_change_and_costs_nothing_otherwise(tmp_path, ca, now):
    path = tmp_path / "crl.pem"
    RevocationList.empty(ca, now=now).save(path)
    reader = RevocationList.load(path, trusted=[ca.certificate])
    site = ca.issue_client("site-1", now=now).certificate
    assert not reader.reload_if_changed(path)

    writer = RevocationList.load(path, trusted=[ca.certificate])
    writer.revoke(site, "privilege-withdrawn", ca=ca, now=now)
    writer.save(path)
    assert reader.is_revoked(site) is None
    assert reader.reload_if_changed(path)
    assert reader.is_revoked(site).reason == "privilege-withdrawn"
    assert not reader.reload_if_changed(path)

    # touched but identical content: not a change
    os.utime(path, ns=(1, 1))
    assert not reader.reload_if_changed(path)


def test_reload_keeps_the_list_in_force_when_the_new_file_is_bad(tmp_path, ca, other_ca, now):
    path = tmp_path / "crl.pem"
    rl = RevocationList.empty(ca, now=now)
    site = ca.issue_client("site-1", now=now).certificate
    rl.revoke(site, ca=ca, now=now)
    rl.save(path)
    reader = RevocationList.load(path, trusted=[ca.certificate])

    path.write_bytes(RevocationList.empty(other_ca).to_pem())
    with pytest.raises(CertificateProblem) as info:
        reader.reload_if_changed(path)
    assert info.value.reason == "crl-untrusted"
    assert reader.is_revoked(site) is not None

    # an older CRL (lower CRL number) must not un-revoke anything
    RevocationList.empty(ca, now=now).save(path)
    with pytest.raises(CertificateProblem) as info:
        reader.reload_if_changed(path)
    assert info.value.reason == "crl-rollback"
    assert reader.is_revoked(site) is not None


def test_peer_verifier_refuses_a_revoked_client_after_reloading_the_crl(tmp_path, training):
    store = TrainingPKI.init(tmp_path / "ca", training)
    site = store.issue_client("site-1").certificate
    verifier = PeerVerifier(training, store.bundle(), crl_path=store.dir.crl)
    assert verifier.verify(site).client == "site-1"
    store.revoke_client("site-1", "privilege-withdrawn")  # the operator bans site-1
    with pytest.raises(CertificateProblem, match="privilege-withdrawn") as info:
        verifier.verify(site)
    assert info.value.reason == "revoked"


def test_peer_verifier_refuses_foreign_and_misused_certificates(training, ca, other_ca, now):
    earlier = CertificateAuthority.create(training, now=now - dt.timedelta(days=200))
    verifier = PeerVerifier(training, [ca.certificate, earlier.certificate])
    server = ca.issue_server(["aggregator.example"], now=now).certificate
    cases = [
        (other_ca.issue_client("site-1", now=now).certificate, "unknown-issuer"),
        (server, "wrong-extended-key-usage"),
        (earlier.issue_client("old", now=now - dt.timedelta(days=100)).certificate, "expired"),
    ]
    for cert, reason in cases:
        with pytest.raises(CertificateProblem) as info:
            verifier.verify(cert, now=now)
        assert info.value.reason == reason, info.value


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ecdsa-p384", "rsa-3072"])
def test_payload_signatures_verify_with_the_signers_certificate_only(ca, training, algorithm):
    key_pem, csr_pem = create_csr(training.client("site-1"), algorithm=algorithm)
    key = load_private_key(key_pem)
    cert = load_certificate(sign_csr(ca, csr_pem, "site-1"))
    payload = b"round 3 update digest"
    signature = sign_payload(key, payload)
    verify_payload(cert, payload, signature)

    with pytest.raises(SignatureError, match="altered in transit") as info:
        verify_payload(cert, payload + b"!", signature)
    assert info.value.reason == "bad-signature"
    impostor = ca.issue_client("site-2").certificate
    with pytest.raises(SignatureError, match="CN=site-2"):
        verify_payload(impostor, payload, signature)
    with pytest.raises(SignatureError, match="carries no signature"):
        verify_payload(cert, payload, b"")


def test_ecdsa_signatures_are_der_and_garbage_is_refused(ca):
    issued = ca.issue_client("site-1")
    signature = sign_payload(issued.key, b"x")
    assert signature[0] == 0x30  # a DER SEQUENCE (r, s)
    with pytest.raises(SignatureError):
        verify_payload(issued.certificate, b"x", b"\x30\x03garbage")
    assert generate_key().curve.name == "secp256r1"


def _number(path) -> int:
    crl = x509.load_pem_x509_crl(path.read_bytes())
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_a_lost_or_rolled_back_crl_file_loses_no_revocation(tmp_path, training):
    store = TrainingPKI.init(tmp_path / "ca", training)
    site = store.issue_client("site-1").certificate
    other = store.issue_client("site-2").certificate
    old_copy = store.dir.crl.read_bytes()
    store.revoke(site, "privilege-withdrawn")
    before = _number(store.dir.crl)
    # deleted: refreshing (or revoking another) rebuilds it from the CA's state, numbered on
    store.dir.crl.unlink()
    store.refresh_crl()
    assert store.revocations().is_revoked(site).reason == "privilege-withdrawn"
    assert _number(store.dir.crl) > before
    store.dir.crl.unlink()
    store.revoke(other, "key-compromise")
    rebuilt = store.revocations()
    assert rebuilt.is_revoked(site) is not None
    assert rebuilt.is_revoked(other) is not None
    # an older copy put back: the next write goes past the numbers already used
    used = _number(store.dir.crl)
    store.dir.crl.write_bytes(old_copy)
    assert store.revocations().is_revoked(site) is not None
    store.refresh_crl()
    assert _number(store.dir.crl) > used
    verifier = PeerVerifier(training, store.bundle(), crl_path=store.dir.crl)
    with pytest.raises(CertificateProblem) as info:
        verifier.verify(site)
    assert info.value.reason == "revoked"


def test_an_absent_crl_is_watched_until_it_appears(tmp_path, training, caplog):
    store = TrainingPKI.init(tmp_path / "ca", training)
    site = store.issue_client("site-1").certificate
    store.dir.crl.unlink()
    with caplog.at_level("WARNING", logger="fedwarden.pki"):
        verifier = PeerVerifier(training, store.bundle(), crl_path=store.dir.crl)
        assert verifier.verify(site).client == "site-1"
        assert verifier.verify(site).client == "site-1"
    assert [r.getMessage() for r in caplog.records] == [
        f"the CRL {store.dir.crl} does not exist: no certificate is revoked until it appears "
        "(it is watched)"
    ]
    store.revoke(site, "privilege-withdrawn")
    with pytest.raises(CertificateProblem) as info:
        verifier.verify(site)
    assert info.value.reason == "revoked"


def test_a_stale_crl_stays_in_force_and_is_told_once(tmp_path, training, now, caplog):
    store = TrainingPKI.init(tmp_path / "ca", training)
    revoked = store.issue_client("site-1").certificate
    valid = store.issue_client("site-2").certificate
    long_ago = now - dt.timedelta(days=30)
    store.revoke(revoked, "privilege-withdrawn", now=long_ago)  # nextUpdate 23 days ago
    assert store.revocations().stale(now)
    with caplog.at_level("WARNING", logger="fedwarden.pki"):
        verifier = PeerVerifier(training, store.bundle(), crl_path=store.dir.crl)
        for _ in range(3):
            with pytest.raises(CertificateProblem) as info:
                verifier.verify(revoked)
            assert info.value.reason == "revoked"
            assert verifier.verify(valid).client == "site-2"
    stale = [r.getMessage() for r in caplog.records if "nextUpdate" in r.getMessage()]
    assert len(stale) == 1
    assert "stay in force" in stale[0]
