"""Reconciling an FLClient: admission to its training, its certificate (issued, signed from
its CSR, renewed, revoked), its in-cluster workload, and its status."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from fedwarden.api.client import FLClient
from fedwarden.api.common import API_VERSION
from fedwarden.api.training import FederatedTraining
from fedwarden.controller import certificates as pki_store
from fedwarden.controller.settings import OperatorSettings
from fedwarden.controller.training import FINISHED, reconcile_training, training_lock
from fedwarden.controller.training import owner_of as training_owner
from fedwarden.k8s import Cluster
from fedwarden.pki.errors import PKIError
from fedwarden.pki.rotation import renewal_time
from fedwarden.resources import client as client_resources
from fedwarden.resources import names
from fedwarden.resources.names import Owner
from fedwarden.resources.status import (
    ConditionValue,
    client_phase,
    merge_conditions,
    now_rfc3339,
    rfc3339,
)

log = logging.getLogger("fedwarden.controller")

KIND = "FLClient"


def reconcile_client(
    cluster: Cluster, body: dict[str, Any], settings: OperatorSettings
) -> dict[str, Any]:
    """Make the cluster match one FLClient; returns the status written."""
    client = FLClient.model_validate(
        {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    )
    meta = body["metadata"]
    owner = Owner(KIND, meta["name"], meta["namespace"], meta["uid"])
    reported: dict[str, Any] = dict(body.get("status") or {})
    generation = int(meta.get("generation") or 0)
    training_name = client.spec.training_ref.name

    def write(phase: str, message: str, ready: bool, reason: str, **fields: Any) -> dict[str, Any]:
        status: dict[str, Any] = {
            "phase": phase,
            "message": message,
            "observedGeneration": generation,
            "conditions": merge_conditions(
                reported.get("conditions") or [],
                [ConditionValue("Ready", ready, reason, message)],
                generation,
                now_rfc3339(),
            ),
            **fields,
        }
        cluster.apply_status(KIND, owner.name, owner.namespace, status)
        if phase != reported.get("phase") and phase != "Banned":
            warning = phase in ("Banned", "Revoked") or (not ready and phase == "Pending")
            cluster.event(body, phase if phase != "Pending" else reason, message, warning=warning)
        return status

    training_body = cluster.get(API_VERSION, "FederatedTraining", training_name, owner.namespace)
    if training_body is not None and training_body["metadata"].get("deletionTimestamp"):
        training_body = None  # going: its finalizer revokes this client
    if training_body is None:
        if reported.get("phase") in ("Revoked", "Banned"):
            return reported  # its training was deleted and its certificate revoked: final
        return write("Pending", f"FederatedTraining {training_name} does not exist", False,
                     "TrainingNotFound")  # fmt: skip
    training = FederatedTraining.model_validate(
        {k: training_body[k] for k in ("apiVersion", "kind", "metadata", "spec")}
    )
    spec = training.spec
    labels = meta.get("labels") or {}
    if spec.selection.client_selector is not None and not spec.selection.client_selector.matches(
        labels
    ):
        return write("Pending", f"its labels do not match {training_name}'s clientSelector",
                     False, "NotSelected")  # fmt: skip
    residency = spec.data_residency
    if residency is not None and client.spec.region not in residency.allowed_regions:
        return write(
            "Pending",
            f"region {client.spec.region!r} is not in {training_name}'s allowed regions "
            f"{residency.allowed_regions}",
            False,
            "RegionNotAllowed",
        )

    t_owner = training_owner(training_body)
    pki, created = pki_store.load_or_create(cluster, t_owner, settings.trust_domain)
    if created:
        cluster.event(training_body, "CertificateAuthorityCreated", f"CA {pki.ca.subject}")
    now = dt.datetime.now(dt.UTC)

    if reported.get("banReason"):
        cert = pki_store.client_certificate(cluster, owner.name, owner.namespace)
        if cert is not None and pki.revoke(cert.serial_number, "affiliation-changed"):
            # the aggregator may have written the phase already: the revocation is the news
            pki_store.publish_trust(cluster, t_owner, pki)
            note = f"{reported['banReason']}; certificate {cert.serial_number:x} revoked"
            cluster.event(body, "Banned", note, warning=True)
            cluster.event(training_body, "ClientBanned", f"{owner.name}: {note}", warning=True)
        cluster.delete("batch/v1", "Job", names.client_job_name(owner.name), owner.namespace)
        phase, message = client_phase(reported, enrolled=True, revoked=True)
        return write(phase, message + "; certificate revoked", False, "Banned")

    try:
        cert, renewed = pki_store.ensure_client_certificate(
            cluster, owner, training_name, pki, spec.certificates, client.spec.csr, now
        )
    except PKIError as exc:
        return write("Pending", f"certificate refused: {exc}", False, "CertificateRefused")
    if renewed and reported.get("certificateSerial"):
        cluster.event(body, "CertificateRenewed",
                      f"valid until {cert.not_valid_after_utc:%FT%TZ}")  # fmt: skip

    training_phase = (training_body.get("status") or {}).get("phase")
    if client.spec.workload is not None and training_phase not in FINISHED:
        cluster.apply(client_resources.client_job(owner, client.spec, spec))

    _, renew_before = pki_store.durations(spec.certificates)
    phase, message = client_phase(reported, enrolled=True, revoked=False)
    return write(
        phase,
        message,
        True,
        "Enrolled",
        certificateSerial=f"{cert.serial_number:x}",
        certificateSecret=names.client_tls_secret_name(owner.name),
        notAfter=rfc3339(cert.not_valid_after_utc),
        renewalTime=rfc3339(renewal_time(cert, renew_before)),
    )


def finalize_client(cluster: Cluster, body: dict[str, Any], settings: OperatorSettings) -> None:
    """Before an FLClient goes: revoke its certificate in its training's revocation list."""
    meta = body["metadata"]
    training_name = (body.get("spec") or {}).get("trainingRef", {}).get("name")
    training_body = cluster.get(API_VERSION, "FederatedTraining", training_name, meta["namespace"])
    if training_body is None:
        return
    with training_lock(meta["namespace"], training_name):
        _revoke_deleted_client(cluster, body, training_body, settings)


def _revoke_deleted_client(
    cluster: Cluster,
    body: dict[str, Any],
    training_body: dict[str, Any],
    settings: OperatorSettings,
) -> None:
    meta = body["metadata"]
    cert = pki_store.client_certificate(cluster, meta["name"], meta["namespace"])
    if cert is None:
        return
    t_owner = training_owner(training_body)
    pki, _ = pki_store.load_or_create(cluster, t_owner, settings.trust_domain)
    cluster.forget(meta["namespace"], names.client_job_name(meta["name"]))
    cluster.forget(meta["namespace"], names.client_tls_secret_name(meta["name"]))
    if pki.revoke(cert.serial_number, "cessation-of-operation"):
        pki_store.publish_trust(cluster, t_owner, pki)
        cluster.event(training_body, "ClientRevoked",
                      f"{meta['name']} was deleted; its certificate is revoked")  # fmt: skip


def reconcile_client_and_training(
    cluster: Cluster, body: dict[str, Any], settings: OperatorSettings
) -> dict[str, Any]:
    """Reconcile a client; when its phase changed (enrolled, banned, revoked) its training too:
    the aggregator's Role names its clients and the population counts them. A resync that
    changes nothing leaves the training alone (it has its own resync)."""
    training_name = (body.get("spec") or {}).get("trainingRef", {}).get("name")
    namespace = body["metadata"]["namespace"]
    with training_lock(namespace, training_name):
        # read again under the lock: kopf's body can predate the status written a moment ago
        fresh = cluster.get(API_VERSION, KIND, body["metadata"]["name"], namespace)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return dict(body.get("status") or {})
        before = (fresh.get("status") or {}).get("phase")
        status = reconcile_client(cluster, fresh, settings)
        if status.get("phase") != before:
            training_body = cluster.get(API_VERSION, "FederatedTraining", training_name, namespace)
            if training_body is not None:
                reconcile_training(cluster, training_body, settings)
    return status
