"""One object per operator process that reads and writes the cluster.

Writes are server-side apply with the operator's field manager, so every field the operator sets
is recorded as its own and a user's or the aggregator's fields are never overwritten. Applying an
object identical to the last one this process applied less than ``reapply_seconds`` ago is
skipped (a hash per object): the periodic reconciliations of a hundred trainings then cost reads,
not writes, and an object someone else changed or deleted is still repaired within that time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from fedwarden.api.common import API_VERSION
from fedwarden.k8s.credentials import SERVICE_ACCOUNT_DIR, ServiceAccount

log = logging.getLogger("fedwarden.k8s")

OPERATOR_FIELD_MANAGER = "fedwarden-operator"


def client_configuration(
    kubeconfig: str | None = None, service_account_dir: Path | str = SERVICE_ACCOUNT_DIR
) -> k8s_client.Configuration:
    """``kubeconfig`` when given; else the service account in ``service_account_dir`` when it
    holds a token (in a pod; see :mod:`fedwarden.k8s.credentials`); else the default kubeconfig
    (``~/.kube/config``)."""
    configuration: k8s_client.Configuration
    if kubeconfig is None and ServiceAccount.present(service_account_dir):
        configuration = ServiceAccount.read(service_account_dir).configuration()
        return configuration
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


def connect(
    kubeconfig: str | None = None, service_account_dir: Path | str = SERVICE_ACCOUNT_DIR
) -> Cluster:
    """A :class:`Cluster` with the credentials of :func:`client_configuration`."""
    return Cluster(k8s_client.ApiClient(client_configuration(kubeconfig, service_account_dir)))


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Cluster:
    def __init__(self, api_client: k8s_client.ApiClient, *, reapply_seconds: float = 300.0) -> None:
        self.api_client = api_client
        self.dynamic = DynamicClient(api_client)
        self.reapply_seconds = reapply_seconds
        self._applied: dict[tuple[str, str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._endpoints: tuple[list[tuple[str, int]], float] | None = None
        self.requests = 0

    def _resource(self, api_version: str, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=api_version, kind=kind)

    # --- reads -----------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        self.requests += 1
        try:
            obj = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except NotFoundError:
            return None
        result: dict[str, Any] = obj.to_dict()
        return result

    def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        self.requests += 1
        objs = self._resource(api_version, kind).get(
            namespace=namespace, label_selector=label_selector
        )
        items: list[dict[str, Any]] = objs.to_dict()["items"]
        return items

    def trainings_clients(self, namespace: str, training: str) -> list[dict[str, Any]]:
        """The FLClients of ``namespace`` whose trainingRef names ``training``."""
        return [
            c
            for c in self.list_objects(API_VERSION, "FLClient", namespace)
            if c.get("spec", {}).get("trainingRef", {}).get("name") == training
        ]

    def api_server_endpoints(self) -> list[tuple[str, int]]:
        """Addresses of the API server (the ``kubernetes`` EndpointSlice in ``default``), read
        at most once a minute: every training's NetworkPolicy needs them."""
        with self._lock:
            cached = self._endpoints
        if cached is not None and time.monotonic() - cached[1] < 60:
            return cached[0]
        slices = self.list_objects(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "default",
            label_selector="kubernetes.io/service-name=kubernetes",
        )
        out = []
        for item in slices:
            ports = [p["port"] for p in item.get("ports") or [] if p.get("port")]
            for endpoint in item.get("endpoints") or []:
                for address in endpoint.get("addresses") or []:
                    out += [(address, port) for port in ports]
        endpoints = sorted(set(out))
        with self._lock:
            self._endpoints = (endpoints, time.monotonic())
        return endpoints

    # --- writes ----------------------------------------------------------------------------

    def apply(self, body: dict[str, Any], *, field_manager: str = OPERATOR_FIELD_MANAGER) -> None:
        """Server-side apply ``body`` (skipped when this process applied the same before)."""
        meta = body["metadata"]
        key = (body["apiVersion"], body["kind"], meta.get("namespace", ""), meta["name"])
        digest = _digest(body)
        if self._fresh(key, digest):
            return
        self.requests += 1
        self.dynamic.server_side_apply(
            self._resource(body["apiVersion"], body["kind"]),
            body=body,
            field_manager=field_manager,
            force_conflicts=True,
        )
        self._remember(key, digest)

    def _fresh(self, key: tuple[str, str, str, str], digest: str) -> bool:
        with self._lock:
            seen = self._applied.get(key)
        return (
            seen is not None
            and seen[0] == digest
            and time.monotonic() - seen[1] < self.reapply_seconds
        )

    def _remember(self, key: tuple[str, str, str, str], digest: str) -> None:
        with self._lock:
            self._applied[key] = (digest, time.monotonic())

    def forget(self, namespace: str, name_prefix: str = "") -> None:
        """Drop the apply cache of a namespace's objects (after they were deleted)."""
        with self._lock:
            for key in [
                k for k in self._applied if k[2] == namespace and k[3].startswith(name_prefix)
            ]:
                del self._applied[key]

    def apply_status(
        self,
        kind: str,
        name: str,
        namespace: str,
        status: dict[str, Any],
        *,
        field_manager: str = OPERATOR_FIELD_MANAGER,
    ) -> None:
        """Server-side apply of the ``status`` subresource of a fedwarden resource."""
        body = {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        key = (API_VERSION, kind + "/status", namespace, name)
        digest = _digest(body)
        if self._fresh(key, digest):
            return
        self.requests += 1
        self.dynamic.server_side_apply(
            self._resource(API_VERSION, kind).status,
            body=body,
            name=name,
            namespace=namespace,
            field_manager=field_manager,
            force_conflicts=True,
        )
        self._remember(key, digest)

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> bool:
        self.requests += 1
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace)
        except NotFoundError:
            return False
        return True

    def event(
        self,
        involved: dict[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = OPERATOR_FIELD_MANAGER,
    ) -> None:
        """Record an Event on ``involved`` (what ``kubectl describe`` and ``get events`` show)."""
        meta = involved["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # client-go's naming: <object>.<unique suffix> (generateName may not end in ".")
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "eventTime": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "reportingController": f"fedwarden.io/{component}",
            "reportingInstance": component,
            "action": reason,
            "reason": reason,
            "note": message[:1024],
            "type": "Warning" if warning else "Normal",
            "regarding": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
        }
        self.requests += 1
        try:
            self._resource("events.k8s.io/v1", "Event").create(
                body=body, namespace=meta["namespace"]
            )
        except ApiException as exc:  # an Event is never worth failing a reconciliation for
            log.warning(
                "could not record event %s on %s: %s %s", reason, meta["name"], exc.reason, exc.body
            )
