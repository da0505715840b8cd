import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedwarden.pki import (
    PolicyViolationError,
    SigningPolicy,
    create_csr,
    load_certificate,
    load_private_key,
    sign_csr,
)
from fedwarden.pki.identity import uri_sans
from fedwarden.pki.keys import generate_key

URI = "spiffe://fedwarden.local/ns/team-a/training/mnist/client/site-1"


def _refusal(ca, csr_pem, client="site-1", policy=None, **kw) -> PolicyViolationError:
    with pytest.raises(PolicyViolationError) as info:
        sign_csr(ca, csr_pem, client, policy, **kw)
    return info.value


def _csr(key, cn="site-1", sans=None, extensions=()):
    sans = [x509.UniformResourceIdentifier(URI)] if sans is None else sans
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_a_site_makes_its_key_and_the_ca_signs_exactly_its_identity(ca, training, now):
    key_pem, csr_pem = create_csr(training.client("site-1"))
    assert b"PRIVATE KEY" not in csr_pem
    cert = load_certificate(sign_csr(ca, csr_pem, "site-1", now=now))
    assert cert.public_key() == load_private_key(key_pem).public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "site-1"
    assert uri_sans(cert) == [URI]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - now == dt.timedelta(days=90)
    cert.verify_directly_issued_by(ca.certificate)


def test_an_openssl_csr_is_accepted_and_the_ca_writes_the_subject(ca, openssl):
    csr = openssl.csr("site", "/C=AU/O=Somebody Else/CN=site-1", addext=f"subjectAltName=URI:{URI}")
    cert = load_certificate(sign_csr(ca, csr.read_bytes(), "site-1"))
    assert "Somebody Else" not in cert.subject.rfc4514_string()
    assert cert.subject.rfc4514_string() == "CN=site-1,OU=mnist,OU=team-a,O=fedwarden"


def test_refuses_a_csr_for_another_name(ca, openssl):
    csr = openssl.csr("s", "/CN=site-2", addext=f"subjectAltName=URI:{URI}")
    err = _refusal(ca, csr.read_bytes())
    assert err.reason == "name-mismatch"
    assert "commonName is 'site-2', expected 'site-1'" in str(err)


def test_refuses_a_csr_for_another_identity(ca, training):
    _, csr_pem = create_csr(training.client("site-2"))
    err = _refusal(ca, csr_pem, "site-1")
    assert [code for code, _ in err.violations] == ["name-mismatch", "identity-mismatch"]
    assert f"expected {URI}" in str(err)


def test_refuses_a_csr_for_another_training(ca, other_ca):
    _, csr_pem = create_csr(other_ca.training.client("site-1"))
    err = _refusal(ca, csr_pem)
    assert err.reason == "identity-mismatch"
    assert "ns/team-b/training/cifar" in str(err)


def test_refuses_a_csr_without_the_identity_uri(ca, openssl):
    csr = openssl.csr("s", "/CN=site-1")
    err = _refusal(ca, csr.read_bytes())
    assert err.reason == "missing-identity"
    assert f"-addext subjectAltName=URI:{URI}" in str(err)


@pytest.mark.parametrize(
    ("addext", "fragment"),
    [
        (f"subjectAltName=URI:{URI},DNS:aggregator.team-a.svc", "DNS:aggregator.team-a.svc"),
        (f"subjectAltName=URI:{URI},IP:10.0.0.1", "IP:10.0.0.1"),
        (f"subjectAltName=URI:{URI},email:x@example.org", "email:x@example.org"),
        (
            f"subjectAltName=URI:{URI},URI:spiffe://fedwarden.local/ns/team-a/training/mnist/aggregator",
            "URI:spiffe://fedwarden.local/ns/team-a/training/mnist/aggregator",
        ),
    ],
)
def test_refuses_extra_subject_alt_names(ca, openssl, addext, fragment):
    csr = openssl.csr("s", "/CN=site-1", addext=addext)
    err = _refusal(ca, csr.read_bytes())
    assert err.reason == "extra-san"
    assert fragment in str(err)


@pytest.mark.parametrize(
    "addext", ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
)
def test_refuses_a_csr_that_asks_to_be_a_ca(ca, openssl, addext):
    key = openssl.ec_key("s")
    csr = openssl.path("s.csr")
    openssl.run(
        "req", "-new", "-key", str(key), "-subj", "/CN=site-1", "-addext",
        f"subjectAltName=URI:{URI}", "-addext", addext, "-out", str(csr),
    )  # fmt: skip
    err = _refusal(ca, csr.read_bytes())
    assert err.reason == "ca-requested"


def test_refuses_server_auth(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    err = _refusal(ca, _csr(key, extensions=[(eku, False)]))
    assert err.reason == "wrong-extended-key-usage"
    assert "serverAuth" in str(err)


@pytest.mark.parametrize(
    ("make_key", "fragment"),
    [
        ("openssl-rsa-2048", "RSA 2048 is too small (RSA needs at least 3072 bits"),
        ("dsa", "DSA 2048 is not accepted (DSA cannot be used with TLS 1.3"),
        ("openssl-ed25519", "Ed25519 is not accepted"),
        ("secp256k1", "EC secp256k1 is not an accepted curve"),
        ("p521", "EC secp521r1 is not an accepted curve"),
    ],
)
def test_refuses_weak_or_unsupported_keys(ca, openssl, make_key, fragment):
    if make_key.startswith("openssl-"):
        if make_key == "openssl-rsa-2048":
            key_file = openssl.rsa_key("k", 2048)
        else:
            key_file = openssl.ed25519_key("k")
        csr_pem = openssl.csr(
            "k", "/CN=site-1", key=key_file, addext=f"subjectAltName=URI:{URI}"
        ).read_bytes()
    else:
        key = {
            "dsa": lambda: dsa.generate_private_key(2048),
            "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
            "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
        }[make_key]()
        csr_pem = _csr(key)
    err = _refusal(ca, csr_pem)
    assert err.reason == "weak-key"
    assert fragment in str(err)


@pytest.mark.parametrize("algorithm", ["ecdsa-p384", "rsa-3072"])
def test_accepts_p384_and_rsa_3072(ca, algorithm):
    key = generate_key(algorithm)
    cert = load_certificate(sign_csr(ca, _csr(key), "site-1"))
    assert cert.public_key() == key.public_key()


def test_refuses_a_csr_whose_signature_does_not_verify(ca, training):
    _, csr_pem = create_csr(training.client("site-1"))
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # alter the signature's last byte
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    err = _refusal(ca, tampered)
    assert err.reason == "bad-signature"
    assert "altered after it was signed" in str(err)


def test_refuses_garbage(ca):
    err = _refusal(
        ca, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    )
    assert err.reason == "malformed-csr"


def test_lifetime_is_the_cas_choice_bounded_by_the_policy(ca, training, now):
    _, csr_pem = create_csr(training.client("site-1"))
    policy = SigningPolicy(
        max_duration=dt.timedelta(days=30), default_duration=dt.timedelta(days=7)
    )
    cert = load_certificate(sign_csr(ca, csr_pem, "site-1", policy, now=now))
    assert cert.not_valid_after_utc - now == dt.timedelta(days=7)
    err = _refusal(ca, csr_pem, policy=policy, duration=dt.timedelta(days=31))
    assert err.reason == "lifetime"
    assert "31 days exceeds the policy's maximum of 30 days" in str(err)
    err = _refusal(ca, csr_pem, policy=policy, duration=dt.timedelta(minutes=10))
    assert "below the minimum" in str(err)


def test_every_broken_rule_is_reported_at_once(ca, openssl):
    key_file = openssl.rsa_key("k", 2048)
    csr = openssl.csr(
        "k", "/CN=intruder", key=key_file, addext="subjectAltName=DNS:aggregator.example"
    )
    err = _refusal(ca, csr.read_bytes())
    codes = [code for code, _ in err.violations]
    assert codes == ["weak-key", "name-mismatch", "missing-identity", "extra-san"]
    assert str(err).startswith("CSR refused: ")
