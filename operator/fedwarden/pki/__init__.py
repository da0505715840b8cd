"""fedwarden's PKI: a CA per training, certificates, CSR enrolment, rotation, revocation and
payload signatures, on ``cryptography``. It imports nothing else of fedwarden.
"""

from fedwarden.pki.bundle import TrustBundle, fingerprint, rotation_bundle
from fedwarden.pki.ca import (
    DEFAULT_CA_DURATION,
    DEFAULT_LEAF_DURATION,
    CertificateAuthority,
    IssuedCertificate,
)
from fedwarden.pki.csr import SigningPolicy, check_csr, create_csr, sign_csr
from fedwarden.pki.errors import (
    CertificateProblem,
    InvalidInputError,
    PKIError,
    PolicyViolationError,
    SignatureError,
)
from fedwarden.pki.files import (
    PKIDirectory,
    TLSDirectory,
    certificate_pem,
    certificates_pem,
    load_certificate,
    load_certificates,
    load_csr,
    load_private_key,
    private_key_pem,
    read_certificate,
    read_certificates,
    read_private_key,
    write_certificates,
    write_private_key,
)
from fedwarden.pki.identity import (
    DEFAULT_TRUST_DOMAIN,
    ClientIdentity,
    TrainingRef,
    identity_from_certificate,
)
from fedwarden.pki.keys import KEY_ALGORITHMS, KeyAlgorithm, generate_key
from fedwarden.pki.revocation import REASONS, RevocationList, RevokedEntry
from fedwarden.pki.rotation import (
    RenewalPolicy,
    format_duration,
    needs_renewal,
    parse_duration,
    renewal_time,
)
from fedwarden.pki.signing import sign_payload, verify_payload
from fedwarden.pki.store import TrainingPKI

__all__ = [
    "DEFAULT_CA_DURATION",
    "DEFAULT_LEAF_DURATION",
    "DEFAULT_TRUST_DOMAIN",
    "KEY_ALGORITHMS",
    "REASONS",
    "CertificateAuthority",
    "CertificateProblem",
    "ClientIdentity",
    "InvalidInputError",
    "IssuedCertificate",
    "KeyAlgorithm",
    "PKIDirectory",
    "PKIError",
    "PolicyViolationError",
    "RenewalPolicy",
    "RevocationList",
    "RevokedEntry",
    "SignatureError",
    "SigningPolicy",
    "TLSDirectory",
    "TrainingPKI",
    "TrainingRef",
    "TrustBundle",
    "certificate_pem",
    "certificates_pem",
    "check_csr",
    "create_csr",
    "fingerprint",
    "format_duration",
    "generate_key",
    "identity_from_certificate",
    "load_certificate",
    "load_certificates",
    "load_csr",
    "load_private_key",
    "needs_renewal",
    "parse_duration",
    "private_key_pem",
    "read_certificate",
    "read_certificates",
    "read_private_key",
    "renewal_time",
    "rotation_bundle",
    "sign_csr",
    "sign_payload",
    "verify_payload",
    "write_certificates",
    "write_private_key",
]
