"""One test per diagnosis code, on certificates made by openssl as well as by fedwarden."""

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pki_openssl import CLIENT_EXTENSIONS, SERVER_EXTENSIONS

from fedwarden.pki import (
    HINTS,
    CertificateAuthority,
    Problem,
    RevocationList,
    diagnose,
    explain_verify_code,
)

URI = "spiffe://fedwarden.local/ns/team-a/training/mnist/client/site-1"


def codes(problems: list[Problem]) -> list[str]:
    return [p.code for p in problems]


def only(problems: list[Problem], code: str) -> Problem:
    assert codes(problems) == [code], problems
    return problems[0]


@pytest.fixture
def foreign(openssl):
    """A CA made by openssl, and a server certificate it issued."""
    ca = openssl.ca("foreign-ca", "/O=Elsewhere/CN=Foreign CA")
    server = openssl.leaf("foreign-server", "/CN=localhost", ca, SERVER_EXTENSIONS)
    return ca, server


def _read(path: Path) -> bytes:
    return path.read_bytes()


def test_healthy_certificates_have_no_problems(ca, foreign, now):
    issued = ca.issue_client("site-1")
    assert diagnose(issued.cert_pem, issued.key_pem, ca.cert_pem, expected_name="site-1") == []
    assert diagnose(issued.cert_pem, expected_name=URI) == []
    (ca_crt, _), (crt, key) = foreign
    problems = diagnose(
        _read(crt), _read(key), _read(ca_crt), expected_name="localhost", purpose="server"
    )
    assert problems == []
    assert diagnose(_read(crt), expected_name="127.0.0.1", purpose="server") == []


def test_expired_names_the_dates(foreign, ca, now):
    (_, _), (crt, _) = foreign
    later = now + dt.timedelta(days=45)
    p = only(diagnose(_read(crt), purpose="server", now=later), "expired")
    assert "expired on" in p.message
    assert "days ago" in p.message
    assert "valid " in p.message
    assert p.hint == HINTS["expired"]
    past = CertificateAuthority.create(ca.training, now=now - dt.timedelta(days=200))
    old = past.issue_client(
        "site-1", now=now - dt.timedelta(days=100), duration=dt.timedelta(days=30)
    )
    expiry = old.certificate.not_valid_after_utc
    p = only(diagnose(old.cert_pem, now=now), "expired")
    assert f"{expiry:%Y-%m-%d %H:%M:%S} UTC" in p.message


def test_not_yet_valid_names_the_start_and_this_clock(foreign, now):
    (_, _), (crt, _) = foreign
    earlier = now - dt.timedelta(days=3)
    p = only(diagnose(_read(crt), purpose="server", now=earlier), "not-yet-valid")
    assert "is valid only from" in p.message
    assert "this machine's clock reads" in p.message


def test_unknown_issuer_names_the_issuer_and_the_bundle(ca, foreign):
    (ca_crt, _), (crt, _) = foreign
    p = only(diagnose(_read(crt), ca_bundle_pem=ca.cert_pem, purpose="server"), "unknown-issuer")
    assert "issued by 'CN=Foreign CA,O=Elsewhere'" in p.message
    assert ca.subject in p.message
    ours = ca.issue_client("site-1")
    p = only(diagnose(ours.cert_pem, ca_bundle_pem=_read(ca_crt)), "unknown-issuer")
    assert "the bundle holds 'CN=Foreign CA,O=Elsewhere'" in p.message


def test_unknown_issuer_spots_another_ca_with_the_same_name(openssl):
    real = openssl.ca("real", "/CN=Twin CA")
    twin = openssl.ca("twin", "/CN=Twin CA")
    crt, _ = openssl.leaf("leaf", "/CN=localhost", twin, SERVER_EXTENSIONS)
    p = only(diagnose(_read(crt), ca_bundle_pem=_read(real[0]), purpose="server"), "unknown-issuer")
    assert "another CA with the same name signed it" in p.message


def test_ca_expired(training, now):
    short = CertificateAuthority.create(training, duration=dt.timedelta(days=2), now=now)
    leaf = short.issue_client("site-1", now=now)
    later = now + dt.timedelta(days=3)
    problems = diagnose(leaf.cert_pem, ca_bundle_pem=short.cert_pem, now=later)
    assert codes(problems) == ["expired", "ca-expired"]
    assert "the CA 'CN=mnist" in problems[1].message


def test_name_mismatch_for_a_server(foreign):
    (_, _), (crt, _) = foreign
    p = only(
        diagnose(_read(crt), expected_name="aggregator.team-a.svc", purpose="server"),
        "name-mismatch",
    )
    assert "expected the server name 'aggregator.team-a.svc'" in p.message
    assert "DNS:localhost, IP:127.0.0.1" in p.message
    p = only(diagnose(_read(crt), expected_name="10.0.0.1", purpose="server"), "name-mismatch")


def test_name_mismatch_without_subject_alt_name_explains_that_cn_is_ignored(openssl):
    ca = openssl.ca("ca", "/CN=Test CA")
    extensions = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    crt, _ = openssl.leaf("nosan", "/CN=localhost", ca, extensions)
    p = only(diagnose(_read(crt), expected_name="localhost", purpose="server"), "name-mismatch")
    assert "no subjectAltName" in p.message
    assert "commonName localhost is ignored" in p.message


def test_wildcard_server_names_match_one_label(openssl):
    ca = openssl.ca("ca", "/CN=Test CA")
    ext = SERVER_EXTENSIONS.replace("DNS:localhost", "DNS:*.team-a.svc")
    crt, _ = openssl.leaf("wild", "/CN=w", ca, ext)
    assert diagnose(_read(crt), expected_name="agg.team-a.svc", purpose="server") == []
    assert codes(diagnose(_read(crt), expected_name="a.b.team-a.svc", purpose="server")) == [
        "name-mismatch"
    ]


def test_name_mismatch_for_a_client(ca):
    issued = ca.issue_client("site-1")
    p = only(diagnose(issued.cert_pem, expected_name="site-2"), "name-mismatch")
    assert "expected the client 'site-2', found commonName 'site-1'" in p.message
    other = URI.replace("site-1", "site-2")
    p = only(diagnose(issued.cert_pem, expected_name=other), "name-mismatch")
    assert f"expected the identity {other}" in p.message


def test_no_identity_on_a_client_certificate_openssl_signed_with_our_ca(tmp_path, ca, openssl):
    ca.save(tmp_path / "ca")
    ours = (tmp_path / "ca" / "ca.crt", tmp_path / "ca" / "ca.key")
    crt, _ = openssl.leaf("plain", "/CN=site-1", ours, CLIENT_EXTENSIONS)
    p = only(diagnose(_read(crt), ca_bundle_pem=ca.cert_pem), "no-identity")
    assert "carries no URI subjectAltName" in p.message


def test_foreign_identity_openssl_signed_with_our_ca(tmp_path, ca, openssl):
    ca.save(tmp_path / "ca")
    ours = (tmp_path / "ca" / "ca.crt", tmp_path / "ca" / "ca.key")
    uri = "spiffe://fedwarden.local/ns/team-b/training/cifar/client/site-1"
    crt, _ = openssl.leaf(
        "foreign-id", "/CN=site-1", ours, CLIENT_EXTENSIONS + f"subjectAltName=URI:{uri}\n"
    )
    p = only(diagnose(_read(crt), ca_bundle_pem=ca.cert_pem), "foreign-identity")
    assert "is a client of training team-b/cifar, expected a client of team-a/mnist" in p.message


def test_revoked_by_our_crl_names_serial_date_and_reason(ca, now):
    issued = ca.issue_client("site-1", now=now)
    rl = RevocationList.empty(ca, now=now)
    rl.revoke(issued.certificate, "key-compromise", ca=ca, now=now)
    p = only(
        diagnose(issued.cert_pem, ca_bundle_pem=ca.cert_pem, crl=rl.to_pem(), now=now), "revoked"
    )
    assert f"serial {issued.certificate.serial_number:x}" in p.message
    assert f"{now:%Y-%m-%d %H:%M:%S} UTC" in p.message
    assert "key-compromise" in p.message


def test_revoked_by_a_crl_made_with_openssl_ca(openssl):
    ca = openssl.ca("ca", "/CN=Openssl CA")
    crt, _ = openssl.leaf("victim", "/CN=localhost", ca, SERVER_EXTENSIONS)
    crl = openssl.revoke_and_gencrl(ca, crt, "keyCompromise")
    problems = diagnose(_read(crt), ca_bundle_pem=_read(ca[0]), crl=_read(crl), purpose="server")
    p = only(problems, "revoked")
    assert "key-compromise" in p.message


def test_crl_stale(ca, now):
    issued = ca.issue_client("site-1", now=now)
    rl = RevocationList.empty(ca, now=now, validity=dt.timedelta(days=1))
    later = now + dt.timedelta(days=2)
    p = only(diagnose(issued.cert_pem, ca_bundle_pem=ca.cert_pem, crl=rl, now=later), "crl-stale")
    assert "nextUpdate" in p.message


def test_crl_untrusted_when_another_key_signed_it(training, now):
    real = CertificateAuthority.create(training, now=now)
    twin = _twin(real, now)  # same subject, another key: the CRL names the issuer but is forged
    issued = real.issue_client("site-1", now=now)
    forged = RevocationList.empty(twin, now=now)
    p = only(
        diagnose(issued.cert_pem, ca_bundle_pem=real.cert_pem, crl=forged, now=now), "crl-untrusted"
    )
    assert "not signed by the key of the CA in the bundle" in p.message


def _twin(real: CertificateAuthority, now: dt.datetime) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(real.certificate.subject)
        .issuer_name(real.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert, key)


def test_crl_wrong_issuer(ca, other_ca):
    issued = ca.issue_client("site-1")
    other_crl = RevocationList.empty(other_ca).to_pem()
    p = only(diagnose(issued.cert_pem, crl=other_crl), "crl-wrong-issuer")
    assert "revocation was not checked" in p.message


def test_key_mismatch_with_openssl_keys(foreign, openssl):
    (_, _), (crt, _) = foreign
    stranger = openssl.ec_key("stranger")
    p = only(diagnose(_read(crt), _read(stranger), purpose="server"), "key-mismatch")
    assert "is not the key of the certificate 'CN=localhost'" in p.message


def test_wrong_key_usage(openssl):
    ca = openssl.ca("ca", "/CN=Test CA")
    ext = "keyUsage=critical,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    crt, _ = openssl.leaf("ku", "/CN=site-1", ca, ext)
    p = only(diagnose(_read(crt)), "wrong-key-usage")
    assert (
        "key usage is keyEncipherment; a TLS client certificate needs digitalSignature" in p.message
    )


def test_wrong_extended_key_usage_for_each_purpose(foreign, ca):
    (_, _), (crt, _) = foreign
    p = only(diagnose(_read(crt), purpose="client"), "wrong-extended-key-usage")
    assert "extended key usage is serverAuth; a client certificate needs clientAuth" in p.message
    client = ca.issue_client("site-1")
    p = only(diagnose(client.cert_pem, purpose="server"), "wrong-extended-key-usage")
    assert "needs serverAuth" in p.message


def test_ca_as_leaf_and_self_signed_leaf_from_openssl_req_x509(openssl, ca):
    crt, key = openssl.self_signed(
        "tutorial",
        "/CN=localhost",
        "basicConstraints=critical,CA:TRUE\nsubjectAltName=DNS:localhost\n",
    )
    problems = diagnose(_read(crt), _read(key), expected_name="localhost", purpose="server")
    assert codes(problems) == ["ca-as-leaf", "self-signed-leaf"]
    # our own CA certificate presented as a client certificate
    assert codes(diagnose(ca.cert_pem, ca.key_pem))[:2] == ["ca-as-leaf", "wrong-key-usage"]


def test_self_signed_leaf(openssl):
    crt, _ = openssl.self_signed(
        "selfie", "/CN=localhost", "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\n"
    )
    p = only(diagnose(_read(crt), expected_name="localhost", purpose="server"), "self-signed-leaf")
    assert "no CA vouches for it" in p.message


@pytest.mark.parametrize(
    ("make", "fragment"),
    [("rsa-1024", "RSA 1024 is too small"), ("ed25519", "Ed25519 is not accepted")],
)
def test_unsupported_key(openssl, make, fragment):
    ca = openssl.ca("ca", "/CN=Test CA")
    key = openssl.rsa_key("k", 1024) if make == "rsa-1024" else openssl.ed25519_key("k")
    crt, _ = openssl.leaf("k", "/CN=localhost", ca, SERVER_EXTENSIONS, key=key)
    p = only(diagnose(_read(crt), purpose="server"), "unsupported-key")
    assert fragment in p.message


def test_weak_signature(openssl):
    ca = openssl.ca("ca", "/CN=Test CA")
    crt, _ = openssl.leaf("sha1", "/CN=localhost", ca, SERVER_EXTENSIONS, digest="sha1")
    p = only(diagnose(_read(crt), purpose="server"), "weak-signature")
    assert "SHA1" in p.message


def test_several_problems_are_reported_together(openssl, ca, now):
    crt, _ = openssl.self_signed("bad", "/CN=bad", "basicConstraints=critical,CA:TRUE\n", days=1)
    later = now + dt.timedelta(days=10)
    stranger = openssl.ec_key("stranger")
    problems = diagnose(_read(crt), _read(stranger), ca.cert_pem, expected_name="site-1", now=later)
    assert codes(problems) == [
        "expired", "ca-as-leaf", "self-signed-leaf", "name-mismatch", "unknown-issuer",
        "key-mismatch",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (10, "expired"),
        (9, "not-yet-valid"),
        (20, "unknown-issuer"),
        (18, "self-signed-leaf"),
        (23, "revoked"),
        (26, "wrong-extended-key-usage"),
        (62, "name-mismatch"),
        (64, "name-mismatch"),
        (999, "verify-failed"),
    ],
)
def test_openssl_verify_codes_map_to_diagnosis_codes(code, expected):
    problem = explain_verify_code(code, "some message", "client")
    assert problem.code == expected
    assert problem.message == "the client's certificate failed verification: some message"


def test_every_code_has_a_hint_and_a_row_in_the_docs():
    docs = Path(__file__).parents[3] / "docs" / "pki.md"
    text = docs.read_text()
    missing = [code for code in HINTS if f"`{code}`" not in text]
    assert not missing, f"docs/pki.md lacks troubleshooting rows for {missing}"
    assert all(HINTS.values())
