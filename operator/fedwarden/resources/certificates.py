"""Secrets and ConfigMaps that carry the training's PKI, shaped as cert-manager writes them."""

from __future__ import annotations

import base64
from typing import Any

from fedwarden.resources import names
from fedwarden.resources.names import Owner


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tls_secret(
    owner: Owner, name: str, labels: dict[str, str], *, cert: bytes, key: bytes, ca: bytes
) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret with ``tls.crt``, ``tls.key`` and ``ca.crt``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": owner.metadata(name, labels),
        "data": {"tls.crt": _b64(cert), "tls.key": _b64(key), "ca.crt": _b64(ca)},
    }


REVOCATION_STATE_KEY = "revocations.json"
"""The CA Secret's key for the revoked serials and CRL number (see controller.certificates)."""


def ca_secret(
    owner: Owner, *, cert: bytes, key: bytes, bundle: bytes, revocation_state: bytes | None = None
) -> dict[str, Any]:
    """The training's CA (its key signs every certificate of the training; only the operator
    reads this Secret), and what it revoked."""
    secret = tls_secret(
        owner,
        names.ca_secret_name(owner.name),
        names.training_labels(owner.name, "ca"),
        cert=cert,
        key=key,
        ca=bundle,
    )
    if revocation_state is not None:
        secret["data"][REVOCATION_STATE_KEY] = _b64(revocation_state)
    return secret


def aggregator_tls_secret(
    owner: Owner, *, cert: bytes, key: bytes, bundle: bytes
) -> dict[str, Any]:
    return tls_secret(
        owner,
        names.aggregator_tls_secret_name(owner.name),
        names.training_labels(owner.name, "aggregator"),
        cert=cert,
        key=key,
        ca=bundle,
    )


def model_reader_secret(owner: Owner, *, cert: bytes, key: bytes, bundle: bytes) -> dict[str, Any]:
    """The reader identity of ``fedwarden model fetch``: RBAC on this Secret decides who may
    fetch the trained model from the aggregator."""
    return tls_secret(
        owner,
        names.model_reader_secret_name(owner.name),
        names.training_labels(owner.name, "model-reader"),
        cert=cert,
        key=key,
        ca=bundle,
    )


def trust_config_map(owner: Owner, *, bundle: bytes, crl: bytes) -> dict[str, Any]:
    """The CA bundle and the revocation list: public material for the aggregator and the sites."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(
            names.trust_configmap_name(owner.name), names.training_labels(owner.name, "trust")
        ),
        "data": {"ca.crt": bundle.decode(), "crl.pem": crl.decode()},
    }


def client_certificate_secret(
    owner: Owner, training: str, *, cert: bytes, key: bytes | None, bundle: bytes
) -> dict[str, Any]:
    """An in-cluster site's key and certificate (``kubernetes.io/tls``), or, for a site that
    enrolled with a CSR, its certificate and the CA bundle only (``Opaque``: the key never left
    the site)."""
    name = names.client_tls_secret_name(owner.name)
    labels = names.client_labels(training, owner.name)
    if key is not None:
        return tls_secret(owner, name, labels, cert=cert, key=key, ca=bundle)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": owner.metadata(name, labels),
        "data": {"tls.crt": _b64(cert), "ca.crt": _b64(bundle)},
    }
