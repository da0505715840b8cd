"""The manifests the operator renders, checked as data (the API server checks them too:
tests/k8s applies every one with --dry-run=server)."""

from __future__ import annotations

import json

import pytest

from fedwarden.api import FederatedTraining, FLClient
from fedwarden.commands.aggregator import aggregator as aggregator_command
from fedwarden.resources import aggregator, client, network
from fedwarden.resources.names import Owner
from fedwarden.resources.status import TrainingState, client_phase, training_status

OWNER = Owner("FederatedTraining", "mnist", "team-a", "uid-1")


def _spec(**spec: object):  # type: ignore[no-untyped-def]
    return FederatedTraining.model_validate(
        {"spec": {"rounds": 5, "task": {"name": "digits-mlp"}, **spec}}
    ).spec


def test_every_aggregator_setting_is_an_option_of_the_command() -> None:
    spec = _spec(
        aggregation={"method": "trimmed-mean", "beta": 0.2},
        privacy={"mode": "central", "targetEpsilon": 1.0},
        selection={"sampling": "poisson", "fraction": 0.5},
    )
    settings = aggregator.aggregator_settings(OWNER, spec, population=10)
    options = {p.name for p in aggregator_command.params}
    assert set(settings) <= options, set(settings) - options
    assert settings["agg_params"] == ["beta=0.2"]
    assert settings["kubernetes_status"] == "team-a/mnist"
    data = aggregator.config_map(OWNER, spec, population=10)["data"]["aggregator.json"]
    assert json.loads(data)["target_epsilon"] == 1.0


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
    assert settings["dp"] == "record"
    assert settings["target_epsilon"] == 1.0


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


def test_client_phase() -> None:
    assert client_phase({"banReason": "replay"}, enrolled=True, revoked=True)[0] == "Banned"
    assert client_phase({}, enrolled=True, revoked=True)[0] == "Revoked"
    assert client_phase({}, enrolled=False, revoked=False)[0] == "Pending"
    assert client_phase({"roundsParticipated": 2}, enrolled=True, revoked=False)[0] == "Active"
    assert client_phase({}, enrolled=True, revoked=False)[0] == "Enrolled"
