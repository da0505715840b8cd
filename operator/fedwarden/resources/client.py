"""An FLClient's in-cluster workload: ``fedwarden client`` (or a custom command) as a Job."""

from __future__ import annotations

from typing import Any

from fedwarden.api.client import DEFAULT_CLIENT_IMAGE, FLClientSpec
from fedwarden.api.training import FederatedTrainingSpec
from fedwarden.resources import names
from fedwarden.resources.apps import app_config_args
from fedwarden.resources.names import GRPC_PORT, Owner
from fedwarden.resources.security import (
    container_security_context,
    pod_security_context,
    region_affinity,
)

TLS_DIR = "/etc/fedwarden/tls"


def client_job(
    owner: Owner, spec: FLClientSpec, training_spec: FederatedTrainingSpec
) -> dict[str, Any]:
    """``owner`` is the FLClient. Raises ``ValueError`` when the FLClient has no workload."""
    workload = spec.workload
    if workload is None:
        raise ValueError(f"FLClient {owner.name} asks for no in-cluster workload")
    training = spec.training_ref.name
    host = names.aggregator_host(training, owner.namespace)
    server = f"{host}:{GRPC_PORT}"
    task = training_spec.task
    if workload.command is not None:
        command = list(workload.command)
    else:
        command = [
            "fedwarden", "client",
            "--tls-dir", TLS_DIR,
            "--server", server,
            "--server-name", host,
        ]  # fmt: skip
        if task.app is not None:
            # the app trains with its own settings: its config, not the built-in tasks' options
            command += ["--app", task.app.module, *app_config_args(task.app.config)]
        elif task.builtin is not None:
            command += ["--task", task.builtin]
            if task.data_seed is not None:
                command += ["--data-seed", str(task.data_seed)]
            command += [
                "--partition", workload.partition,
                "--local-epochs", str(workload.local_epochs),
                "--lr", str(workload.learning_rate),
                "--batch-size", str(workload.batch_size),
            ]  # fmt: skip
        command += ["--num-clients", str(workload.num_clients)]
        if workload.client_index is not None:
            command += ["--client-index", str(workload.client_index)]
        privacy = training_spec.privacy
        if privacy.mode == "record":
            # each site's budget, as the aggregator announces it, in the app's run_config:
            # the built-in app trains with DP-SGD to it, a user's app reads it (docs/privacy.md)
            assert privacy.target_epsilon is not None
            for setting in (
                f"dp-epsilon={privacy.target_epsilon}",
                f"dp-delta={privacy.delta}",
                f"dp-rounds={training_spec.rounds}",
            ):
                command += ["--app-config", setting]
        command += list(workload.extra_args or [])
    image = workload.image or (task.app.image if task.app is not None else DEFAULT_CLIENT_IMAGE)
    labels = names.client_labels(training, owner.name)
    container: dict[str, Any] = {
        "name": "client",
        "image": image,
        "imagePullPolicy": workload.image_pull_policy,
        "command": command,
        "env": [
            {"name": "FEDWARDEN_TLS_DIR", "value": TLS_DIR},
            {"name": "FEDWARDEN_SERVER", "value": server},
            {"name": "FEDWARDEN_SERVER_NAME", "value": host},
            {"name": "FEDWARDEN_CLIENT", "value": owner.name},
        ],
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if workload.resources is not None:
        container["resources"] = workload.resources.to_k8s()
    pod_spec: dict[str, Any] = {
        "restartPolicy": "OnFailure",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {"name": "tls", "secret": {"secretName": names.client_tls_secret_name(owner.name)}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if workload.node_selector:
        pod_spec["nodeSelector"] = dict(workload.node_selector)
    if spec.region is not None:
        pod_spec["affinity"] = region_affinity([spec.region])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(names.client_job_name(owner.name), labels),
        "spec": {
            "backoffLimit": 6,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
