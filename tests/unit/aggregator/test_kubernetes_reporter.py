"""The Kubernetes status reporter without a server: the state the events build, the status
documents composed from it, and the writer thread (coalescing, retries, 403s, the flush at
close) against an in-memory stand-in of the four status requests. The real API server is in
tests/k8s/test_aggregator_status_reporter.py."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from fedwarden.aggregator.kubernetes import (
    CLIENTS,
    TRAININGS,
    ClientFacts,
    KubernetesReporter,
    StatusApiError,
    StatusState,
    apply_body,
    ban_reason_code,
    client_status,
    parse_target,
    training_status,
)
from fedwarden.aggregator.reporting import (
    ClientFlagged,
    ModelExported,
    RecordedProgress,
    Rejection,
    RoundFinished,
    RoundStarted,
    TrainingFinished,
    TrainingStarted,
)

BAN = "3 strikes, the last in round 4: statistical outlier: robust z-score 41.2 > 14"


def started(resumed: int = 0, epsilon: float = 0.0, *, dp: bool = True, **kw: Any) -> Any:
    return TrainingStarted(
        training_uid="spiffe://t",
        rounds=10,
        num_parameters=100,
        resumed_from_round=resumed,
        epsilon=epsilon,
        **{
            "privacy": {"mode": "central", "noise_multiplier": 1.1, "delta": 1e-5}
            if dp
            else {"mode": "none", "noise_multiplier": None, "delta": None},
            "sampling": {},
            "address": "127.0.0.1:1",
            **kw,
        },
    )


def finished_round(n: int, epsilon: float, **kw: Any) -> RoundFinished:
    fields: dict[str, Any] = {
        "round": n,
        "epsilon": epsilon,
        "delta": 1e-5,
        "sampled": ["a", "b", "c"],
        "participants": ["a", "b", "c"],
        "accepted": ["a", "b"],
        "rejected": {"c": {"stage": "pipeline", "reason": "outlier", "message": "z"}},
        "banned": {},
        "skipped": None,
        "metrics": {"accuracy": 0.5 + n / 100, "loss": 1.0 / n, "noise_std": 0.1},
        "duration_seconds": 1.0,
        "model_digest": "00",
        "strikes": {"a": 0, "b": 0, "c": n},
        "scores": {"a": 0.9, "b": 0.8, "c": -0.5},
        "rounds_participated": {"a": n, "b": n},
    }
    fields.update(kw)
    return RoundFinished(**fields)


class FakeStatusApi:
    """The four requests in memory, with server-side apply's rule that matters here: a field
    this manager applied before and omits now is removed."""

    def __init__(self, statuses: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.statuses: dict[tuple[str, str], dict[str, Any]] = statuses or {}
        self.owned: dict[tuple[str, str], set[str]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.fail: list[StatusApiError] = []
        self.forbidden: set[tuple[str, str]] = set()
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()

    def _maybe_fail(self, key: tuple[str, str]) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        if key in self.forbidden:
            raise StatusApiError(403, "403 Forbidden: not in the Role")
        with self.lock:
            if self.fail:
                raise self.fail.pop(0)

    def get_status(self, plural: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", plural, name))
        self._maybe_fail((plural, name))
        return dict(self.statuses.get((plural, name), {}))

    def apply_status(self, plural: str, kind: str, name: str, status: dict[str, Any]) -> None:
        self.calls.append(("apply", plural, name))
        self._maybe_fail((plural, name))
        key = (plural, name)
        current = self.statuses.setdefault(key, {})
        for dropped in self.owned.get(key, set()) - set(status):
            current.pop(dropped, None)
        current.update(status)
        self.owned[key] = set(status)

    def applies(self, plural: str | None = None) -> int:
        return sum(1 for c in self.calls if c[0] == "apply" and plural in (None, c[1]))


def reporter(api: FakeStatusApi, **kw: Any) -> KubernetesReporter:
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("flush_timeout", 5.0)
    return KubernetesReporter("team-a", "mnist", api=api, **kw)


# --- pure functions ----------------------------------------------------------------------


def test_parse_target() -> None:
    assert parse_target("team-a/mnist") == ("team-a", "mnist")
    for bad in ("mnist", "team-a/", "/mnist", "Team/x", "a/b/c"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            parse_target(bad)


def test_ban_reason_codes() -> None:
    assert ban_reason_code(BAN) == "outlier"
    assert ban_reason_code("3 strikes, the last in round 2: tampered: digest differs") == "tampered"
    assert ban_reason_code("1 strike, the last in round 2: free-riding: zero update") == (
        "free-riding"
    )
    assert ban_reason_code("revoked by the operator") == "banned"


def test_training_status_from_events() -> None:
    state = StatusState()
    state.training_started(started())
    assert training_status(None, state) == {
        "round": 0,
        "epsilonSpent": 0.0,
        "delta": 1e-5,
        "noiseMultiplier": 1.1,
        "rejectedUpdates": 0,
        "bannedClients": [],
        "bannedCount": 0,
    }
    state.round_finished(finished_round(1, 0.3))
    state.round_finished(finished_round(2, 0.5, banned={"c": BAN, "b-2": "x"}))
    status = training_status(None, state)
    assert status["round"] == 2
    assert status["epsilonSpent"] == 0.5
    assert status["participants"] == 3
    assert status["rejectedUpdates"] == 2
    assert status["bannedClients"] == ["b-2", "c"]
    assert status["bannedCount"] == 2
    assert status["lastMetrics"] == {"accuracy": 0.52, "loss": 0.5}
    state.round_finished(finished_round(3, 0.6, metrics={"update_norm": 2.0, "loss": float("nan")}))
    assert training_status(None, state)["lastMetrics"] == {"updateNorm": 2.0}


def test_no_dp_writes_no_epsilon() -> None:
    state = StatusState()
    state.training_started(started(dp=False))
    state.round_finished(finished_round(1, 0.0, delta=None))
    status = training_status(None, state)
    assert "epsilonSpent" not in status
    assert "delta" not in status
    assert "noiseMultiplier" not in status


def test_epsilon_never_goes_down_and_a_lost_checkpoint_is_warned() -> None:
    warnings: list[str] = []
    seed = {"round": 7, "epsilonSpent": 2.0, "phase": "Running", "enrolledClients": 5}
    state = StatusState()
    state.training_started(started(resumed=0, epsilon=0.0))
    status = training_status(seed, state, warn=lambda key, msg: warnings.append(key))
    assert status["epsilonSpent"] == 2.0
    assert status["round"] == 0
    assert sorted(warnings) == ["epsilon", "round"]
    assert "phase" not in status  # the operator's fields
    assert "enrolledClients" not in status


def test_counters_continue_from_the_resource_and_a_replayed_round_counts_once() -> None:
    seed = {"round": 3, "epsilonSpent": 0.4, "rejectedUpdates": 5, "bannedClients": ["x"]}
    # the checkpoint's last round (3) was already reported: not counted again
    state = StatusState()
    state.round_finished(finished_round(3, 0.4), replayed=True)
    state.training_started(started(resumed=3, epsilon=0.4))
    status = training_status(seed, state)
    assert status["rejectedUpdates"] == 5
    assert status["bannedClients"] == ["x"]
    state.round_finished(finished_round(4, 0.45))
    assert training_status(seed, state)["rejectedUpdates"] == 6
    # the resource missed round 3 (the process died before reporting it): counted
    older = {**seed, "round": 2}
    assert training_status(older, state)["rejectedUpdates"] == 7


def test_client_status() -> None:
    facts = ClientFacts(strikes=2, score=0.25, rounds_participated=4)
    assert client_status(None, facts) == {"strikes": 2, "lastScore": 0.25, "roundsParticipated": 4}
    banned = ClientFacts(strikes=3, ban_reason=BAN)
    assert client_status(None, banned) == {
        "strikes": 3,
        "phase": "Banned",
        "banReason": f"outlier: {BAN}",
    }
    # what an earlier process wrote is kept (server-side apply would drop omitted fields)
    seed = {"phase": "Banned", "banReason": "tampered: x", "lastScore": 0.1, "strikes": 3,
            "roundsParticipated": 9, "certificateSerial": "ab"}  # fmt: skip
    assert client_status(seed, ClientFacts(rounds_participated=2)) == {
        "strikes": 3,
        "lastScore": 0.1,
        "roundsParticipated": 9,
        "phase": "Banned",
        "banReason": "tampered: x",
    }
    # the operator's phase is not ours to repeat
    assert client_status({"phase": "Active"}, ClientFacts(strikes=0)) == {"strikes": 0}


def test_state_ignores_names_that_are_not_flclient_names() -> None:
    state = StatusState()
    state.round_finished(finished_round(1, 0.1, strikes={"?CN=evil": 1, "Bad_Name": 1, "ok": 1}))
    assert "ok" in state.clients
    assert "?CN=evil" not in state.clients
    assert "Bad_Name" not in state.clients


def test_apply_body() -> None:
    assert apply_body("FLClient", "ns", "a", {"strikes": 1}) == {
        "apiVersion": "fedwarden.io/v1alpha1",
        "kind": "FLClient",
        "metadata": {"name": "a", "namespace": "ns"},
        "status": {"strikes": 1},
    }


# --- the writer --------------------------------------------------------------------------


def test_writes_after_rounds_and_patches_only_changed_clients() -> None:
    api = FakeStatusApi()
    rep = reporter(api)
    rep.resume(None)
    rep.training_started(started())
    assert rep.flush(5)
    assert api.statuses[(TRAININGS, "mnist")]["round"] == 0
    assert api.applies(CLIENTS) == 0
    rep.round_finished(finished_round(1, 0.2))
    assert rep.flush(5)
    assert api.applies(CLIENTS) == 3
    # round 2: a and b participate again (rounds change), c's strikes change: all three
    rep.round_finished(finished_round(2, 0.3))
    assert rep.flush(5)
    assert api.applies(CLIENTS) == 6
    # round 3: the same client values as round 2 → only the training is patched
    before = api.applies(CLIENTS)
    rep.round_finished(finished_round(3, 0.35, strikes={"a": 0, "b": 0, "c": 2},
                                      rounds_participated={"a": 2, "b": 2}))  # fmt: skip
    rep.training_finished(
        TrainingFinished("completed", "done", 3, 0.35, 1e-5, banned={}, metrics={})
    )
    rep.close()
    assert api.applies(CLIENTS) == before
    ft = api.statuses[(TRAININGS, "mnist")]
    assert (ft["round"], ft["epsilonSpent"], ft["rejectedUpdates"]) == (3, 0.35, 3)
    assert api.statuses[(CLIENTS, "c")] == {"strikes": 2, "lastScore": -0.5}
    assert api.statuses[(CLIENTS, "a")]["roundsParticipated"] == 2
    assert ("get", TRAININGS, "mnist") in api.calls
    assert not any(c[0] == "get" and c[1] == CLIENTS for c in api.calls)  # a fresh training


def test_a_ban_marks_the_flclient_banned() -> None:
    api = FakeStatusApi()
    rep = reporter(api)
    rep.training_started(started())
    rep.round_finished(finished_round(4, 0.5, banned={"c": BAN}, strikes={"a": 0, "c": 3}))
    rep.close()
    assert api.statuses[(CLIENTS, "c")]["phase"] == "Banned"
    assert api.statuses[(CLIENTS, "c")]["banReason"] == f"outlier: {BAN}"
    assert api.statuses[(TRAININGS, "mnist")]["bannedClients"] == ["c"]
    # bans are written before the other clients
    client_applies = [c[2] for c in api.calls if c[0] == "apply" and c[1] == CLIENTS]
    assert client_applies[0] == "c"


def test_events_coalesce_while_the_api_is_slow_and_never_block_the_caller() -> None:
    api = FakeStatusApi()
    api.gate = threading.Event()
    rep = reporter(api)
    rep.training_started(started())
    t0 = time.monotonic()
    for n in range(1, 21):
        rep.round_finished(finished_round(n, 0.1 * n))
    assert time.monotonic() - t0 < 1.0  # the events never wait for the API server
    api.gate.set()
    rep.close()
    assert api.statuses[(TRAININGS, "mnist")]["round"] == 20
    assert api.statuses[(TRAININGS, "mnist")]["epsilonSpent"] == pytest.approx(2.0)
    assert api.applies(TRAININGS) < 20  # 21 events, far fewer writes


def test_failures_are_retried_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeStatusApi()
    api.fail = [
        StatusApiError(None, "ConnectionRefusedError"),
        StatusApiError(503, "503 ServiceUnavailable"),
        StatusApiError(429, "429 TooManyRequests", retry_after=0.05),
    ]
    rep = reporter(api)
    with caplog.at_level(logging.WARNING, "fedwarden.aggregator.kubernetes"):
        rep.training_started(started())
        rep.round_finished(finished_round(1, 0.2))
        rep.close()
    assert api.statuses[(TRAININGS, "mnist")]["round"] == 1
    assert api.statuses[(CLIENTS, "a")]["roundsParticipated"] == 1
    assert "ConnectionRefusedError" in caplog.text
    assert caplog.text.count("status not written") == 1  # one warning per failure streak


def test_a_forbidden_client_is_logged_once_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeStatusApi()
    api.forbidden.add((CLIENTS, "b"))
    rep = reporter(api)
    with caplog.at_level(logging.WARNING, "fedwarden.aggregator.kubernetes"):
        rep.training_started(started())
        rep.round_finished(finished_round(1, 0.2))
        assert rep.flush(5)
        rep.round_finished(finished_round(2, 0.3))
        rep.close()
    assert (CLIENTS, "b") not in api.statuses
    assert api.statuses[(CLIENTS, "a")]["roundsParticipated"] == 2
    assert caplog.text.count("team-a/b: FLClient status not written") == 1


def test_close_gives_up_at_its_deadline_when_the_api_server_is_down() -> None:
    api = FakeStatusApi()
    api.fail = [StatusApiError(None, "down")] * 10_000
    rep = reporter(api, flush_timeout=0.5)
    rep.training_started(started())
    t0 = time.monotonic()
    rep.close()
    assert time.monotonic() - t0 < 3.0
    assert (TRAININGS, "mnist") not in api.statuses


def test_a_restart_keeps_the_resources_values() -> None:
    api = FakeStatusApi(
        {
            (TRAININGS, "mnist"): {"round": 3, "epsilonSpent": 0.9, "rejectedUpdates": 4,
                                   "bannedClients": ["c"], "bannedCount": 1, "phase": "Running"},
            (CLIENTS, "c"): {"phase": "Banned", "banReason": "outlier: x", "strikes": 3},
            (CLIENTS, "a"): {"lastScore": 0.7, "roundsParticipated": 3, "phase": "Active"},
        }
    )  # fmt: skip
    api.owned = {k: set(v) - {"phase"} for k, v in api.statuses.items()}
    api.owned[(CLIENTS, "c")].add("phase")
    rep = reporter(api)
    last = finished_round(3, 0.9, sampled=["a"], strikes={"a": 0}, scores={},
                          rounds_participated={"a": 3}, rejected={})  # fmt: skip
    rep.resume(last)
    rep.training_started(started(resumed=3, epsilon=0.9, banned={"c": "x"}))
    rep.close()
    assert api.statuses[(TRAININGS, "mnist")]["rejectedUpdates"] == 4
    assert api.statuses[(CLIENTS, "a")]["lastScore"] == 0.7  # read back, so not dropped
    assert api.statuses[(CLIENTS, "c")]["phase"] == "Banned"
    assert ("get", CLIENTS, "a") in api.calls  # an earlier process wrote: clients read once


def test_other_events_write_nothing() -> None:
    api = FakeStatusApi()
    rep = reporter(api)
    rep.round_started(RoundStarted(1, "ab", ["a"], 1, 1.0))
    rep.rejected(Rejection(1, "a", "update", "tampered", "x"))
    rep.flagged(ClientFlagged(1, "a", "throttled", "x"))
    rep.close()
    assert api.calls == []


def test_epsilon_is_shown_with_four_decimals_rounded_up() -> None:
    from fedwarden.aggregator.kubernetes import displayed_epsilon

    assert displayed_epsilon(9.999614684952508) == 9.9997
    assert displayed_epsilon(0.5) == 0.5
    assert displayed_epsilon(0.1234) == 0.1234  # float noise in 0.1234 * 1e4 is absorbed
    assert displayed_epsilon(0.12340001) == 0.1235
    assert displayed_epsilon(1.0) == 1.0


# --- the durable record of spent privacy -------------------------------------------------


def test_the_training_status_is_the_record_of_what_was_spent() -> None:
    api = FakeStatusApi({(TRAININGS, "mnist"): {"round": 4, "epsilonSpent": 1.25}})
    rep = reporter(api)
    record = rep.recorded_progress()
    assert record is not None
    assert (record.rounds, record.epsilon) == (4, 1.25)
    assert "team-a/mnist" in record.where
    rep.close()
    fresh = reporter(FakeStatusApi())
    assert fresh.recorded_progress() == RecordedProgress(0, None, fresh_where(fresh))
    fresh.close()


def fresh_where(rep: KubernetesReporter) -> str:
    return f"FederatedTraining {rep.namespace}/{rep.name}'s status"


def test_an_unreadable_record_stops_the_start_and_a_forbidden_one_is_skipped() -> None:
    api = FakeStatusApi()
    api.fail.append(StatusApiError(None, "connection refused"))
    rep = reporter(api)
    with pytest.raises(OSError, match="what privacy budget was spent"):
        rep.recorded_progress()
    api.forbidden.add((TRAININGS, "mnist"))
    assert rep.recorded_progress() is None
    rep.close()


def test_a_lost_privacy_state_is_written_and_a_later_resumed_process_clears_it() -> None:
    api = FakeStatusApi({(TRAININGS, "mnist"): {"round": 4, "epsilonSpent": 1.25}})
    rep = reporter(api)
    rep.training_finished(
        TrainingFinished("privacy-state-lost", "privacy state lost: ...", 4, 1.25, 1e-5, {})
    )
    rep.close()
    status = api.statuses[(TRAININGS, "mnist")]
    assert status["privacyStateLost"] == "privacy state lost: ..."
    assert status["epsilonSpent"] == 1.25
    assert status["round"] == 4
    # the checkpoint volume restored: the next process resumes and does not carry it over
    state = StatusState()
    state.training_started(started(resumed=4, epsilon=1.25))
    assert "privacyStateLost" not in training_status(status, state)


def test_an_export_shows_as_the_model_on_the_training() -> None:
    api = FakeStatusApi()
    rep = reporter(api)
    rep.resume(None)
    rep.training_started(started())
    rep.round_finished(finished_round(1, 0.2))
    rep.model_exported(ModelExported(round=1, sha256="ab" * 32, directory="/out"))
    assert rep.flush(5)
    assert api.statuses[(TRAININGS, "mnist")]["model"] == {"round": 1, "sha256": "ab" * 32}
    rep.close()
    # a restarted aggregator that has not exported yet keeps the resource's model
    again = reporter(FakeStatusApi({(TRAININGS, "mnist"): api.statuses[(TRAININGS, "mnist")]}))
    again.resume(None)
    again.training_started(started(resumed=1))
    assert again.flush(5)
    statuses = again.api.statuses  # type: ignore[attr-defined]
    assert statuses[(TRAININGS, "mnist")]["model"]["round"] == 1
    again.close()


def test_the_status_says_which_unit_epsilon_protects() -> None:
    record = StatusState()
    record.training_started(
        started(
            privacy={"mode": "record", "unit": "record", "noise_multiplier": None, "delta": 1e-5}
        )
    )
    record.round_finished(finished_round(1, 0.7))
    status = training_status(None, record)
    assert status["privacyUnit"] == "record"
    assert status["epsilonSpent"] == 0.7  # the largest ε a site reported
    assert "noiseMultiplier" not in status  # the aggregator adds no noise
    client = StatusState()
    client.training_started(started(privacy={"mode": "central", "unit": "client", "delta": 1e-5}))
    assert training_status(None, client)["privacyUnit"] == "client"


def test_each_sites_record_level_epsilon_is_on_its_flclient_and_never_goes_down() -> None:
    state = StatusState()
    state.round_finished(finished_round(1, 0.7, site_epsilon={"a": 0.7, "b": 0.31234}))
    assert client_status(None, state.clients["b"])["epsilonSpent"] == 0.3124  # rounded up
    # an earlier process wrote more: the resource keeps it
    assert client_status({"epsilonSpent": 0.9}, state.clients["a"])["epsilonSpent"] == 0.9
    state.round_finished(finished_round(2, 0.7, site_epsilon={"a": 0.5}))
    assert state.clients["a"].epsilon == 0.7
    assert "epsilonSpent" not in client_status(None, ClientFacts(strikes=0))
