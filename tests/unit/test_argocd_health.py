"""The Argo CD health checks users apply (examples/gitops/argocd/argocd-cm-health.yaml), run as
Argo CD runs them (tests/argocd_health.py) on statuses the operator's own functions compute:
every phase of a FederatedTraining and of an FLClient, no status yet, a stale status."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from tests.argocd_health import ARGOCD_CM_PATCH, HEALTH_KEY_PREFIX, Health, argocd_health

from fedwarden.api.training import FederatedTraining
from fedwarden.controller.settings import OperatorSettings
from fedwarden.controller.training import finalize_training
from fedwarden.k8s import Cluster
from fedwarden.resources.status import (
    ConditionValue,
    TrainingState,
    client_phase,
    merge_conditions,
    training_status,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TRAINING = yaml.safe_load((REPO / "examples" / "training.yaml").read_text())
NOW = "2026-01-01T12:00:00Z"
CERTIFICATE_ISSUED = "aggregator certificate valid until 2026-01-02T12:00:00Z"


# --- FederatedTraining ---------------------------------------------------------------------


def _job(
    *, active: int = 0, ready: int = 0, finished: str | None = None, reason: str = ""
) -> dict[str, Any]:
    """The aggregator's Job as the operator reads it: running pods, or a finished condition."""
    status: dict[str, Any] = {"active": active, "ready": ready, "startTime": NOW}
    if finished:
        status["conditions"] = [
            {"type": finished, "status": "True", "reason": reason, "lastTransitionTime": NOW}
        ]
    return {"status": status}


def _training(
    job: dict[str, Any] | None,
    *,
    reported: dict[str, Any] | None = None,
    certificates_ready: bool = True,
    observed_generation: int = 1,
    generation: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """examples/training.yaml as the API server returns it once the operator has written its
    status for ``observed_generation`` over what the aggregator reported (round, ε)."""
    training: dict[str, Any] = copy.deepcopy(EXAMPLE_TRAINING)
    training["spec"].update(spec)
    training["metadata"].update(namespace="fl-demo", generation=generation)
    reported = reported or {}
    state = TrainingState(
        spec=FederatedTraining.model_validate(training).spec,
        generation=observed_generation,
        job=job,
        certificates_ready=certificates_ready,
        certificates_message=CERTIFICATE_ISSUED if certificates_ready else "no certificate yet",
        enrolled_clients=10,
        reported=reported,
    )
    training["status"] = {**reported, **training_status(state, NOW)}
    return training


PRIVACY = EXAMPLE_TRAINING["spec"]["privacy"]


@pytest.mark.parametrize(
    ("training", "phase", "health"),
    [
        pytest.param(
            _training(None),
            "Pending",
            Health("Progressing", "waiting for the aggregator"),
            id="pending",
        ),
        pytest.param(
            _training(None, certificates_ready=False),
            "Pending",
            Health("Progressing", "no certificate yet"),
            id="pending-without-certificates",
        ),
        pytest.param(
            _training(_job(active=1), reported={"round": 2, "epsilonSpent": 4.5}),
            "Running",
            Health("Progressing", "round 3 of 6"),
            id="running-aggregator-not-ready",
        ),
        pytest.param(
            _training(_job(active=1, ready=1), reported={"round": 2, "epsilonSpent": 4.5}),
            "Running",
            Health("Healthy", "Running: round 2/6, epsilon 4.5"),
            id="running-aggregator-serving",
        ),
        pytest.param(
            _training(_job(), reported={"round": 2}, suspend=True),
            "Suspended",
            Health("Suspended", "suspended at round 2/6"),
            id="suspended",
        ),
        pytest.param(
            _training(_job(finished="Complete"), reported={"round": 6, "epsilonSpent": 9.25}),
            "Succeeded",
            Health("Healthy", "succeeded: round 6/6, epsilon 9.25"),
            id="succeeded",
        ),
        pytest.param(
            _training(_job(finished="Complete"), reported={"round": 4, "epsilonSpent": 9.75}),
            "Succeeded",
            Health("Healthy", "succeeded: round 4/6, epsilon 9.75"),
            id="succeeded-budget-spent-early",
        ),
        pytest.param(
            _training(_job(finished="Complete"), reported={"round": 6}, privacy={"mode": "none"}),
            "Succeeded",
            Health("Healthy", "succeeded: round 6/6"),
            id="succeeded-without-privacy",
        ),
        pytest.param(
            _training(_job(finished="Failed", reason="BackoffLimitExceeded")),
            "Failed",
            Health("Degraded", "aggregator failed: BackoffLimitExceeded"),
            id="failed",
        ),
        pytest.param(
            _training(
                _job(finished="Complete"),
                reported={"round": 4, "epsilonSpent": 9.75},
                privacy={**PRIVACY, "onBudgetExhausted": "Fail"},
            ),
            "Failed",
            Health("Degraded", "privacy budget spent after 4 of 6 rounds"),
            id="failed-budget-spent",
        ),
    ],
)
def test_training_health_follows_its_phase(
    training: dict[str, Any], phase: str, health: Health
) -> None:
    assert training["status"]["phase"] == phase
    assert argocd_health(training) == health


def test_training_without_a_status_waits_for_the_operator() -> None:
    training = copy.deepcopy(EXAMPLE_TRAINING)
    training["metadata"]["generation"] = 1
    assert argocd_health(training) == Health("Progressing", "waiting for the operator")


@pytest.mark.parametrize(
    "training",
    [
        pytest.param(_training(_job(active=1, ready=1), generation=2), id="running"),
        pytest.param(_training(_job(), generation=2, suspend=True), id="suspended"),
    ],
)
def test_training_status_of_an_older_spec_is_not_trusted(training: dict[str, Any]) -> None:
    assert argocd_health(training) == Health(
        "Progressing", "the operator has not reconciled generation 2 yet"
    )


def test_training_ready_condition_of_an_older_spec_is_not_trusted() -> None:
    training = _training(_job(active=1, ready=1), observed_generation=2, generation=2)
    (ready,) = [c for c in training["status"]["conditions"] if c["type"] == "Ready"]
    ready["observedGeneration"] = 1
    assert argocd_health(training).status == "Progressing"


@pytest.mark.parametrize(
    ("training", "health"),
    [
        pytest.param(
            _training(_job(finished="Complete"), reported={"round": 6}, generation=2),
            Health("Healthy", "succeeded: round 6/6"),
            id="succeeded",
        ),
        pytest.param(
            _training(_job(finished="Failed", reason="DeadlineExceeded"), generation=2),
            Health("Degraded", "aggregator failed: DeadlineExceeded"),
            id="failed",
        ),
    ],
)
def test_finished_training_is_judged_whatever_its_spec_says(
    training: dict[str, Any], health: Health
) -> None:
    """A finished training never runs again, and once its Job is gone the operator stops
    writing its status: a spec edited afterwards must not leave it Progressing forever."""
    assert argocd_health(training) == health


# --- FLClient ------------------------------------------------------------------------------

EXAMPLE_CLIENT = next(
    d
    for d in yaml.safe_load_all((REPO / "examples" / "clients.yaml").read_text())
    if d and d["metadata"]["name"] == "site-8"
)


def _client(
    status: dict[str, Any] | None, *, ready: bool = False, reason: str = "", generation: int = 1
) -> dict[str, Any]:
    """examples/clients.yaml's site-8 as the API server returns it, with ``status`` written as
    reconcile_client writes it (its Ready condition from the phase's message) for generation
    1."""
    client: dict[str, Any] = copy.deepcopy(EXAMPLE_CLIENT)
    client["metadata"].update(namespace="fl-demo", generation=generation)
    if status is not None:
        condition = ConditionValue("Ready", ready, reason, status["message"])
        client["status"] = {
            **status,
            "observedGeneration": 1,
            "conditions": merge_conditions([], [condition], 1, NOW),
        }
    return client


def _client_status(reported: dict[str, Any], *, enrolled: bool, revoked: bool) -> dict[str, Any]:
    phase, message = client_phase(reported, enrolled=enrolled, revoked=revoked)
    return {**reported, "phase": phase, "message": message}


ENROLLED = _client_status({}, enrolled=True, revoked=False)
ACTIVE = _client_status({"roundsParticipated": 3, "strikes": 1}, enrolled=True, revoked=False)
BAN_REASON = "outlier: update 9.1 MADs from the median"


def _banned_by_the_operator() -> dict[str, Any]:
    reported = {"banReason": BAN_REASON, "strikes": 3, "roundsParticipated": 2}
    status = _client_status(reported, enrolled=True, revoked=True)
    status["message"] += "; certificate revoked"
    return _client(status, reason="Banned")


def _banned_by_the_aggregator() -> dict[str, Any]:
    """The aggregator's patch (phase, banReason, strikes) before the operator's reconcile: the
    operator's Ready condition still says True."""
    client = _client(ACTIVE, ready=True, reason="Enrolled")
    client["status"].update(phase="Banned", banReason=BAN_REASON, strikes=3)
    return client


class _ClusterOfADeletedTraining:
    """What finalize_training touches of a Cluster, for a training whose CA is already gone:
    its clients, and the statuses it writes (a server-side apply: the fields it owned before
    and leaves out are removed, the aggregator's stay)."""

    def __init__(self, clients: list[dict[str, Any]]) -> None:
        self.clients = clients

    def get(self, *_: Any) -> None:
        return None

    def trainings_clients(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.clients

    def apply_status(self, kind: str, name: str, namespace: str, status: dict[str, Any]) -> None:
        (client,) = [c for c in self.clients if c["metadata"]["name"] == name]
        aggregator_fields = ("strikes", "lastScore", "roundsParticipated", "banReason")
        client["status"] = {
            **{k: v for k, v in client["status"].items() if k in aggregator_fields},
            **status,
        }

    def delete(self, *_: Any) -> None: ...

    def event(self, *_: Any, **__: Any) -> None: ...

    def forget(self, *_: Any) -> None: ...


def _revoked() -> dict[str, Any]:
    """An active client after its training was deleted, as finalize_training leaves it."""
    client = _client(ACTIVE, ready=True, reason="Enrolled")
    training = {"metadata": {"name": "digits", "namespace": "fl-demo", "uid": "u-1"}}
    cluster = cast(Cluster, _ClusterOfADeletedTraining([client]))
    finalize_training(cluster, training, OperatorSettings())
    assert client["status"]["phase"] == "Revoked"
    return client


@pytest.mark.parametrize(
    ("client", "health"),
    [
        pytest.param(
            _client(None), Health("Progressing", "waiting for the operator"), id="no-status"
        ),
        pytest.param(
            _client(_client_status({}, enrolled=False, revoked=False), reason="Pending"),
            Health("Progressing", "waiting for a certificate"),
            id="pending",
        ),
        pytest.param(
            _client(
                {"phase": "Pending", "message": "its labels do not match digits's clientSelector"},
                reason="NotSelected",
            ),
            Health("Progressing", "its labels do not match digits's clientSelector"),
            id="pending-not-selected",
        ),
        pytest.param(
            _client(
                {"phase": "Pending", "message": "certificate refused: the key is too short"},
                reason="CertificateRefused",
            ),
            Health("Progressing", "certificate refused: the key is too short"),
            id="pending-certificate-refused",
        ),
        pytest.param(
            _client(ENROLLED, ready=True, reason="Enrolled"),
            Health("Healthy", "Enrolled, strikes 0"),
            id="enrolled",
        ),
        pytest.param(
            _client(ACTIVE, ready=True, reason="Enrolled"),
            Health("Healthy", "Active, strikes 1"),
            id="active",
        ),
        pytest.param(
            _client(ACTIVE, ready=True, reason="Enrolled", generation=2),
            Health("Progressing", "the operator has not reconciled generation 2 yet"),
            id="active-of-an-older-spec",
        ),
        pytest.param(
            _banned_by_the_operator(), Health("Degraded", f"banned: {BAN_REASON}"), id="banned"
        ),
        pytest.param(
            _banned_by_the_aggregator(),
            Health("Degraded", f"banned: {BAN_REASON}"),
            id="banned-before-the-operator-saw-it",
        ),
        pytest.param(
            _revoked(),
            Health("Degraded", "training digits was deleted; its certificate is revoked"),
            id="revoked",
        ),
    ],
)
def test_client_health_follows_its_phase(client: dict[str, Any], health: Health) -> None:
    assert argocd_health(client) == health


def test_banned_and_revoked_clients_are_judged_whatever_their_spec_says() -> None:
    """Both are final: the operator keeps a client's ban, and once its training is gone it
    writes nothing more to it, so a spec edited afterwards is never observed."""
    for client in (_banned_by_the_operator(), _revoked()):
        client["metadata"]["generation"] = 2
        assert argocd_health(client).status == "Degraded"


# --- the file users apply, and the Lua it runs in ------------------------------------------


def test_patch_holds_one_health_check_per_kind_for_argocd_cm() -> None:
    patch = yaml.safe_load(ARGOCD_CM_PATCH.read_text())
    assert (patch["apiVersion"], patch["kind"]) == ("v1", "ConfigMap")
    # no namespace, like argocd-cm in Argo CD's install.yaml: `kubectl -n argocd patch` or the
    # kustomization that installs Argo CD decides it
    assert patch["metadata"] == {"name": "argocd-cm"}
    assert sorted(patch["data"]) == [
        f"{HEALTH_KEY_PREFIX}FLClient",
        f"{HEALTH_KEY_PREFIX}FederatedTraining",
    ]


@pytest.fixture(scope="module")
def kubectl(control_plane_binaries: dict[str, Path]) -> Path:
    return control_plane_binaries["kubectl"]


ARGOCD_CM: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "argocd-cm", "labels": {"app.kubernetes.io/part-of": "argocd"}},
    "data": {"url": "https://argocd.example.org"},
}


def _merged_into_argocd_cm(configmap: dict[str, Any]) -> None:
    patch = yaml.safe_load(ARGOCD_CM_PATCH.read_text())
    assert configmap["data"] == {"url": "https://argocd.example.org", **patch["data"]}
    assert configmap["metadata"]["labels"] == ARGOCD_CM["metadata"]["labels"]


def test_kubectl_patch_merges_the_keys_into_argocd_cm(tmp_path: Path, kubectl: Path) -> None:
    """The command docs/gitops.md gives, on a local argocd-cm (``--local``)."""
    (tmp_path / "argocd-cm.yaml").write_text(yaml.safe_dump(ARGOCD_CM))
    out = subprocess.run(
        [str(kubectl), "patch", "--local", "-f", str(tmp_path / "argocd-cm.yaml"),
         "--patch-file", str(ARGOCD_CM_PATCH), "-o", "yaml"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    _merged_into_argocd_cm(yaml.safe_load(out.stdout))


@pytest.mark.parametrize("argocd_namespace", ["argocd", None])
def test_kustomize_patches_argocd_cm_with_it(
    tmp_path: Path, kubectl: Path, argocd_namespace: str | None
) -> None:
    """As a `patches:` entry of the kustomization that installs Argo CD, whether its argocd-cm
    carries the namespace or the kustomization sets it."""
    configmap = copy.deepcopy(ARGOCD_CM)
    if argocd_namespace:
        configmap["metadata"]["namespace"] = argocd_namespace
    (tmp_path / "install.yaml").write_text(yaml.safe_dump(configmap))
    (tmp_path / "argocd-cm-health.yaml").write_bytes(ARGOCD_CM_PATCH.read_bytes())
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "argocd",
        "resources": ["install.yaml"],
        "patches": [
            {"path": "argocd-cm-health.yaml", "target": {"kind": "ConfigMap", "name": "argocd-cm"}}
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    out = subprocess.run(
        [str(kubectl), "kustomize", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    _merged_into_argocd_cm(yaml.safe_load(out.stdout))


@pytest.mark.parametrize(
    "script",
    [
        'return {status = string.upper("healthy")}',
        'return {status = ("healthy"):upper()}',
        "return {status = math.floor(1) and 'Healthy'}",
        "return {status = os.getenv('HOME') and 'Healthy'}",
    ],
)
def test_lua_has_only_the_libraries_argocd_opens(
    script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Argo CD opens no string, math or os library for a custom health check: a script that
    leans on one fails there, so it must fail here."""
    from lupa.lua51 import LuaError

    monkeypatch.setattr("tests.argocd_health.health_scripts", lambda: {"FLClient": script})
    with pytest.raises(LuaError):
        argocd_health({"kind": "FLClient", "metadata": {}})
