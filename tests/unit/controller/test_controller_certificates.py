"""The training's PKI as the operator keeps it in the cluster: a lost or rolled-back trust
ConfigMap cannot un-revoke a certificate (the revocations are in the CA Secret too), and the CRL
is re-signed long before its nextUpdate."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from cryptography import x509

from fedwarden.controller import certificates as pki_store
from fedwarden.resources import names
from fedwarden.resources.names import Owner

OWNER = Owner("FederatedTraining", "digits", "team-a", "uid-1")


class Objects:
    """The two calls the PKI store makes, on a dict of objects."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> Any:
        obj = self.objects.get((kind, name))
        return copy.deepcopy(obj)

    def apply(self, obj: dict[str, Any]) -> None:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = copy.deepcopy(obj)


def _crl_number(pki: pki_store.TrainingPKI) -> int:
    crl = x509.load_pem_x509_crl(pki.crl.to_pem())
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_a_lost_trust_config_map_loses_no_revocation() -> None:
    cluster: Any = Objects()
    pki, created = pki_store.load_or_create(cluster, OWNER, "fedwarden.io")
    assert created
    site = pki.ca.issue_client("site-8").certificate
    assert pki.revoke(site.serial_number, "privilege-withdrawn")
    pki_store.publish_trust(cluster, OWNER, pki)
    number = _crl_number(pki)
    trust = ("ConfigMap", names.trust_configmap_name(OWNER.name))
    old = copy.deepcopy(cluster.objects[trust])
    del cluster.objects[trust]

    again, created = pki_store.load_or_create(cluster, OWNER, "fedwarden.io")
    assert not created
    assert again.crl.is_revoked(site) is not None
    assert _crl_number(again) > number
    # an older ConfigMap put back (a GitOps sync, a restore): the same
    cluster.objects[trust] = old
    again, _ = pki_store.load_or_create(cluster, OWNER, "fedwarden.io")
    assert again.crl.is_revoked(site) is not None


def test_the_crl_is_re_signed_before_it_goes_stale() -> None:
    cluster: Any = Objects()
    pki, _ = pki_store.load_or_create(cluster, OWNER, "fedwarden.io")
    subject = pki.ca.certificate.subject
    issued = pki.crl.next_update(subject)
    assert issued is not None
    now = issued - dt.timedelta(days=7)
    assert not pki.refresh_if_due(now + dt.timedelta(days=3))
    assert pki.refresh_if_due(now + dt.timedelta(days=4))
    renewed = pki.crl.next_update(subject)
    assert renewed is not None
    assert renewed > issued
