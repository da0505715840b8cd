"""Keys: which kinds fedwarden makes and accepts, and how it talks about them.

fedwarden makes ECDSA P-256 keys (small, fast, accepted by every TLS stack). It accepts, in a CSR
from a remote site, ECDSA on P-256 or P-384 and RSA of at least 3072 bits (the NIST SP 800-57
size for 128-bit security, and cert-manager's recommendation for new RSA keys). It refuses:

- RSA below 3072 bits: below 128-bit security; RSA 2048 is still common, but a new CA has no
  legacy to carry.
- DSA: not usable in TLS 1.3 at all.
- Ed25519 / Ed448: sound algorithms, but gRPC's TLS library (BoringSSL) does not offer Ed25519
  among its default signature algorithms, so a site could enrol and then fail every handshake
  with an unhelpful error; refusing at enrolment names the problem where it can be fixed.
- Other elliptic curves (P-521, secp256k1, brainpool): outside what TLS 1.3 stacks commonly
  negotiate by default; keeping the set small keeps every pair of peers compatible.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)

from fedwarden.pki.errors import InvalidInputError

KeyAlgorithm = Literal["ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-4096"]
KEY_ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-4096")
SigningKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The private keys fedwarden signs with (certificates, CRLs, payloads)."""

MIN_RSA_BITS = 3072
_ALLOWED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}


def generate_key(algorithm: KeyAlgorithm = "ecdsa-p256") -> SigningKey:
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if algorithm == "rsa-4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise InvalidInputError(
        "unsupported-key", f"unknown key algorithm {algorithm!r}; use one of {KEY_ALGORITHMS}"
    )


def describe_key(key: PublicKeyTypes | PrivateKeyTypes) -> str:
    """A short human name: ``EC P-256``, ``RSA 2048``, ``Ed25519``, ``DSA 2048``."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        curve = key.curve.name
        return f"EC {_ALLOWED_CURVES.get(curve, curve)}"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    if isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey):
        return f"DSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448"
    return type(key).__name__


def key_policy_problem(
    key: CertificatePublicKeyTypes | PublicKeyTypes, min_rsa_bits: int = MIN_RSA_BITS
) -> str | None:
    """Why fedwarden refuses this public key in a certificate, or ``None`` if it accepts it."""
    name = describe_key(key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in _ALLOWED_CURVES:
            return None
        return f"{name} is not an accepted curve (use P-256 or P-384)"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size >= min_rsa_bits:
            return None
        return f"{name} is too small (RSA needs at least {min_rsa_bits} bits; or use EC P-256)"
    if isinstance(key, dsa.DSAPublicKey):
        return f"{name} is not accepted (DSA cannot be used with TLS 1.3; use EC P-256)"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return (
            f"{name} is not accepted (gRPC's TLS library does not offer it by default; "
            "use EC P-256)"
        )
    return f"{name} keys are not accepted (use EC P-256, P-384 or RSA >= {min_rsa_bits})"


def public_key_bytes(key: PublicKeyTypes | CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def same_public_key(
    a: PublicKeyTypes | CertificatePublicKeyTypes, b: PublicKeyTypes | CertificatePublicKeyTypes
) -> bool:
    return public_key_bytes(a) == public_key_bytes(b)


def as_signing_key(key: PrivateKeyTypes | CertificateIssuerPrivateKeyTypes) -> SigningKey:
    """Narrow a loaded private key to one fedwarden signs with, or raise."""
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return key
    raise InvalidInputError(
        "unsupported-key",
        f"{describe_key(key)} keys cannot sign here; use an EC (P-256/P-384) or RSA key",
    )
