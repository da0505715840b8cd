"""The aggregator's Kubernetes status reporter against a real API server.

- a sequence of real events: the FederatedTraining and FLClient status fields, the operator's
  fields left alone (server-side apply, separate field managers), ε never lower after a restart;
- a real training (``fedwarden aggregator --kubernetes-status`` and client processes over mTLS,
  a poisoner among them): round, ε growing, the poisoner Banned with its reason and strikes;
  then its checkpoint is lost, and a new aggregator refuses to spend the budget again;
- a service account with only the aggregator's Role: its job works, another training's status
  is refused (403), and a client missing from the Role is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fedwarden.aggregator.kubernetes import (
    CLIENTS,
    FIELD_MANAGER,
    TRAININGS,
    KubernetesReporter,
    KubernetesStatusApi,
    StatusApiError,
)
from fedwarden.aggregator.reporting import (
    RoundFinished,
    TrainingFinished,
    TrainingStarted,
)
from fedwarden.testing.controlplane import ControlPlane

pytestmark = pytest.mark.k8s

REPO = Path(__file__).resolve().parents[2]
GROUP_PATH = "/apis/fedwarden.io/v1alpha1"
RUN = [sys.executable, "-c", "from fedwarden.cli import main; main()"]
BAN = "3 strikes, the last in round 2: statistical outlier: robust z-score 41.2 > 14"


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    control_plane.kubectl(
        "apply", "--server-side", "--field-manager=fedwarden-tests", "-f", str(REPO / "crds")
    )
    for name in ("federatedtrainings.fedwarden.io", "flclients.fedwarden.io"):
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return control_plane


def create(cp: ControlPlane, ns: str, training: str, clients: list[str]) -> dict[str, Any]:
    api = cp.api()
    ft = api.create(
        f"{GROUP_PATH}/namespaces/{ns}/federatedtrainings",
        {
            "apiVersion": "fedwarden.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": training},
            "spec": {"rounds": 4, "task": {"builtin": "digits-logreg"}},
        },
    )
    for name in clients:
        api.create(
            f"{GROUP_PATH}/namespaces/{ns}/flclients",
            {
                "apiVersion": "fedwarden.io/v1alpha1",
                "kind": "FLClient",
                "metadata": {"name": name},
                "spec": {"trainingRef": {"name": training}, "issueKey": True},
            },
        )
    result: dict[str, Any] = ft
    return result


def status(cp: ControlPlane, ns: str, plural: str, name: str) -> dict[str, Any]:
    obj = cp.api().get(f"{GROUP_PATH}/namespaces/{ns}/{plural}/{name}")
    result: dict[str, Any] = obj.get("status") or {}
    return result


def managers(cp: ControlPlane, ns: str, plural: str, name: str) -> dict[str, set[str]]:
    """Field manager -> the status fields it owns."""
    obj = cp.api().get(f"{GROUP_PATH}/namespaces/{ns}/{plural}/{name}")
    owned: dict[str, set[str]] = {}
    for entry in obj["metadata"].get("managedFields", []):
        fields = entry.get("fieldsV1", {}).get("f:status", {})
        names = {k[2:] for k in fields if k.startswith("f:")}
        if names:
            owned.setdefault(entry["manager"], set()).update(names)
    return owned


def operator_apply(cp: ControlPlane, ns: str, plural: str, kind: str, name: str,
                   fields: dict[str, Any], *, force: bool = False) -> None:  # fmt: skip
    """The operator's own status fields, as it writes them (its field manager, no force)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=configuration)
    with client.ApiClient(configuration) as api_client:
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
            "fedwarden.io", "v1alpha1", ns, plural, name,
            {"apiVersion": "fedwarden.io/v1alpha1", "kind": kind,
             "metadata": {"name": name, "namespace": ns}, "status": fields},
            field_manager="fedwarden-operator", force=force,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip


def started(resumed: int = 0, epsilon: float = 0.0) -> TrainingStarted:
    return TrainingStarted(
        training_uid="spiffe://t",
        rounds=4,
        num_parameters=650,
        resumed_from_round=resumed,
        epsilon=epsilon,
        privacy={"mode": "central", "noise_multiplier": 1.1, "delta": 1e-5},
        sampling={},
        address="127.0.0.1:1",
    )


def finished_round(n: int, epsilon: float, **kw: Any) -> RoundFinished:
    fields: dict[str, Any] = {
        "round": n,
        "epsilon": epsilon,
        "delta": 1e-5,
        "sampled": ["site-a", "site-b", "site-c"],
        "participants": ["site-a", "site-b", "site-c"],
        "accepted": ["site-a", "site-b"],
        "rejected": {"site-c": {"stage": "pipeline", "reason": "outlier", "message": "z"}},
        "banned": {},
        "skipped": None,
        "metrics": {"accuracy": 0.8, "loss": 0.4, "update_norm": 1.5},
        "duration_seconds": 1.0,
        "model_digest": "00",
        "strikes": {"site-a": 0, "site-b": 0, "site-c": n},
        "scores": {"site-a": 0.9, "site-b": 0.75, "site-c": -0.5},
        "rounds_participated": {"site-a": n, "site-b": n},
    }
    fields.update(kw)
    return RoundFinished(**fields)


def test_events_become_status_fields_beside_the_operators(
    crds: ControlPlane, kube_namespace: str
) -> None:
    cp, ns = crds, kube_namespace
    clients = ["site-a", "site-b", "site-c"]
    create(cp, ns, "mnist", clients)
    operator_apply(cp, ns, TRAININGS, "FederatedTraining", "mnist",
                   {"phase": "Running", "enrolledClients": 3})  # fmt: skip
    for name in clients:
        operator_apply(cp, ns, CLIENTS, "FLClient", name, {"phase": "Active"})

    reporter = KubernetesReporter(ns, "mnist", kubeconfig=cp.kubeconfig)
    reporter.resume(None)
    reporter.training_started(started())
    reporter.round_finished(finished_round(1, 0.4))
    reporter.round_finished(finished_round(2, 0.6, banned={"site-c": BAN}))
    reporter.training_finished(
        TrainingFinished("completed", "done", 2, 0.6, 1e-5, banned={"site-c": BAN}, metrics={})
    )
    reporter.close()

    ft = status(cp, ns, TRAININGS, "mnist")
    assert ft["round"] == 2
    assert ft["epsilonSpent"] == pytest.approx(0.6)
    assert ft["delta"] == pytest.approx(1e-5)
    assert ft["noiseMultiplier"] == pytest.approx(1.1)
    assert ft["participants"] == 3
    assert ft["rejectedUpdates"] == 2
    assert ft["bannedClients"] == ["site-c"]
    assert ft["bannedCount"] == 1
    assert ft["lastMetrics"] == {"accuracy": 0.8, "loss": 0.4, "updateNorm": 1.5}
    assert ft["phase"] == "Running"  # the operator's fields are untouched
    assert ft["enrolledClients"] == 3
    owners = managers(cp, ns, TRAININGS, "mnist")
    assert owners[FIELD_MANAGER] == {
        "round", "epsilonSpent", "delta", "noiseMultiplier", "participants", "rejectedUpdates",
        "bannedClients", "bannedCount", "lastMetrics",
    }  # fmt: skip
    assert owners["fedwarden-operator"] == {"phase", "enrolledClients"}

    banned = status(cp, ns, CLIENTS, "site-c")
    assert banned["phase"] == "Banned"
    assert banned["banReason"] == f"outlier: {BAN}"
    assert banned["strikes"] == 2
    site_a = status(cp, ns, CLIENTS, "site-a")
    assert site_a == {"phase": "Active", "strikes": 0, "lastScore": 0.9, "roundsParticipated": 2}
    assert "phase" not in managers(cp, ns, CLIENTS, "site-a")[FIELD_MANAGER]

    # the operator keeps writing its fields without force: no conflict with the aggregator's
    operator_apply(cp, ns, TRAININGS, "FederatedTraining", "mnist",
                   {"phase": "Succeeded", "enrolledClients": 3})  # fmt: skip
    assert status(cp, ns, TRAININGS, "mnist")["round"] == 2

    # a restart that lost its checkpoint: ε stays, bans and scores stay, counters continue
    again = KubernetesReporter(ns, "mnist", kubeconfig=cp.kubeconfig)
    again.resume(None)
    again.training_started(started(resumed=0, epsilon=0.0))
    again.round_finished(
        finished_round(1, 0.1, sampled=["site-a"], participants=["site-a"], accepted=["site-a"],
                       rejected={}, strikes={"site-a": 0}, scores={},
                       rounds_participated={"site-a": 1})
    )  # fmt: skip
    again.close()
    ft = status(cp, ns, TRAININGS, "mnist")
    assert ft["epsilonSpent"] == pytest.approx(0.6)
    assert ft["round"] == 1
    assert ft["rejectedUpdates"] == 2
    assert ft["bannedClients"] == ["site-c"]
    assert ft["phase"] == "Succeeded"
    site_a = status(cp, ns, CLIENTS, "site-a")
    assert site_a["lastScore"] == 0.9  # read back first, so not dropped by the apply
    assert site_a["roundsParticipated"] == 2
    assert status(cp, ns, CLIENTS, "site-c")["phase"] == "Banned"


# --- a real training ---------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Any:
    from fedwarden.pki import TrainingPKI, TrainingRef

    pki = TrainingPKI.init(tmp_path / "ca", TrainingRef("team-a", "digits"))
    pki.issue_server(["localhost"], ["127.0.0.1"], keep_key=True)
    return pki


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_real_training_reports_onto_the_resources(
    crds: ControlPlane, kube_namespace: str, pki: Any, tmp_path: Path
) -> None:
    cp, ns = crds, kube_namespace
    honest = ["site-0", "site-1", "site-2", "site-3"]
    names = [*honest, "poisoner"]
    create(cp, ns, "digits", names)
    tls_dirs = {}
    for name in names:
        tls_dirs[name] = tmp_path / "clients" / name
        pki.write_tls_directory(tls_dirs[name], pki.issue_client(name))
    port = _free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    aggregator_log = logs / "aggregator.log"
    aggregator_argv = [
        *RUN, "aggregator", "--pki-dir", str(pki.dir.root), "--listen", f"127.0.0.1:{port}",
        "--rounds", "4", "--task", "digits-logreg",
        "--min-available", "5", "--dp", "central", "--noise-multiplier", "1.0",
        # a named rule keeps the outlier test under central DP (DP-FedAvg would not)
        "--aggregator", "centered-clip", "--agg-param", "tau=0.2",
        "--population", "5", "--poll-timeout", "1", "--round-timeout", "30", "--quiet",
        "--json", "--log-level", "info", "--checkpoint-dir", str(tmp_path / "state"),
        "--kubernetes-status", f"{ns}/digits", "--kubeconfig", str(cp.kubeconfig),
    ]  # fmt: skip
    with open(aggregator_log, "wb") as err_file:
        aggregator = subprocess.Popen(
            aggregator_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_file
        )
    argvs: dict[str, list[str]] = {
        name: [*RUN, "client", "--tls-dir", str(tls_dirs[name]), "--server", f"127.0.0.1:{port}",
               "--task", "digits-logreg", "--partition", "iid", "--client-index", str(i),
               "--num-clients", "5", "--json", "--backoff-max", "0.5", "--give-up-after", "60"]
        for i, name in enumerate(honest)
    }  # fmt: skip
    argvs["poisoner"] = [
        sys.executable, "-m", "fedwarden.demo.participant", "--role", "poisoner",
        "--tls-dir", str(tls_dirs["poisoner"]), "--server", f"127.0.0.1:{port}",
        "--index", "4", "--num-clients", "5", "--rounds", "4",
        "--result", str(tmp_path / "poisoner.json"),
    ]  # fmt: skip
    processes = []
    for name, argv in argvs.items():
        with open(logs / f"{name}.log", "wb") as log_file:
            processes.append(
                subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
                )
            )
    epsilons: list[float] = []
    try:
        deadline = time.monotonic() + 240
        while aggregator.poll() is None and time.monotonic() < deadline:
            eps = status(cp, ns, TRAININGS, "digits").get("epsilonSpent")
            if eps is not None:
                epsilons.append(float(eps))
            time.sleep(0.2)
        out, _ = aggregator.communicate(timeout=30)
    finally:
        for p in (aggregator, *processes):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
    assert aggregator.returncode == 0, aggregator_log.read_text()[-3000:]
    summary = json.loads(out)
    assert summary["rounds"] == 4
    assert epsilons == sorted(epsilons)  # never went down while it ran

    ft = status(cp, ns, TRAININGS, "digits")
    assert ft["round"] == 4
    # shown with four decimals, rounded up: never less than what was spent
    assert summary["epsilon"] <= ft["epsilonSpent"] <= summary["epsilon"] + 1e-4
    assert ft["epsilonSpent"] > 0
    assert ft["bannedClients"] == ["poisoner"]
    assert ft["bannedCount"] == 1
    assert ft["rejectedUpdates"] >= 3
    assert ft["participants"] == 4  # the last round: the banned poisoner is refused at the door
    assert 0.0 <= ft["lastMetrics"]["accuracy"] <= 1.0
    poisoner = status(cp, ns, CLIENTS, "poisoner")
    assert poisoner["phase"] == "Banned"
    # five sites: below eight updates the outlier test's scale is floored, and the sign-flipped
    # poisoner is struck by its direction (docs/pipeline.md, "Small consortia")
    assert poisoner["banReason"].startswith("poisoning: 3 strikes")
    assert poisoner["strikes"] == 3
    for name in honest:
        site = status(cp, ns, CLIENTS, name)
        assert site["roundsParticipated"] == summary["fates"][name]["aggregated"]
        assert site["strikes"] == 0
        assert "lastScore" in site

    # the checkpoint volume is lost: the status is the durable record of the ε spent, and a new
    # aggregator must not spend the budget again from a fresh accountant (not just show the
    # larger ε)
    shutil.rmtree(tmp_path / "state")
    again = subprocess.run(
        aggregator_argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120
    )
    assert again.returncode == 1, again.stderr.decode()[-3000:]
    assert "privacy state lost" in again.stderr.decode()
    after = status(cp, ns, TRAININGS, "digits")
    assert after["privacyStateLost"].startswith("privacy state lost: ")
    assert after["epsilonSpent"] == ft["epsilonSpent"]
    assert after["round"] == 4
    assert not (tmp_path / "state" / "checkpoint.npz").exists()  # not a round was run


# --- the aggregator's Role ---------------------------------------------------------------


@pytest.fixture
def service_account_dir(
    crds: ControlPlane, kube_namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A token of the service account ``aggregator`` (TokenRequest API) and the API server's
    CA, laid out as in a pod, and the in-cluster environment variables."""
    cp, ns = crds, kube_namespace
    api = cp.api()
    api.create(
        f"/api/v1/namespaces/{ns}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "aggregator"}},
    )
    token = api.create(
        f"/api/v1/namespaces/{ns}/serviceaccounts/aggregator/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}},
    )["status"]["token"]  # fmt: skip
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(Path(cp.ca_file).read_bytes())
    host, _, port = cp.server.removeprefix("https://").rpartition(":")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    return directory


def aggregator_role(training: str, clients: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "aggregator"},
        "rules": [
            {"apiGroups": ["fedwarden.io"], "resources": ["federatedtrainings"],
             "resourceNames": [training], "verbs": ["get"]},
            {"apiGroups": ["fedwarden.io"], "resources": ["federatedtrainings/status"],
             "resourceNames": [training], "verbs": ["get", "patch"]},
            {"apiGroups": ["fedwarden.io"], "resources": ["flclients/status"],
             "resourceNames": sorted(clients), "verbs": ["get", "patch"]},
        ],
    }  # fmt: skip


def test_the_role_the_operator_renders_is_this_one() -> None:
    from fedwarden.resources.aggregator import role
    from fedwarden.resources.names import Owner

    rendered = role(Owner("FederatedTraining", "mnist", "ns", "uid"), ["site-b", "site-a"])
    assert rendered["rules"] == aggregator_role("mnist", ["site-a", "site-b"])["rules"]


def test_only_the_aggregators_role_is_enough_and_no_more(
    crds: ControlPlane,
    kube_namespace: str,
    service_account_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cp, ns = crds, kube_namespace
    create(cp, ns, "mnist", ["site-a", "site-b", "site-c"])
    create(cp, ns, "other", [])
    api = cp.api()
    api.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
        aggregator_role("mnist", ["site-a", "site-b"]),
    )  # site-c enrolled later
    api.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "aggregator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "aggregator"},
         "subjects": [{"kind": "ServiceAccount", "name": "aggregator", "namespace": ns}]},
    )  # fmt: skip
    as_aggregator = KubernetesStatusApi(ns, service_account_dir=service_account_dir)
    deadline = time.monotonic() + 30
    while True:  # the RBAC authorizer's cache catches up with the new binding
        try:
            as_aggregator.get_status(TRAININGS, "mnist")
            break
        except StatusApiError as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)

    reporter = KubernetesReporter(ns, "mnist", api=as_aggregator)
    with caplog.at_level(logging.WARNING, "fedwarden.aggregator.kubernetes"):
        reporter.training_started(started())
        reporter.round_finished(finished_round(1, 0.4))
        assert reporter.flush(30)
        reporter.round_finished(finished_round(2, 0.5, banned={"site-c": BAN}))
        reporter.close()
    ft = status(cp, ns, TRAININGS, "mnist")
    assert ft["round"] == 2
    assert ft["epsilonSpent"] == pytest.approx(0.5)
    assert ft["bannedClients"] == ["site-c"]
    assert status(cp, ns, CLIENTS, "site-a")["roundsParticipated"] == 2
    assert status(cp, ns, CLIENTS, "site-b")["strikes"] == 0
    assert "strikes" not in status(cp, ns, CLIENTS, "site-c")  # not in the Role: skipped
    assert caplog.text.count(f"{ns}/site-c: FLClient status not written") == 1
    assert "403" in caplog.text

    # nothing beyond its own training and clients
    with pytest.raises(StatusApiError) as refused:
        as_aggregator.apply_status(TRAININGS, "FederatedTraining", "other", {"round": 9})
    assert refused.value.status == 403
    with pytest.raises(StatusApiError) as refused:
        as_aggregator.get_status(TRAININGS, "other")
    assert refused.value.status == 403
    assert "round" not in status(cp, ns, TRAININGS, "other") or (
        status(cp, ns, TRAININGS, "other")["round"] == 0
    )
    # the token alone: a kubeconfig (KUBECONFIG or ~/.kube/config) would add its client
    # certificate, and x509 authenticates first
    listing = subprocess.run(
        [str(cp.binaries["kubectl"]), "--kubeconfig", os.devnull, "--server", cp.server,
         "--certificate-authority", str(cp.ca_file),
         "--token", (service_account_dir / "token").read_text(),
         "auth", "can-i", "list", "federatedtrainings.fedwarden.io", "-n", ns],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listing.stdout.strip() == "no"
    as_aggregator.close()


def test_record_level_dp_shows_its_unit_and_each_sites_epsilon(
    crds: ControlPlane, kube_namespace: str
) -> None:
    cp, ns = crds, kube_namespace
    create(cp, ns, "consortium", ["site-a", "site-b"])
    reporter = KubernetesReporter(ns, "consortium", kubeconfig=cp.kubeconfig)
    reporter.resume(None)
    privacy = {"mode": "record", "unit": "record", "noise_multiplier": None, "delta": 1e-5}
    reporter.training_started(dataclasses.replace(started(), privacy=privacy))
    reporter.round_finished(
        finished_round(1, 0.8, sampled=["site-a", "site-b"], participants=["site-a", "site-b"],
                       accepted=["site-a", "site-b"], rejected={},
                       site_epsilon={"site-a": 0.8, "site-b": 0.45})
    )  # fmt: skip
    reporter.close()
    ft = status(cp, ns, TRAININGS, "consortium")
    assert ft["privacyUnit"] == "record"
    assert ft["epsilonSpent"] == pytest.approx(0.8)  # the largest over the sites
    assert "noiseMultiplier" not in ft
    assert status(cp, ns, CLIENTS, "site-a")["epsilonSpent"] == pytest.approx(0.8)
    assert status(cp, ns, CLIENTS, "site-b")["epsilonSpent"] == pytest.approx(0.45)
