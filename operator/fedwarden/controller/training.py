"""Reconciling a FederatedTraining: certificates, the aggregator's objects, the status.

Level-based and idempotent: every call looks at the cluster as it is and makes it as it should
be, so a restarted operator recovers from the cluster alone and a repeated call changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
from typing import Any

from fedwarden.api.common import API_VERSION
from fedwarden.api.training import FederatedTraining
from fedwarden.controller import certificates as pki_store
from fedwarden.controller.settings import OperatorSettings
from fedwarden.k8s import Cluster
from fedwarden.resources import aggregator, names, network
from fedwarden.resources.names import Owner
from fedwarden.resources.status import (
    ConditionValue,
    TrainingState,
    merge_conditions,
    now_rfc3339,
    training_status,
)

log = logging.getLogger("fedwarden.controller")

KIND = "FederatedTraining"
SUSPEND_FIELD_MANAGER = "fedwarden-operator-suspend"
FINISHED = ("Succeeded", "Failed")
_PHASE_EVENTS = {
    "Running": ("Started", "the aggregator is running", False),
    "Succeeded": ("Succeeded", "", False),
    "Failed": ("Failed", "", True),
    "Suspended": ("Suspended", "spec.suspend is true", False),
}


_locks: dict[tuple[str, str], threading.RLock] = {}
_locks_guard = threading.Lock()


def training_lock(namespace: str, name: str) -> threading.RLock:
    """One lock per training: kopf runs handlers in a thread pool, and the handlers of a
    training and of its clients all read-modify-write the training's CA and revocation list."""
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.RLock())


def owner_of(body: dict[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(KIND, meta["name"], meta["namespace"], meta["uid"])


def _config_hash(config_map: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config_map["data"], sort_keys=True).encode()).hexdigest()[:16]


def reconcile_training(
    cluster: Cluster, body: dict[str, Any], settings: OperatorSettings
) -> dict[str, Any]:
    """Make the cluster match one FederatedTraining; returns the status written.

    The training is read again under its lock: kopf hands over the body of the event that
    triggered the handler, which can predate the status this operator wrote a moment ago."""
    meta = body["metadata"]
    with training_lock(meta["namespace"], meta["name"]):
        fresh = cluster.get(API_VERSION, KIND, meta["name"], meta["namespace"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return dict(body.get("status") or {})
        return _reconcile_training(cluster, fresh, settings)


def _reconcile_training(
    cluster: Cluster, body: dict[str, Any], settings: OperatorSettings
) -> dict[str, Any]:
    training = FederatedTraining.model_validate(
        {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    )
    spec = training.spec
    owner = owner_of(body)
    reported: dict[str, Any] = dict(body.get("status") or {})
    previous_phase = reported.get("phase")
    now = dt.datetime.now(dt.UTC)

    if previous_phase in FINISHED and _ttl_expired(reported, spec.ttl_seconds_after_finished, now):
        cluster.delete(API_VERSION, KIND, owner.name, owner.namespace)
        cluster.event(body, "Deleted", "ttlSecondsAfterFinished elapsed")
        return reported

    pki, created = pki_store.load_or_create(cluster, owner, settings.trust_domain)
    pki.refresh_if_due(now)
    pki_store.publish_trust(cluster, owner, pki)
    server_cert, issued = pki_store.ensure_server_certificate(
        cluster, owner, pki, spec.certificates, now
    )
    pki_store.ensure_reader_certificate(cluster, owner, pki, spec.certificates, now)
    if created:
        cluster.event(body, "CertificateAuthorityCreated", f"CA {pki.ca.subject}")
    if issued is not None:
        until = f"valid until {server_cert.not_valid_after_utc:%FT%TZ}"
        cluster.event(body, issued, f"aggregator certificate {until}")

    clients = cluster.trainings_clients(owner.namespace, owner.name)
    client_names = sorted(c["metadata"]["name"] for c in clients)
    enrolled = [
        c for c in clients if (c.get("status") or {}).get("phase") in ("Enrolled", "Active")
    ]
    config_map = aggregator.config_map(owner, spec, population=max(len(enrolled), 1))
    objects = [
        aggregator.service_account(owner),
        aggregator.role(owner, client_names),
        aggregator.role_binding(owner),
        config_map,
        aggregator.checkpoint_claim(owner, spec),
        aggregator.service(owner),
        *network.network_policies(
            owner,
            spec,
            [network.APIServerEndpoint(ip, port) for ip, port in cluster.api_server_endpoints()],
        ),
    ]
    for obj in objects:
        cluster.apply(obj)

    job_name = names.aggregator_name(owner.name)
    job = cluster.get("batch/v1", "Job", job_name, owner.namespace)
    if job is None and previous_phase not in FINISHED:
        cluster.apply(aggregator.job(owner, spec, config_hash=_config_hash(config_map)))
        job = cluster.get("batch/v1", "Job", job_name, owner.namespace)
    elif job is not None and bool(job["spec"].get("suspend")) != spec.suspend:
        # a Job's pod template is immutable; suspend is not, and has its own field manager
        cluster.apply(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": job_name, "namespace": owner.namespace},
                "spec": {"suspend": spec.suspend},
            },
            field_manager=SUSPEND_FIELD_MANAGER,
        )

    state = TrainingState(
        spec=spec,
        generation=int(body["metadata"].get("generation") or 0),
        job=job,
        certificates_ready=True,
        certificates_message=(
            f"aggregator certificate valid until {server_cert.not_valid_after_utc:%FT%TZ}"
        ),
        enrolled_clients=len(enrolled),
        reported=reported,
    )
    if previous_phase in FINISHED and job is None:
        cluster.apply(aggregator.model_server(owner, spec))
        return reported  # finished earlier and the Job is gone: the status stays as it was
    status = training_status(state, now_rfc3339())
    if status["phase"] in FINISHED:
        # the aggregator has exited: the model is served from its volume from now on
        cluster.apply(aggregator.model_server(owner, spec))
    status["aggregatorEndpoint"] = f"{names.aggregator_host(owner.name, owner.namespace)}:8443"
    cluster.apply_status(KIND, owner.name, owner.namespace, status)
    if status["phase"] != previous_phase and status["phase"] in _PHASE_EVENTS:
        reason, message, warning = _PHASE_EVENTS[status["phase"]]
        cluster.event(body, reason, message or status["message"], warning=warning)
    return status


def _ttl_expired(status: dict[str, Any], ttl: int | None, now: dt.datetime) -> bool:
    done = status.get("completionTime")
    if ttl is None or not done:
        return False
    finished = dt.datetime.fromisoformat(done.replace("Z", "+00:00"))
    return now >= finished + dt.timedelta(seconds=ttl)


def finalize_training(cluster: Cluster, body: dict[str, Any], settings: OperatorSettings) -> None:
    """Before a training goes: revoke every certificate it issued and delete the clients' keys.
    The objects it owns are then deleted by the garbage collector (owner references)."""
    owner = owner_of(body)
    with training_lock(owner.namespace, owner.name):
        _finalize_training(cluster, owner, settings)


def _finalize_training(cluster: Cluster, owner: Owner, settings: OperatorSettings) -> None:
    secret = cluster.get("v1", "Secret", names.ca_secret_name(owner.name), owner.namespace)
    clients = cluster.trainings_clients(owner.namespace, owner.name)
    if secret is not None:
        pki, _ = pki_store.load_or_create(cluster, owner, settings.trust_domain)
        for client in clients:
            cert = pki_store.client_certificate(
                cluster, client["metadata"]["name"], owner.namespace
            )
            if cert is not None and cert.issuer == pki.ca.certificate.subject:
                pki.revoke(cert.serial_number, "cessation-of-operation")
        pki_store.publish_trust(cluster, owner, pki)
    for client in clients:
        name = client["metadata"]["name"]
        cluster.delete("v1", "Secret", names.client_tls_secret_name(name), owner.namespace)
        cluster.delete("batch/v1", "Job", names.client_job_name(name), owner.namespace)
        message = f"training {owner.name} was deleted; its certificate is revoked"
        generation = int(client["metadata"].get("generation") or 0)
        # Ready=False for the current generation: kstatus (Flux) and Argo CD then read the
        # client as failed, not as "Current" or still in progress.
        status = {
            "phase": "Revoked",
            "message": message,
            "observedGeneration": generation,
            "conditions": merge_conditions(
                (client.get("status") or {}).get("conditions") or [],
                [ConditionValue("Ready", False, "TrainingDeleted", message)],
                generation,
                now_rfc3339(),
            ),
        }
        cluster.apply_status("FLClient", name, owner.namespace, status)
        cluster.event(client, "Revoked", message, warning=True)
    cluster.forget(owner.namespace, owner.name)
