"""Signing and verifying payloads with the key of a certificate (the signed update envelope).

The wire layer owns the envelope format; this module signs and verifies bytes. A client signs
with the private key of its client certificate, and the aggregator verifies with the public key
of the certificate the client presented in the TLS handshake, so a signature binds a payload to
an identity the CA vouched for.

The hash is always SHA-256. EC keys sign with ECDSA, the signature DER-encoded (as in X.509 and
TLS); RSA keys sign with RSA-PSS (MGF1-SHA-256, salt as long as the digest), never PKCS#1 v1.5.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from fedwarden.pki.errors import SignatureError
from fedwarden.pki.keys import describe_key

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def sign_payload(key: PrivateKeyTypes, data: bytes) -> bytes:
    """Sign ``data``: ECDSA with SHA-256 (DER) for EC keys, RSA-PSS with SHA-256 for RSA keys."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, _PSS, hashes.SHA256())
    raise SignatureError(
        "unsupported-key", f"{describe_key(key)} keys cannot sign payloads; use an EC or RSA key"
    )


def verify_payload(cert: x509.Certificate, data: bytes, signature: bytes) -> None:
    """Return when ``signature`` over ``data`` verifies with ``cert``'s key; raise otherwise.

    Raises :class:`SignatureError` with reason ``bad-signature`` (the data or signature was
    altered, or another key signed) or ``unsupported-key``.
    """
    public = cert.public_key()
    who = cert.subject.rfc4514_string()
    if not signature:
        raise SignatureError("bad-signature", f"the payload for {who!r} carries no signature")
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, _PSS, hashes.SHA256())
        else:
            raise SignatureError(
                "unsupported-key",
                f"the certificate of {who!r} holds a {describe_key(public)} key, "
                "which cannot verify payloads",
            )
    except InvalidSignature:
        raise SignatureError(
            "bad-signature",
            f"the signature does not verify with the key of {who!r} "
            f"(serial {cert.serial_number:x}): the payload was altered in transit, or was not "
            "signed by the holder of this certificate",
        ) from None
