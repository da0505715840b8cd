"""kopf handlers: registration only. Each wires an event to a reconciler.

Run with ``fedwarden operator`` (or ``kopf run -m fedwarden.controller.handlers``). Settings come
from the environment (:class:`~fedwarden.controller.settings.OperatorSettings`).
"""

from __future__ import annotations

import threading
from typing import Any

import kopf

from fedwarden.api.common import GROUP, VERSION
from fedwarden.controller import metrics
from fedwarden.controller.clients import finalize_client, reconcile_client_and_training
from fedwarden.controller.settings import OperatorSettings
from fedwarden.controller.training import finalize_training, reconcile_training
from fedwarden.k8s import Cluster, connect
from fedwarden.k8s.credentials import ServiceAccount
from fedwarden.resources.names import COMPONENT_LABEL, MANAGED_BY, TRAINING_LABEL

SETTINGS = OperatorSettings.from_env()
TRAININGS = (GROUP, VERSION, "federatedtrainings")
CLIENTS = (GROUP, VERSION, "flclients")
_cluster: Cluster | None = None
_cluster_lock = threading.Lock()


def cluster() -> Cluster:
    """The one API client of the process (handlers run on several threads at once)."""
    global _cluster
    with _cluster_lock:
        if _cluster is None:
            _cluster = connect(SETTINGS.kubeconfig, SETTINGS.service_account_dir)
        return _cluster


def _training(body: dict[str, Any]) -> None:
    c = cluster()
    metrics.measured(
        "FederatedTraining", lambda: reconcile_training(c, body, SETTINGS), lambda: c.requests
    )


def _client(body: dict[str, Any]) -> None:
    c = cluster()
    metrics.measured(
        "FLClient", lambda: reconcile_client_and_training(c, body, SETTINGS), lambda: c.requests
    )


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The same credentials as :func:`cluster`'s: ``KUBECONFIG`` when set; else the service
    account in ``SETTINGS.service_account_dir`` (kopf's own ``login_with_service_account``
    reads only the fixed in-cluster path and assumes ``https://kubernetes.default.svc``); else
    the default kubeconfig. kopf calls this again when the API server answers 401, so a
    rotated token is read anew."""
    if SETTINGS.kubeconfig is None and ServiceAccount.present(SETTINGS.service_account_dir):
        account = ServiceAccount.read(SETTINGS.service_account_dir)
        return kopf.ConnectionInfo(
            server=account.server,
            ca_path=str(account.ca_path),
            token=account.token,
            default_namespace=account.namespace,
            trust_env=settings.networking.trust_env,
        )
    # kopf's own parser reads $KUBECONFIG (else ~/.kube/config) when called
    info: kopf.ConnectionInfo | None = kopf.login_with_kubeconfig(settings=settings, **kwargs)
    return info


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping goes into annotations under our group, not into the status we own
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.enabled = False  # Events are written by fedwarden.k8s, with reasons
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8


@kopf.on.resume(*TRAININGS)
@kopf.on.create(*TRAININGS)
@kopf.on.update(*TRAININGS, field="spec")
def training_changed(body: kopf.Body, **_: Any) -> None:
    _training(dict(body))


@kopf.timer(*TRAININGS, interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds)
def training_resync(body: kopf.Body, **_: Any) -> None:
    _training(dict(body))


@kopf.on.delete(*TRAININGS)
def training_deleted(body: kopf.Body, **_: Any) -> None:
    finalize_training(cluster(), dict(body), SETTINGS)


@kopf.on.event(
    "batch",
    "v1",
    "jobs",
    labels={"app.kubernetes.io/managed-by": MANAGED_BY, COMPONENT_LABEL: "aggregator"},
)
def aggregator_job_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    namespace = body["metadata"]["namespace"]
    training = cluster().get(
        f"{GROUP}/{VERSION}",
        "FederatedTraining",
        body["metadata"]["labels"][TRAINING_LABEL],
        namespace,
    )
    if training is not None and training["metadata"].get("deletionTimestamp") is None:
        _training(training)


@kopf.on.resume(*CLIENTS)
@kopf.on.create(*CLIENTS)
@kopf.on.update(*CLIENTS, field="spec")
@kopf.on.field(*CLIENTS, field="status.banReason")
def client_changed(body: kopf.Body, **_: Any) -> None:
    _client(dict(body))


@kopf.timer(*CLIENTS, interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds)
def client_resync(body: kopf.Body, **_: Any) -> None:
    _client(dict(body))


@kopf.on.delete(*CLIENTS)
def client_deleted(body: kopf.Body, **_: Any) -> None:
    finalize_client(cluster(), dict(body), SETTINGS)
