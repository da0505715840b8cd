"""The training's PKI kept in the cluster: its CA, the aggregator's certificate, the clients'
certificates and the revocation list, read from and written back to Secrets and a ConfigMap.

The CRL is published in the trust ConfigMap; the revocations and the CRL number also live in the
CA Secret (``revocations.json``), so that a lost or rolled-back ConfigMap cannot un-revoke a
certificate. The CRL is re-signed when half of its validity has passed, long before its
nextUpdate."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from fedwarden.api.training import CertificateSpec
from fedwarden.k8s import Cluster
from fedwarden.pki.ca import CertificateAuthority
from fedwarden.pki.csr import SigningPolicy, sign_csr
from fedwarden.pki.files import load_certificate
from fedwarden.pki.identity import TrainingRef
from fedwarden.pki.revocation import DEFAULT_CRL_VALIDITY, RevocationList
from fedwarden.pki.rotation import MINIMUM_DURATION, parse_duration, renewal_time
from fedwarden.resources import certificates, names
from fedwarden.resources.names import Owner


def _secret_value(secret: dict[str, Any] | None, key: str) -> bytes | None:
    if secret is None:
        return None
    value = (secret.get("data") or {}).get(key)
    return None if value is None else base64.b64decode(value)


def durations(spec: CertificateSpec) -> tuple[dt.timedelta, dt.timedelta | None]:
    renew = None if spec.renew_before is None else parse_duration(spec.renew_before)
    return parse_duration(spec.duration), renew


def due(cert: x509.Certificate, spec: CertificateSpec, now: dt.datetime) -> bool:
    """Whether ``cert`` has reached its renewal time (cert-manager's rule)."""
    _, renew_before = durations(spec)
    return now >= renewal_time(cert, renew_before)


@dataclass
class TrainingPKI:
    ca: CertificateAuthority
    crl: RevocationList
    bundle: bytes

    def revoke(self, serial: int, reason: str) -> bool:
        """Revoke ``serial``; ``False`` when it already was."""
        if any(e.serial == serial for e in self.crl.entries()):
            return False
        self.crl.revoke(serial, reason, ca=self.ca)
        return True

    def refresh_if_due(self, now: dt.datetime) -> bool:
        """Re-sign the CRL once half of its validity has passed (it never goes stale while the
        operator runs); True when it was re-signed."""
        next_update = self.crl.next_update(self.ca.certificate.subject)
        if next_update is not None and next_update - now > DEFAULT_CRL_VALIDITY / 2:
            return False
        self.crl.refresh(self.ca, now=now)
        return True


def load_or_create(cluster: Cluster, owner: Owner, trust_domain: str) -> tuple[TrainingPKI, bool]:
    """The training's CA and revocation list; made (and stored) the first time. Returns whether
    anything was created."""
    secret = cluster.get("v1", "Secret", names.ca_secret_name(owner.name), owner.namespace)
    cert_pem, key_pem = _secret_value(secret, "tls.crt"), _secret_value(secret, "tls.key")
    created = cert_pem is None or key_pem is None
    if cert_pem is None or key_pem is None:
        ca = CertificateAuthority.create(TrainingRef(owner.namespace, owner.name, trust_domain))
        cluster.apply(
            certificates.ca_secret(owner, cert=ca.cert_pem, key=ca.key_pem, bundle=ca.cert_pem)
        )
    else:
        ca = CertificateAuthority.from_pem(cert_pem, key_pem)
    trust = cluster.get("v1", "ConfigMap", names.trust_configmap_name(owner.name), owner.namespace)
    crl_pem = ((trust or {}).get("data") or {}).get("crl.pem")
    crl = (
        RevocationList.from_pem(crl_pem.encode(), trusted=[ca.certificate])
        if crl_pem
        else RevocationList.empty(ca)
    )
    state = _secret_value(secret, certificates.REVOCATION_STATE_KEY)
    if state is not None:
        crl.restore(json.loads(state), ca)  # the ConfigMap was lost or is behind: rebuilt
    return TrainingPKI(ca, crl, ca.cert_pem), created


def publish_trust(cluster: Cluster, owner: Owner, pki: TrainingPKI) -> None:
    """The revocations into the CA Secret first (what must never go back), then the CRL and
    the bundle into the trust ConfigMap."""
    state = json.dumps(pki.crl.state(), sort_keys=True).encode()
    cluster.apply(
        certificates.ca_secret(
            owner,
            cert=pki.ca.cert_pem,
            key=pki.ca.key_pem,
            bundle=pki.bundle,
            revocation_state=state,
        )
    )
    cluster.apply(certificates.trust_config_map(owner, bundle=pki.bundle, crl=pki.crl.to_pem()))


def ensure_server_certificate(
    cluster: Cluster, owner: Owner, pki: TrainingPKI, spec: CertificateSpec, now: dt.datetime
) -> tuple[x509.Certificate, str | None]:
    """The aggregator's certificate, issued or renewed when due. Returns the certificate and
    what happened: ``"CertificateIssued"``, ``"CertificateRenewed"`` or ``None``."""
    name = names.aggregator_tls_secret_name(owner.name)
    current = _secret_value(cluster.get("v1", "Secret", name, owner.namespace), "tls.crt")
    if current is not None:
        cert = load_certificate(current)
        if cert.issuer == pki.ca.certificate.subject and not due(cert, spec, now):
            return cert, None
    duration, _ = durations(spec)
    issued = pki.ca.issue_server(
        names.aggregator_dns_names(owner.name, owner.namespace), duration=duration, now=now
    )
    cluster.apply(
        certificates.aggregator_tls_secret(
            owner, cert=issued.cert_pem, key=issued.key_pem, bundle=pki.bundle
        )
    )
    return issued.certificate, "CertificateIssued" if current is None else "CertificateRenewed"


def ensure_reader_certificate(
    cluster: Cluster, owner: Owner, pki: TrainingPKI, spec: CertificateSpec, now: dt.datetime
) -> x509.Certificate:
    """The reader identity of ``fedwarden model fetch`` (names.MODEL_READER), issued or renewed
    when due, as the aggregator's is."""
    name = names.model_reader_secret_name(owner.name)
    current = _secret_value(cluster.get("v1", "Secret", name, owner.namespace), "tls.crt")
    if current is not None:
        cert = load_certificate(current)
        if cert.issuer == pki.ca.certificate.subject and not due(cert, spec, now):
            return cert
    duration, _ = durations(spec)
    issued = pki.ca.issue_reader(names.MODEL_READER, duration=duration, now=now)
    cluster.apply(
        certificates.model_reader_secret(
            owner, cert=issued.cert_pem, key=issued.key_pem, bundle=pki.bundle
        )
    )
    return issued.certificate


def ensure_client_certificate(
    cluster: Cluster,
    client: Owner,
    training: str,
    pki: TrainingPKI,
    spec: CertificateSpec,
    csr: str | None,
    now: dt.datetime,
) -> tuple[x509.Certificate, bool]:
    """An FLClient's certificate: the operator's key (``csr`` None) or the site's CSR signed
    under the policy. Renewed when due or when the CA changed. Returns (cert, renewed).
    Raises :class:`fedwarden.pki.errors.PolicyViolationError` for a CSR the policy refuses."""
    name = names.client_tls_secret_name(client.name)
    current = _secret_value(cluster.get("v1", "Secret", name, client.namespace), "tls.crt")
    if current is not None:
        cert = load_certificate(current)
        if cert.issuer == pki.ca.certificate.subject and not due(cert, spec, now):
            return cert, False
    duration, _ = durations(spec)
    if csr is None:
        issued = pki.ca.issue_client(client.name, duration=duration, now=now)
        cert, key = issued.certificate, issued.key_pem
        cert_pem = issued.cert_pem
    else:
        # CSR-enrolled sites get at least the policy's minimum lifetime (an hour, as cert-manager)
        lifetime = max(duration, MINIMUM_DURATION)
        policy = SigningPolicy(max_duration=lifetime, default_duration=lifetime)
        cert_pem = sign_csr(pki.ca, csr.encode(), client.name, policy, now=now)
        cert, key = load_certificate(cert_pem), None
    cluster.apply(
        certificates.client_certificate_secret(
            client, training, cert=cert_pem, key=key, bundle=pki.bundle
        )
    )
    return cert, True


def client_certificate(cluster: Cluster, client: str, namespace: str) -> x509.Certificate | None:
    pem = _secret_value(
        cluster.get("v1", "Secret", names.client_tls_secret_name(client), namespace), "tls.crt"
    )
    return None if pem is None else load_certificate(pem)
