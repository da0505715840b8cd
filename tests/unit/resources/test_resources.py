"""The manifests the operator renders, checked as data (the API server checks them too:
tests/k8s applies every one with --dry-run=server)."""

from __future__ import annotations

from typing import Any

import pytest

from fedwarden import __version__
from fedwarden.api import FederatedTraining, FLClient
from fedwarden.api.client import DEFAULT_CLIENT_IMAGE
from fedwarden.resources import aggregator, client, network, security
from fedwarden.resources.names import Owner
from fedwarden.resources.status import TrainingState, client_phase, training_status

OWNER = Owner("FederatedTraining", "mnist", "team-a", "uid-1")


def _spec(**spec: object):  # type: ignore[no-untyped-def]
    return FederatedTraining.model_validate(
        {"spec": {"rounds": 5, "task": {"builtin": "digits-mlp"}, **spec}}
    ).spec


def test_role_names_its_own_training_and_clients_only() -> None:
    role = aggregator.role(OWNER, ["site-b", "site-a"])
    for rule in role["rules"]:
        assert rule["resourceNames"]
        assert "list" not in rule["verbs"]
        assert "watch" not in rule["verbs"]
    assert role["rules"][-1]["resourceNames"] == ["site-a", "site-b"]
    # no clients: no FLClient rule at all (empty resourceNames would mean every FLClient)
    assert all(
        "flclients/status" not in r["resources"] for r in aggregator.role(OWNER, [])["rules"]
    )


def test_job_is_restricted_and_keeps_checkpoints_on_a_claim() -> None:
    spec = _spec(dataResidency={"allowedRegions": ["eu-west"]}, suspend=True)
    job = aggregator.job(OWNER, spec, config_hash="abc")
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["suspend"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims[0]["persistentVolumeClaim"]["claimName"] == "mnist-checkpoints"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["eu-west"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_network_policies_deny_by_default_and_open_only_grpc() -> None:
    spec = _spec(network={"allowedNamespaces": ["site-ns"], "allowedCidrs": ["203.0.113.0/24"]})
    policies = network.network_policies(OWNER, spec, [network.APIServerEndpoint("10.0.0.1", 6443)])
    by_name = {p["metadata"]["name"]: p["spec"] for p in policies}
    deny = by_name["mnist-default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    agg = by_name["mnist-aggregator"]
    assert agg["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8443}]
    sources = agg["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "203.0.113.0/24"}} in sources
    assert sources[1]["namespaceSelector"]["matchExpressions"][0]["values"] == ["site-ns"]
    api = agg["egress"][1]
    assert api == {
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
        "ports": [{"protocol": "TCP", "port": 6443}],
    }


def test_client_job_dials_the_service_name() -> None:
    flc = FLClient.model_validate(
        {"spec": {"trainingRef": {"name": "mnist"}, "issueKey": True,
                  "workload": {"clientIndex": 3, "numClients": 10}}}
    )  # fmt: skip
    owner = Owner("FLClient", "site-3", "team-a", "uid-3")
    job = client.client_job(owner, flc.spec, _spec())
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["fedwarden", "client"]
    assert command[command.index("--server") + 1] == "mnist-aggregator.team-a.svc:8443"
    assert command[command.index("--client-index") + 1] == "3"
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    with pytest.raises(ValueError, match="no in-cluster workload"):
        client.client_job(owner, flc.spec.model_copy(update={"workload": None}), _spec())


APP_TASK = {
    "app": {
        "module": "hospital.model:client_fn",
        "image": "registry.example/hospital:1",
        "config": {"local-epochs": "2", "batch-size": "32"},
    }
}
APP_CONFIG_ARGS = ["--app-config", "batch-size=32", "--app-config", "local-epochs=2"]


def _client(**workload: object) -> FLClient:
    return FLClient.model_validate(
        {"spec": {"trainingRef": {"name": "mnist"}, "issueKey": True,
                  "workload": {"clientIndex": 3, "numClients": 10, **workload}}}
    )  # fmt: skip


def _client_container(training: object, **workload: object) -> dict[str, Any]:
    owner = Owner("FLClient", "site-3", "team-a", "uid-3")
    job = client.client_job(owner, _client(**workload).spec, training)  # type: ignore[arg-type]
    container: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return container


def test_a_builtin_task_runs_in_the_client_image() -> None:
    container = _client_container(_spec(task={"builtin": "digits-mlp", "dataSeed": 4}))
    command = container["command"]
    assert container["image"] == DEFAULT_CLIENT_IMAGE
    assert command[command.index("--task") + 1] == "digits-mlp"
    assert command[command.index("--data-seed") + 1] == "4"
    assert command[command.index("--partition") + 1] == "iid"
    assert "--app" not in command
    # without a seed in the spec, the command's default (the aggregator's too)
    assert "--data-seed" not in _client_container(_spec())["command"]


def test_an_app_runs_in_its_image_with_its_config() -> None:
    container = _client_container(_spec(task=APP_TASK), extraArgs=["--app-config", "site=a"])
    command = container["command"]
    assert container["image"] == "registry.example/hospital:1"
    assert command[command.index("--app") + 1] == "hospital.model:client_fn"
    # the shard becomes the app's node_config: partition-id, num-partitions
    assert command[command.index("--client-index") + 1] == "3"
    assert command[command.index("--num-clients") + 1] == "10"
    i = command.index("--app-config")
    assert command[i : i + 4] == APP_CONFIG_ARGS
    assert command[-2:] == ["--app-config", "site=a"]  # a site's own, after the training's
    # the built-in tasks' options are not the app's
    for option in ("--task", "--data-seed", "--partition", "--local-epochs", "--lr"):
        assert option not in command
    # a site may run the app from its own build of the image
    override = _client_container(_spec(task=APP_TASK), image="registry.site-b/hospital:1-b")
    assert override["image"] == "registry.site-b/hospital:1-b"
    assert override["command"] == command[:-2]


def test_an_app_s_initial_model_comes_from_its_image_before_the_aggregator_starts() -> None:
    spec = _spec(task=APP_TASK, aggregator={"resources": {"limits": {"memory": "2Gi"}}})
    pod = aggregator.job(OWNER, spec, config_hash="h")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example/hospital:1"
    assert init["command"] == [
        "fedwarden", "model", "init", "--app", "hospital.model:client_fn", *APP_CONFIG_ARGS,
        "--out", aggregator.INITIAL_MODEL_FILE,
    ]  # fmt: skip
    assert init["securityContext"] == security.container_security_context()
    assert init["resources"] == {"limits": {"memory": "2Gi"}}
    container = pod["containers"][0]
    assert container["image"] == f"ghcr.io/fedwarden/aggregator:{__version__}"  # not the app's
    command = container["command"]
    assert command[command.index("--initial-model") + 1] == aggregator.INITIAL_MODEL_FILE
    assert command[command.index("--output-model") + 1] == aggregator.MODEL_DIR
    assert "--app" not in command
    # the file passes through an emptyDir: written by the init container, read by the aggregator
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["initial-model"] == {
        "name": "initial-model",
        "mountPath": aggregator.INITIAL_MODEL_DIR,
        "readOnly": True,
    }
    assert aggregator.INITIAL_MODEL_FILE.startswith(aggregator.INITIAL_MODEL_DIR + "/")
    assert {"name": "initial-model", "mountPath": aggregator.INITIAL_MODEL_DIR} in init[
        "volumeMounts"
    ]
    assert {"name": "initial-model", "emptyDir": {}} in pod["volumes"]
    # the trained model lands on the checkpoint volume
    assert aggregator.MODEL_DIR.startswith(mounts["state"]["mountPath"] + "/")
    settings = aggregator.aggregator_settings(OWNER, spec, population=3)
    assert (settings.task, settings.app, settings.model_seed) == (None, None, None)


def test_a_builtin_task_s_aggregator_has_no_init_container() -> None:
    pod = aggregator.job(OWNER, _spec(), config_hash="h")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert "--initial-model" not in pod["containers"][0]["command"]
    assert aggregator.aggregator_settings(OWNER, _spec(), population=3).task == "digits-mlp"


def test_under_record_level_dp_the_builtin_client_trains_with_dp_sgd_to_the_budget() -> None:
    flc = FLClient.model_validate(
        {"spec": {"trainingRef": {"name": "mnist"}, "issueKey": True, "workload": {}}}
    )
    owner = Owner("FLClient", "site-3", "team-a", "uid-3")
    spec = _spec(privacy={"mode": "record", "targetEpsilon": 1.0})
    command = client.client_job(owner, flc.spec, spec)["spec"]["template"]["spec"]["containers"][0][
        "command"
    ]
    settings = [command[i + 1] for i, arg in enumerate(command) if arg == "--app-config"]
    assert settings == ["dp-epsilon=1.0", "dp-delta=1e-05", "dp-rounds=5"]
    settings = aggregator.aggregator_settings(OWNER, spec, population=3)
    assert settings.dp == "record"
    assert settings.target_epsilon == 1.0


def _job(active: int = 0, ready: int = 0, condition: str | None = None) -> dict[str, object]:
    status: dict[str, object] = {"active": active, "ready": ready}
    if condition:
        status["conditions"] = [
            {"type": condition, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]
    return {"status": status}


def _state(spec, job, reported=None):  # type: ignore[no-untyped-def]
    return TrainingState(spec, 2, job, True, "ok", 3, reported or {})


def test_phases_and_conditions() -> None:
    spec = _spec(privacy={"mode": "central", "targetEpsilon": 1.0})
    running = training_status(_state(spec, _job(active=1, ready=1)), "T1")
    assert running["phase"] == "Running"
    conditions = {c["type"]: c for c in running["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["observedGeneration"] == 2
    assert conditions["PrivacyBudgetAvailable"]["reason"] == "WithinBudget"
    # budget spent before the last round: Succeeded by default, with the reason
    spent = training_status(
        _state(spec, _job(condition="Complete"), {"round": 3, "epsilonSpent": 0.98, **running}),
        "T2",
    )
    assert spent["phase"] == "Succeeded"
    conditions = {c["type"]: c for c in spent["conditions"]}
    assert conditions["PrivacyBudgetAvailable"]["reason"] == "BudgetExhausted"
    assert conditions["Ready"]["lastTransitionTime"] == "T1"  # still True: time kept
    assert conditions["AggregatorReady"]["lastTransitionTime"] == "T2"
    failing = _spec(privacy={"mode": "central", "targetEpsilon": 1.0, "onBudgetExhausted": "Fail"})
    assert (
        training_status(_state(failing, _job(condition="Complete"), {"round": 3}), "T")["phase"]
        == "Failed"
    )
    assert training_status(_state(_spec(), _job(condition="Failed")), "T")["phase"] == "Failed"
    assert training_status(_state(_spec(suspend=True), _job()), "T")["phase"] == "Suspended"
    assert training_status(_state(_spec(), None), "T")["phase"] == "Pending"


def test_a_lost_privacy_state_fails_the_training_whatever_its_job_does() -> None:
    spec = _spec(privacy={"mode": "central", "targetEpsilon": 1.0})
    lost = {"round": 3, "epsilonSpent": 0.6, "privacyStateLost": "privacy state lost: ..."}
    for job in (_job(active=1), _job(condition="Failed"), _job(condition="Complete")):
        status = training_status(_state(spec, job, lost), "T")
        assert status["phase"] == "Failed"
        assert status["message"] == "privacy state lost: ..."
        conditions = {c["type"]: c for c in status["conditions"]}
        assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == (
            "False",
            "PrivacyStateLost",
        )
        budget = conditions["PrivacyBudgetAvailable"]
        assert (budget["status"], budget["reason"]) == ("False", "PrivacyStateLost")


def test_client_phase() -> None:
    assert client_phase({"banReason": "replay"}, enrolled=True, revoked=True)[0] == "Banned"
    assert client_phase({}, enrolled=True, revoked=True)[0] == "Revoked"
    assert client_phase({}, enrolled=False, revoked=False)[0] == "Pending"
    assert client_phase({"roundsParticipated": 2}, enrolled=True, revoked=False)[0] == "Active"
    assert client_phase({}, enrolled=True, revoked=False)[0] == "Enrolled"
