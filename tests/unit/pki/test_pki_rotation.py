import datetime as dt

import pytest

from fedwarden.pki import (
    CertificateAuthority,
    CertificateProblem,
    InvalidInputError,
    KeyPairWatcher,
    RenewalPolicy,
    TLSDirectory,
    TrainingPKI,
    TrustBundle,
    load_certificates,
    needs_renewal,
    parse_duration,
    renewal_time,
    rotation_bundle,
    verify_certificate,
    write_certificates,
    write_private_key,
)
from fedwarden.pki.rotation import format_duration


def test_renewal_comes_at_two_thirds_of_the_lifetime_by_default(ca, now):
    cert = ca.issue_client("site-1", now=now, duration=dt.timedelta(days=90)).certificate
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    expected = cert.not_valid_before_utc + lifetime * 2 / 3
    assert abs(renewal_time(cert) - expected) < dt.timedelta(seconds=1)
    assert renewal_time(cert).microsecond == 0
    assert not needs_renewal(cert, expected - dt.timedelta(seconds=2))
    assert needs_renewal(cert, expected + dt.timedelta(seconds=1))


def test_renew_before_is_used_when_shorter_than_the_lifetime(ca, now):
    cert = ca.issue_client("site-1", now=now, duration=dt.timedelta(days=90)).certificate
    policy = RenewalPolicy(dt.timedelta(days=90), renew_before=dt.timedelta(days=10))
    assert policy.renewal_time(cert) == cert.not_valid_after_utc - dt.timedelta(days=10)
    # a renew-before as long as the certificate falls back to 1/3, as cert-manager does
    assert renewal_time(cert, dt.timedelta(days=400)) == renewal_time(cert)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2160h", dt.timedelta(days=90)),
        ("1h30m", dt.timedelta(minutes=90)),
        ("45m", dt.timedelta(minutes=45)),
        ("1.5h", dt.timedelta(minutes=90)),
        ("90s", dt.timedelta(seconds=90)),
        ("0", dt.timedelta(0)),
    ],
)
def test_durations_are_parsed_as_go_and_kubernetes_write_them(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90d", "h", "1h 30m", "-1h", "1x"])
def test_bad_durations_are_refused_with_an_example(text):
    with pytest.raises(ValueError, match=r"e\.g\. '2160h'"):
        parse_duration(text)


def test_renewal_policy_validation():
    assert format_duration(dt.timedelta(days=90)) == "2160h0m0s"
    assert RenewalPolicy.parse("2160h", "720h").renew_before == dt.timedelta(days=30)
    with pytest.raises(ValueError, match="must be shorter than the duration"):
        RenewalPolicy.parse("24h", "24h")
    with pytest.raises(ValueError, match="shorter than the minimum"):
        RenewalPolicy.parse("30m")


def test_a_rotation_bundle_verifies_certificates_of_both_cas(training, now):
    old = CertificateAuthority.create(training, now=now - dt.timedelta(days=100))
    new = CertificateAuthority.create(training, now=now)
    from_old = old.issue_client("site-1", now=now - dt.timedelta(days=1)).certificate
    from_new = new.issue_client("site-1", now=now).certificate
    bundle = TrustBundle.from_pem(rotation_bundle(new.certificate, old.certificate))
    assert [c.subject for c in bundle] == [new.certificate.subject, old.certificate.subject]
    assert len(load_certificates(bundle.to_pem())) == 2
    assert verify_certificate(from_old, bundle, now=now) == old.certificate
    assert verify_certificate(from_new, bundle, now=now) == new.certificate
    # once the old CA leaves the bundle, its certificates no longer verify
    only_new = bundle.without(old.certificate)
    with pytest.raises(CertificateProblem) as info:
        verify_certificate(from_old, only_new, now=now)
    assert info.value.reason == "unknown-issuer"
    assert verify_certificate(from_new, only_new, now=now) == new.certificate


def test_server_certificates_verify_for_their_names_only(ca, now):
    server = ca.issue_server(["aggregator.team-a.svc"], ["127.0.0.1"], now=now).certificate
    for name in ("aggregator.team-a.svc", "127.0.0.1"):
        verify_certificate(server, [ca.certificate], purpose="server", server_name=name, now=now)
    with pytest.raises(CertificateProblem) as info:
        verify_certificate(
            server, [ca.certificate], purpose="server", server_name="evil.example", now=now
        )
    assert info.value.reason == "name-mismatch"


def test_training_pki_rotation_in_two_steps(tmp_path, training):
    store = TrainingPKI.init(tmp_path / "ca", training)
    old = store.ca
    old_client = store.issue_client("site-1").certificate
    new = store.start_rotation()
    assert new.certificate != old.certificate
    assert new.training == training
    bundle = store.bundle()
    assert list(bundle) == [new.certificate, old.certificate]
    new_client = store.issue_client("site-1").certificate
    assert new_client.issuer == new.certificate.subject
    for cert in (old_client, new_client):
        verify_certificate(cert, bundle)
    # a certificate of the old CA can still be revoked during the overlap
    entry = store.revoke(old_client, "superseded")
    assert store.revocations().is_revoked(old_client) == entry
    with pytest.raises(ValueError, match="already under way"):
        store.start_rotation()
    store.finish_rotation()
    assert list(store.bundle()) == [new.certificate]
    assert not store.dir.previous.exists()
    assert [crl.issuer for crl in store.revocations().crls] == [new.certificate.subject]
    with pytest.raises(CertificateProblem):
        verify_certificate(old_client, store.bundle())


def test_the_server_key_pair_is_reloaded_only_when_a_matching_pair_is_in_place(tmp_path, ca):
    first = ca.issue_server(["localhost"])
    tls = TLSDirectory(tmp_path / "server")
    tls.write(first.certificate, first.key, ca.cert_pem)
    watcher = KeyPairWatcher(tls.cert, tls.key)
    assert watcher.cert_pem == first.cert_pem
    assert watcher.changed() is None

    second = ca.issue_server(["localhost"])
    write_certificates(tls.cert, second.certificate)  # half-way: the key is still the old one
    with pytest.raises(InvalidInputError, match="is not the key of") as info:
        watcher.changed()
    assert info.value.reason == "key-mismatch"
    assert watcher.cert_pem == first.cert_pem  # the old pair stays in use
    write_private_key(tls.key, second.key)
    assert watcher.changed() == (second.cert_pem, second.key_pem)
    assert watcher.changed() is None
