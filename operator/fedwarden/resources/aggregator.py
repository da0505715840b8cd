"""The aggregator of a FederatedTraining: its configuration, Job, Service, volume and RBAC."""

from __future__ import annotations

import json
from typing import Any

from fedwarden.api.aggregator_config import AggregatorSettings
from fedwarden.api.common import GROUP
from fedwarden.api.training import AggregatorSpec, AppSpec, FederatedTrainingSpec
from fedwarden.resources import names
from fedwarden.resources.apps import app_config_args
from fedwarden.resources.names import GRPC_PORT, METRICS_PORT, Owner
from fedwarden.resources.security import (
    container_security_context,
    pod_security_context,
    region_affinity,
)

CONFIG_KEY = "aggregator.json"
CONFIG_DIR = "/etc/fedwarden/config"
TLS_DIR = "/etc/fedwarden/tls"
TRUST_DIR = "/etc/fedwarden/trust"
STATE_DIR = "/var/lib/fedwarden"
#: the trained model and its provenance, on the checkpoint volume next to the checkpoint
MODEL_DIR = f"{STATE_DIR}/model"
#: an app's initial model, written by the init container in the app's image (the aggregator's
#: image has none of the app's code) onto an emptyDir the aggregator reads
INITIAL_MODEL_DIR = "/var/run/fedwarden/initial"
INITIAL_MODEL_FILE = f"{INITIAL_MODEL_DIR}/initial.safetensors"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def aggregator_settings(
    owner: Owner, spec: FederatedTrainingSpec, *, population: int
) -> AggregatorSettings:
    """The ``fedwarden aggregator --config`` file. Everything the spec decides is here, so the
    ConfigMap shows what runs; where things are inside the pod (paths, addresses, the initial
    model an app's init container writes) is on the Job's command line."""
    task = spec.task
    aggregation = spec.aggregation
    agg_params = {
        "f": aggregation.f,
        "beta": aggregation.beta,
        "m": aggregation.m,
        "tau": aggregation.tau,
        "preaggregation": aggregation.preaggregation,
        "bucket_size": aggregation.bucket_size,
        "block_size": aggregation.block_size,
        "filter_fraction": aggregation.filter_fraction,
        "min_share": aggregation.min_share,
    }
    return AggregatorSettings(
        kubernetes_status=f"{owner.namespace}/{owner.name}",
        quiet=True,
        log_level="info",
        rounds=spec.rounds,
        # an app's model comes from the file its init container writes (Job command line)
        task=task.builtin,
        model_seed=task.model_seed,
        data_seed=task.data_seed,
        fraction=spec.selection.fraction,
        min_clients=spec.selection.min_clients,
        min_available=spec.selection.min_available,
        sampling=spec.selection.sampling,
        round_timeout=float(spec.round_timeout_seconds),
        population=max(population, 1),
        strikes_to_ban=spec.free_riders.strikes_to_ban,
        clipping=spec.clipping.mode,
        clip_norm=spec.clipping.clip_norm,
        clip_quantile=spec.clipping.target_quantile,
        # unset, the free-rider tests are the pipeline recommendation's: off under DP-FedAvg
        free_rider_detection=spec.free_riders.enabled,
        dp=spec.privacy.mode,
        delta=spec.privacy.delta,
        target_epsilon=spec.privacy.target_epsilon,
        noise_multiplier=spec.privacy.noise_multiplier,
        accountant=spec.privacy.accountant,
        defence="recommended",
        aggregator=aggregation.method,
        agg_params=(
            None
            if aggregation.method is None
            else {k: v for k, v in agg_params.items() if v is not None}
        ),
    )


def config_map(owner: Owner, spec: FederatedTrainingSpec, *, population: int) -> dict[str, Any]:
    settings = aggregator_settings(owner, spec, population=population)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(
            names.aggregator_name(owner.name), names.training_labels(owner.name, "aggregator")
        ),
        "data": {CONFIG_KEY: json.dumps(settings.options(), indent=2, sort_keys=True) + "\n"},
    }


def checkpoint_claim(owner: Owner, spec: FederatedTrainingSpec) -> dict[str, Any]:
    storage = spec.aggregator.storage
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": owner.metadata(
            names.checkpoint_claim_name(owner.name),
            names.training_labels(owner.name, "aggregator"),
        ),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": storage.size}},
        },
    }
    if storage.storage_class_name is not None:
        claim["spec"]["storageClassName"] = storage.storage_class_name
    return claim


def job(owner: Owner, spec: FederatedTrainingSpec, *, config_hash: str) -> dict[str, Any]:
    """The aggregator runs to completion: exit 0 when the rounds are done or the budget is
    spent. A crash is retried (backoffLimit) and resumes from the checkpoint volume."""
    name = names.aggregator_name(owner.name)
    labels = names.training_labels(owner.name, "aggregator")
    # paths and addresses inside the pod go on the command line (the pod runner of the tests
    # rewrites them there); the training's settings are in the ConfigMap
    command = [
        "fedwarden", "aggregator",
        "--config", f"{CONFIG_DIR}/{CONFIG_KEY}",
        "--tls-dir", TLS_DIR,
        "--crl", f"{TRUST_DIR}/crl.pem",
        "--listen", f"0.0.0.0:{GRPC_PORT}",
        "--metrics-address", f"0.0.0.0:{METRICS_PORT}",
        "--checkpoint-dir", f"{STATE_DIR}/checkpoint",
        "--report-jsonl", f"{STATE_DIR}/report.jsonl",
        "--output-model", f"{STATE_DIR}/model",
        "--service-account-dir", SERVICE_ACCOUNT_DIR,
    ]  # fmt: skip
    app = spec.task.app
    if app is not None:
        command += ["--initial-model", INITIAL_MODEL_FILE, "--output-model", MODEL_DIR]
    container: dict[str, Any] = {
        "name": "aggregator",
        "image": spec.aggregator.image,
        "imagePullPolicy": spec.aggregator.image_pull_policy,
        "command": command,
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "trust", "mountPath": TRUST_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if spec.aggregator.resources is not None:
        container["resources"] = spec.aggregator.resources.to_k8s()
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": name}},
        {
            "name": "tls",
            "secret": {"secretName": names.aggregator_tls_secret_name(owner.name)},
        },
        {"name": "trust", "configMap": {"name": names.trust_configmap_name(owner.name)}},
        {
            "name": "state",
            "persistentVolumeClaim": {"claimName": names.checkpoint_claim_name(owner.name)},
        },
        {"name": "tmp", "emptyDir": {}},
    ]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "restartPolicy": "OnFailure",
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if app is not None:
        pod_spec["initContainers"] = [_initial_model_container(app, spec.aggregator)]
        container["volumeMounts"].append(
            {"name": "initial-model", "mountPath": INITIAL_MODEL_DIR, "readOnly": True}
        )
        volumes.append({"name": "initial-model", "emptyDir": {}})
    if spec.aggregator.node_selector:
        pod_spec["nodeSelector"] = dict(spec.aggregator.node_selector)
    if spec.data_residency is not None:
        pod_spec["affinity"] = region_affinity(spec.data_residency.allowed_regions)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(name, labels),
        "spec": {
            "backoffLimit": spec.aggregator.backoff_limit,
            # a suspended training suspends its Job: the pod goes, the checkpoint stays
            "suspend": spec.suspend,
            "template": {
                "metadata": {
                    "labels": labels,
                    # a changed configuration only reaches a new pod; the hash makes it visible
                    "annotations": {f"{GROUP}/config-hash": config_hash},
                },
                "spec": pod_spec,
            },
        },
    }


def _initial_model_container(app: AppSpec, aggregator: AggregatorSpec) -> dict[str, Any]:
    """The init container that writes an app's initial model, in the app's image: the
    aggregator takes the model from the app, never from a client, without running the app's
    code itself."""
    command = [
        "fedwarden", "model", "init",
        "--app", app.module, *app_config_args(app.config),
        "--out", INITIAL_MODEL_FILE,
    ]  # fmt: skip
    container: dict[str, Any] = {
        "name": "initial-model",
        "image": app.image,
        "imagePullPolicy": aggregator.image_pull_policy,
        "command": command,
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "initial-model", "mountPath": INITIAL_MODEL_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    # building the model takes about the memory the aggregator then holds it in
    if aggregator.resources is not None:
        container["resources"] = aggregator.resources.to_k8s()
    return container


def model_server(owner: Owner, spec: FederatedTrainingSpec) -> dict[str, Any]:
    """After the training, ``fedwarden model fetch`` still needs someone to serve the export:
    this Deployment runs ``fedwarden model serve`` on the checkpoint volume (read-only), with
    the aggregator's certificate and labels, so the aggregator's Service and endpoint reach
    it. It serves only ``FetchModel``, only to the training's reader, and goes with the
    training (owner reference; ``ttlSecondsAfterFinished``)."""
    name = names.model_server_name(owner.name)
    labels = names.training_labels(owner.name, "aggregator")
    command = [
        "fedwarden", "model", "serve", f"{STATE_DIR}/model",
        "--tls-dir", TLS_DIR,
        "--crl", f"{TRUST_DIR}/crl.pem",
        "--listen", f"0.0.0.0:{GRPC_PORT}",
    ]  # fmt: skip
    container: dict[str, Any] = {
        "name": "model-server",
        "image": spec.aggregator.image,
        "imagePullPolicy": spec.aggregator.image_pull_policy,
        "command": command,
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "trust", "mountPath": TRUST_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR, "readOnly": True},
        ],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # it talks to no API server
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {
                "name": "tls",
                "secret": {"secretName": names.aggregator_tls_secret_name(owner.name)},
            },
            {"name": "trust", "configMap": {"name": names.trust_configmap_name(owner.name)}},
            {
                "name": "state",
                "persistentVolumeClaim": {
                    "claimName": names.checkpoint_claim_name(owner.name),
                    "readOnly": True,
                },
            },
        ],
    }
    if spec.aggregator.node_selector:
        pod_spec["nodeSelector"] = dict(spec.aggregator.node_selector)
    if spec.data_residency is not None:
        pod_spec["affinity"] = region_affinity(spec.data_residency.allowed_regions)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(name, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {**labels, names.MODEL_SERVER_LABEL: "true"}},
            "template": {
                "metadata": {"labels": {**labels, names.MODEL_SERVER_LABEL: "true"}},
                "spec": pod_spec,
            },
        },
    }


def service(owner: Owner) -> dict[str, Any]:
    labels = names.training_labels(owner.name, "aggregator")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(names.aggregator_name(owner.name), labels),
        "spec": {
            "selector": labels,
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def service_account(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": owner.metadata(
            names.aggregator_name(owner.name), names.training_labels(owner.name, "aggregator")
        ),
    }


def role(owner: Owner, clients: list[str]) -> dict[str, Any]:
    """The aggregator may read its own training and write the status of it and of its clients,
    each named: nothing else (no list, no watch, no other resource)."""
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": [GROUP],
            "resources": ["federatedtrainings"],
            "resourceNames": [owner.name],
            "verbs": ["get"],
        },
        {
            "apiGroups": [GROUP],
            "resources": ["federatedtrainings/status"],
            "resourceNames": [owner.name],
            "verbs": ["get", "patch"],
        },
    ]
    # an empty resourceNames list would grant every FLClient: leave the rule out instead
    if clients:
        rules.append(
            {
                "apiGroups": [GROUP],
                "resources": ["flclients/status"],
                "resourceNames": sorted(clients),
                "verbs": ["get", "patch"],
            }
        )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": owner.metadata(
            names.aggregator_name(owner.name), names.training_labels(owner.name, "aggregator")
        ),
        "rules": rules,
    }


def role_binding(owner: Owner) -> dict[str, Any]:
    name = names.aggregator_name(owner.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": owner.metadata(name, names.training_labels(owner.name, "aggregator")),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }
