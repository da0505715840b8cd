import datetime as dt
import re
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedwarden.pki import (
    CertificateAuthority,
    CertificateProblem,
    ClientIdentity,
    InvalidInputError,
    PKIDirectory,
    TLSDirectory,
    TrainingPKI,
    TrainingRef,
    identity_from_certificate,
    load_certificate,
    load_private_key,
    read_private_key,
    write_private_key,
)
from fedwarden.pki.identity import uri_sans


def _ext(cert: x509.Certificate, kind):
    return cert.extensions.get_extension_for_class(kind)


def test_ca_is_a_p256_self_signed_ca_for_leaves_only(ca, training):
    cert = ca.certificate
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mnist"
    assert "team-a" in cert.subject.rfc4514_string()
    assert uri_sans(cert) == ["spiffe://fedwarden.local/ns/team-a/training/mnist"]
    assert ca.training == training
    # random 159-bit serials (x509.random_serial_number)
    assert 0 < cert.serial_number < 2**159


def test_server_certificate_names_the_aggregator_for_server_auth_only(ca):
    issued = ca.issue_server(["aggregator.team-a.svc", "localhost"], ["127.0.0.1"])
    cert = issued.certificate
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["aggregator.team-a.svc", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://fedwarden.local/ns/team-a/training/mnist/aggregator"
    ]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = _ext(cert, x509.KeyUsage).value
    assert ku.digital_signature
    assert not ku.key_cert_sign
    assert not ku.key_encipherment
    assert not _ext(cert, x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca.certificate)


def test_client_certificate_names_the_client_in_cn_and_spiffe_uri(ca, training):
    issued = ca.issue_client("site-1")
    cert = issued.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "site-1"
    assert uri_sans(cert) == ["spiffe://fedwarden.local/ns/team-a/training/mnist/client/site-1"]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _ext(cert, x509.KeyUsage).value.digital_signature
    assert identity_from_certificate(cert, training) == ClientIdentity("team-a", "mnist", "site-1")


def test_leaf_lifetime_defaults_to_90_days_is_backdated_and_capped_at_the_ca(training, now):
    ca = CertificateAuthority.create(training, duration=dt.timedelta(days=30), now=now)
    cert = ca.issue_client("site-1", now=now).certificate
    assert cert.not_valid_before_utc == now - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc  # not 90 days
    longer = CertificateAuthority.create(training, now=now).issue_client("x", now=now)
    assert longer.certificate.not_valid_after_utc == now + dt.timedelta(days=90)


def test_an_expired_ca_refuses_to_issue(training, now):
    ca = CertificateAuthority.create(
        training, duration=dt.timedelta(days=1), now=now - dt.timedelta(days=3)
    )
    with pytest.raises(CertificateProblem, match="expired on") as info:
        ca.issue_client("site-1", now=now)
    assert info.value.reason == "ca-expired"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (None, "no-identity"),
        ("spiffe://evil.example/ns/team-a/training/mnist/client/site-1", "foreign-trust-domain"),
        ("spiffe://fedwarden.local/ns/team-b/training/mnist/client/site-1", "wrong-training"),
        ("spiffe://fedwarden.local/ns/team-a/training/other/client/site-1", "wrong-training"),
        ("spiffe://fedwarden.local/ns/team-a/training/mnist/aggregator", "malformed-identity"),
        ("spiffe://fedwarden.local/ns/team-a/training/mnist/client/site-1/x", "malformed-identity"),
        ("https://fedwarden.local/ns/team-a/training/mnist/client/site-1", "malformed-identity"),
        ("spiffe://fedwarden.local/ns/team-a/training/mnist/client/Site_1", "malformed-identity"),
    ],
)
def test_identity_extraction_refuses_anything_but_a_client_of_the_training(
    ca, training, now, uri, reason
):
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site-1")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if uri is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    with pytest.raises(CertificateProblem) as info:
        identity_from_certificate(cert, training)
    assert info.value.reason == reason


def test_identity_extraction_refuses_two_uris_and_a_cn_that_differs(ca, training, now):
    good = training.client("site-1").uri
    for names, cn, reason in [
        ([good, training.client("site-2").uri], "site-1", "malformed-identity"),
        ([good], "site-2", "name-mismatch"),
    ]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(n) for n in names]),
                critical=False,
            )
            .sign(ca.key, hashes.SHA256())
        )
        with pytest.raises(CertificateProblem) as info:
            identity_from_certificate(cert, training)
        assert info.value.reason == reason


@pytest.mark.parametrize(
    ("namespace", "training", "fragment"),
    [
        ("Team-A", "mnist", "namespace 'Team-A' is not valid"),
        ("team-a", "", "training name must be a non-empty string"),
        ("team-a", "a" * 64, "is 64 characters long; at most 63"),
        ("team-a", "x/y", "training name 'x/y' is not valid"),
        ("team-a", "a..b", "is not valid"),
    ],
)
def test_names_are_checked_like_kubernetes_names(namespace, training, fragment):
    with pytest.raises(InvalidInputError, match=re.escape(fragment)):
        TrainingRef(namespace, training)


def test_server_names_are_checked(ca):
    with pytest.raises(InvalidInputError, match="is not a DNS name"):
        ca.issue_server(["bad name"])
    with pytest.raises(InvalidInputError, match="is not an IP address"):
        ca.issue_server(["ok.example"], ["300.1.1.1"])
    with pytest.raises(InvalidInputError, match="at least one DNS name or IP"):
        ca.issue_server([])


def test_keys_are_written_pkcs8_0600_and_read_back(tmp_path, ca):
    path = write_private_key(tmp_path / "sub" / "tls.key", ca.key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert read_private_key(path).private_numbers() == ca.key.private_numbers()
    assert not list(path.parent.glob(".tls.key.*")), "no temporary file left behind"


def test_unreadable_input_names_what_it_found(tmp_path, ca):
    with pytest.raises(InvalidInputError, match="holds a PEM block of type 'PRIVATE KEY'"):
        load_certificate(ca.key_pem)
    with pytest.raises(InvalidInputError, match="the input is empty"):
        load_certificate(b"")
    with pytest.raises(InvalidInputError, match="no private key found"):
        load_private_key(ca.cert_pem)
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_private_key(tmp_path / "missing.key")
    assert load_certificate(ca.certificate.public_bytes(Encoding.DER)) == ca.certificate


def test_ca_round_trips_through_its_directory(tmp_path, ca):
    directory = ca.save(tmp_path / "ca")
    assert stat.S_IMODE(directory.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.ca_key.stat().st_mode) == 0o600
    loaded = CertificateAuthority.load(directory)
    assert loaded.certificate == ca.certificate
    with pytest.raises(InvalidInputError, match="does not match"):
        CertificateAuthority(ca.certificate, ec.generate_private_key(ec.SECP256R1()))
    leaf = ca.issue_client("x")
    assert leaf.key is not None
    with pytest.raises(InvalidInputError, match="is not a CA certificate"):
        CertificateAuthority(leaf.certificate, leaf.key)


def test_training_pki_layout_and_tls_directory(tmp_path, training):
    store = TrainingPKI.init(tmp_path / "ca", training)
    d = PKIDirectory(tmp_path / "ca")
    assert {p.name for p in d.root.iterdir()} == {
        "ca.crt", "ca.key", "ca-bundle.crt", "crl.pem", "revocations.json",
    }  # fmt: skip
    issued = store.issue_client("site-1", keep_key=True)
    assert d.client_cert("site-1").exists()
    assert d.client_key("site-1").exists()
    tls = store.write_tls_directory(tmp_path / "mount", issued)
    assert isinstance(tls, TLSDirectory)
    assert {p.name for p in tls.root.iterdir()} == {"tls.crt", "tls.key", "ca.crt"}
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    assert load_certificate(tls.ca.read_bytes()) == store.ca.certificate
    with pytest.raises(InvalidInputError, match="already exists"):
        TrainingPKI.init(tmp_path / "ca", training)
