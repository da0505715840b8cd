"""The API server itself refuses bad FederatedTrainings and FLClients, naming the field: the
OpenAPI schema and the CEL rules generated from fedwarden.api (issue: at least 15 cases)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from tests.k8s.operator_support import REPO, crds  # noqa: F401

from fedwarden.testing.controlplane import ControlPlane

GOOD_TRAINING: dict[str, Any] = {
    "apiVersion": "fedwarden.io/v1alpha1",
    "kind": "FederatedTraining",
    "metadata": {"name": "t"},
    "spec": {"rounds": 5, "task": {"builtin": "digits-logreg"}},
}
GOOD_CLIENT: dict[str, Any] = {
    "apiVersion": "fedwarden.io/v1alpha1",
    "kind": "FLClient",
    "metadata": {"name": "site-1"},
    "spec": {"trainingRef": {"name": "t"}, "issueKey": True},
}
CSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
APP = {"module": "hospital.model:client_fn", "image": "registry.example/hospital:1"}
APP_TRAINING = copy.deepcopy(GOOD_TRAINING)
APP_TRAINING["metadata"]["name"] = "app"
APP_TRAINING["spec"]["task"] = {"app": {**APP, "config": {"local-epochs": "2"}}}


def _with(base: dict[str, Any], **spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    for key, value in spec.items():
        if value is None:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    return obj


# (resource, what the message must name)
REFUSED = [
    (_with(GOOD_TRAINING, rounds=0), "spec.rounds"),
    (_with(GOOD_TRAINING, rounds="ten"), "spec.rounds"),
    (_with(GOOD_TRAINING, task=None), "spec.task"),
    (_with(GOOD_TRAINING, task={"builtin": "Digits MLP"}), "spec.task.builtin"),
    # a task is a built-in task or an app: both and neither are refused, naming the fields
    (_with(GOOD_TRAINING, task={"builtin": "digits-logreg", "app": APP}),
     "spec.task: Invalid value: set exactly one of task.builtin"),
    (_with(GOOD_TRAINING, task={}),
     "spec.task: Invalid value: set exactly one of task.builtin"),
    (_with(GOOD_TRAINING, task={"app": {**APP, "module": "hospital.model"}}),
     "spec.task.app.module"),
    (_with(GOOD_TRAINING, task={"app": {**APP, "module": "hospital/model.py:fn"}}),
     "spec.task.app.module"),
    (_with(GOOD_TRAINING, task={"app": {"module": APP["module"]}}), "spec.task.app.image"),
    (_with(GOOD_TRAINING, task={"app": {**APP, "config": {"epochs=2": "1"}}}),
     "spec.task.app.config"),
    (_with(GOOD_TRAINING, task={"app": APP, "modelSeed": 1}), "task.modelSeed and task.dataSeed"),
    (_with(GOOD_TRAINING, aggregation={"method": "teleport"}), "spec.aggregation.method"),
    (_with(GOOD_TRAINING, aggregation={"method": "trimmed-mean", "beta": 0.5}),
     "spec.aggregation.beta"),
    (_with(GOOD_TRAINING, aggregation={"method": "bulyan", "f": 2},
           selection={"minClients": 8, "minAvailable": 10}), "bulyan needs at least 4f+3"),
    (_with(GOOD_TRAINING, aggregation={"method": "krum"}), "spec.aggregation.f"),
    (_with(GOOD_TRAINING, aggregation={"method": "centered-clip"}), "spec.aggregation.tau"),
    (_with(GOOD_TRAINING, aggregation={"beta": 0.1}), "spec.aggregation.method"),
    (_with(GOOD_TRAINING, aggregation={"method": "median", "blockSize": 64}),
     "spec.aggregation.blockSize"),
    (_with(GOOD_TRAINING, aggregation={"method": "median", "filterFraction": 0.1}),
     "spec.aggregation.filterFraction"),
    (_with(GOOD_TRAINING, aggregation={"method": "block-dnc", "minShare": 0.2}),
     "spec.aggregation.minShare"),
    (_with(GOOD_TRAINING, aggregation={"method": "block-dnc", "filterFraction": 0.5}),
     "spec.aggregation.filterFraction"),
    (_with(GOOD_TRAINING, privacy={"mode": "central"}), "targetEpsilon or noiseMultiplier"),
    (_with(GOOD_TRAINING, privacy={"mode": "central", "targetEpsilon": 1, "delta": 0.5}),
     "spec.privacy.delta"),
    (_with(GOOD_TRAINING, privacy={"mode": "none", "targetEpsilon": 1}), "need mode central"),
    (_with(GOOD_TRAINING, compliance={"profile": "gdpr"},
           dataResidency={"allowedRegions": ["eu"]}), "gdpr requires privacy"),
    (_with(GOOD_TRAINING, compliance={"profile": "gdpr"},
           privacy={"mode": "central", "targetEpsilon": 2},
           dataResidency={"allowedRegions": ["eu"]}), "targetEpsilon <= 1"),
    (_with(GOOD_TRAINING, compliance={"profile": "gdpr"},
           privacy={"mode": "central", "targetEpsilon": 1}), "spec.dataResidency"),
    # record-level DP: each site's budget is targetEpsilon; the sites calibrate their own σ
    (_with(GOOD_TRAINING, privacy={"mode": "record"}), "privacy mode record needs targetEpsilon"),
    (_with(GOOD_TRAINING, privacy={"mode": "record", "targetEpsilon": 1, "noiseMultiplier": 2}),
     "and no noiseMultiplier"),
    (_with(GOOD_TRAINING, compliance={"profile": "gdpr"},
           privacy={"mode": "record", "targetEpsilon": 2},
           dataResidency={"allowedRegions": ["eu"]}), "targetEpsilon <= 1"),
    (_with(GOOD_TRAINING, selection={"minClients": 5, "minAvailable": 3}),
     "spec.selection.minClients"),
    (_with(GOOD_TRAINING, selection={"fraction": 1.5}), "spec.selection.fraction"),
    (_with(GOOD_TRAINING, certificates={"duration": "3 days"}), "spec.certificates.duration"),
    (_with(GOOD_TRAINING, certificates={"duration": "1h", "renewBefore": "2h"}),
     "spec.certificates.renewBefore"),
    (_with(GOOD_TRAINING, network={"allowedCidrs": ["not-a-cidr"]}), "spec.network.allowedCidrs"),
    (_with(GOOD_TRAINING, clipping={"mode": "sometimes"}), "spec.clipping.mode"),
    # central DP without a method is DP-FedAvg, which cannot run the free-rider tests
    (_with(GOOD_TRAINING, privacy={"mode": "central", "targetEpsilon": 1},
           freeRiders={"enabled": True}), "spec.freeRiders.enabled"),
    (_with(GOOD_TRAINING, unknownField=1), "unknownField"),
    (_with(GOOD_CLIENT, issueKey=False), "exactly one of csr"),
    (_with(GOOD_CLIENT, csr=CSR), "exactly one of csr"),
    (_with(GOOD_CLIENT, issueKey=None, csr=CSR, workload={}), "spec.workload"),
    (_with(GOOD_CLIENT, workload={"partition": "random"}), "spec.workload.partition"),
    (_with(GOOD_CLIENT, trainingRef=None), "spec.trainingRef"),
]  # fmt: skip


@pytest.mark.parametrize(("manifest", "field"), REFUSED, ids=[f for _, f in REFUSED])
def test_bad_resource_is_refused_naming_the_field(
    crds: ControlPlane,  # noqa: F811
    kube_namespace: str,
    manifest: dict[str, Any],
    field: str,
) -> None:
    result = crds.kubectl(
        "create", "--validate=strict", "-n", kube_namespace, "-f", "-",
        input=json.dumps(manifest), check=False,
    )  # fmt: skip
    assert result.returncode != 0, f"accepted: {manifest}"
    assert field in result.stderr, result.stderr


UPDATES = [
    ("FederatedTraining", {"privacy": {"mode": "central", "targetEpsilon": 9.0}}, "immutable"),
    ("FederatedTraining", {"rounds": 2}, "spec.rounds"),
    ("FederatedTraining", {"task": {"builtin": "wine-mlp"}}, "spec.task"),
    ("FederatedTraining", {"task": {"builtin": None, "app": APP}}, "task is immutable"),
    ("FLClient", {"trainingRef": {"name": "other"}}, "spec.trainingRef"),
]


@pytest.mark.parametrize(("kind", "change", "field"), UPDATES, ids=[u[2] for u in UPDATES])
def test_immutable_fields_are_refused_on_update(
    crds: ControlPlane,  # noqa: F811
    kube_namespace: str,
    kind: str,
    change: dict[str, Any],
    field: str,
) -> None:
    base = copy.deepcopy(GOOD_TRAINING if kind == "FederatedTraining" else GOOD_CLIENT)
    if kind == "FederatedTraining":
        base["spec"]["privacy"] = {"mode": "central", "targetEpsilon": 1.0}
    crds.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(base))
    resource = "federatedtraining" if kind == "FederatedTraining" else "flclient"
    result = crds.kubectl(
        "patch", resource, base["metadata"]["name"], "-n", kube_namespace, "--type=merge",
        "-p", json.dumps({"spec": change}), check=False,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize("mode", ["record", "central", "local"])
def test_gdpr_accepts_record_level_and_client_level_dp_at_epsilon_1(
    crds: ControlPlane,  # noqa: F811
    kube_namespace: str,
    mode: str,
) -> None:
    manifest = _with(
        GOOD_TRAINING,
        compliance={"profile": "gdpr"},
        privacy={"mode": mode, "targetEpsilon": 1},
        dataResidency={"allowedRegions": ["eu"]},
    )
    crds.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", "-",
                 input=json.dumps(manifest))  # fmt: skip


def test_examples_and_defaults_are_accepted(crds: ControlPlane, kube_namespace: str) -> None:  # noqa: F811
    for path in [REPO / "examples" / "training.yaml", REPO / "examples" / "clients.yaml",
                 REPO / "examples" / "gdpr" / "training.yaml",
                 REPO / "examples" / "gdpr" / "consortium.yaml",
                 REPO / "examples" / "apps" / "site-image" / "training.yaml"]:  # fmt: skip
        crds.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", str(path))
    # the recommendation without DP, spelled out: every rule and parameter can be named
    recommended = {"method": "block-dnc", "blockSize": 64, "filterFraction": 0.2,
                   "preaggregation": "dnc", "minShare": 0.2}  # fmt: skip
    crds.kubectl("create", "--dry-run=server", "-n", kube_namespace, "-f", "-",
                 input=json.dumps(_with(GOOD_TRAINING, aggregation=recommended)))  # fmt: skip
    crds.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(GOOD_TRAINING))
    crds.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(APP_TRAINING))
    stored_app = yaml.safe_load(
        crds.kubectl("get", "ft", "app", "-n", kube_namespace, "-o", "yaml").stdout
    )
    # no seeds stored for an app (a schema default would break its own rule)
    assert stored_app["spec"]["task"] == APP_TRAINING["spec"]["task"]
    stored = yaml.safe_load(
        crds.kubectl("get", "ft", "t", "-n", kube_namespace, "-o", "yaml").stdout
    )
    # the schema's defaults fill in what the user left out
    assert stored["spec"]["selection"]["minClients"] == 2
    assert stored["spec"]["privacy"]["mode"] == "none"
    assert stored["spec"]["certificates"]["duration"] == "2160h"
    # no default: unset, the free-rider tests follow the pipeline's recommendation
    assert stored["spec"]["freeRiders"] == {"strikesToBan": 3}
    columns = crds.kubectl("get", "ft", "-n", kube_namespace).stdout.split("\n")[0].split()
    assert columns == [
        "NAME", "PHASE", "ROUND", "ROUNDS", "EPSILON", "UNIT", "CLIENTS", "BANNED", "AGE"
    ]  # fmt: skip
