"""fedwarden's PKI: a CA per training, certificates, CSR enrolment, rotation, revocation,
payload signatures and diagnostics, on ``cryptography``. It imports nothing else of fedwarden.

See ``docs/pki.md`` for the model (identities, enrolment, rotation, revocation) and the codes
:func:`diagnose` reports.
"""

from fedwarden.pki.bundle import TrustBundle, fingerprint, rotation_bundle
from fedwarden.pki.ca import (
    DEFAULT_CA_DURATION,
    DEFAULT_LEAF_DURATION,
    CertificateAuthority,
    IssuedCertificate,
)
from fedwarden.pki.csr import SigningPolicy, check_csr, create_csr, sign_csr
from fedwarden.pki.diagnose import (
    HINTS,
    Problem,
    Purpose,
    diagnose,
    explain_tls_error,
    explain_verify_code,
)
from fedwarden.pki.endpoint import (
    EndpointReport,
    client_ssl_context,
    diagnose_endpoint,
    peer_certificate,
    server_ssl_context,
)
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
    reader_from_certificate,
)
from fedwarden.pki.keys import KEY_ALGORITHMS, KeyAlgorithm, generate_key
from fedwarden.pki.reload import KeyPairWatcher
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
from fedwarden.pki.verify import PeerVerifier, verify_certificate

__all__ = [
    "DEFAULT_CA_DURATION",
    "DEFAULT_LEAF_DURATION",
    "DEFAULT_TRUST_DOMAIN",
    "HINTS",
    "KEY_ALGORITHMS",
    "REASONS",
    "CertificateAuthority",
    "CertificateProblem",
    "ClientIdentity",
    "EndpointReport",
    "InvalidInputError",
    "IssuedCertificate",
    "KeyAlgorithm",
    "KeyPairWatcher",
    "PKIDirectory",
    "PKIError",
    "PeerVerifier",
    "PolicyViolationError",
    "Problem",
    "Purpose",
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
    "client_ssl_context",
    "create_csr",
    "diagnose",
    "diagnose_endpoint",
    "explain_tls_error",
    "explain_verify_code",
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
    "peer_certificate",
    "private_key_pem",
    "read_certificate",
    "read_certificates",
    "read_private_key",
    "reader_from_certificate",
    "renewal_time",
    "rotation_bundle",
    "server_ssl_context",
    "sign_csr",
    "sign_payload",
    "verify_certificate",
    "verify_payload",
    "write_certificates",
    "write_private_key",
]
