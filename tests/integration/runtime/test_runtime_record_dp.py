"""Record-level DP over the real mTLS runtime: every site trains with DP-SGD under its own
budget and signs its ε into its updates; the aggregator reports the largest, refuses an update
that carries none, and ends the training when every site's budget is spent."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from runtime_helpers import TASK, RuntimePKI, make_aggregator, wait_for

from fedwarden.aggregator import RoundFinished, TrainingFinished, TrainingStarted
from fedwarden.client import FederationClient
from fedwarden.client.tasks import BuiltinTask
from fedwarden.pipeline.freeriders import FreeRiderConfig
from fedwarden.pipeline.round import ClippingConfig, PipelineConfig, PrivacyConfig
from fedwarden.pipeline.validation import ValidationConfig

TARGET, DELTA, SITE_ROUNDS = 1.0, 1e-5, 2
NAMES = ["site-0", "site-1", "site-2"]


def record_pipeline() -> PipelineConfig:
    return PipelineConfig(
        aggregator="fedavg",
        aggregator_params={},
        validation=ValidationConfig(outlier_z=None),
        clipping=ClippingConfig(mode="fixed", clip_norm=10.0),
        free_riders=FreeRiderConfig(enabled=False),
        privacy=PrivacyConfig(mode="record", target_epsilon=TARGET, delta=DELTA),
    )


def run_sites(pki: RuntimePKI, port: int, tasks: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    clients = {n: FederationClient(pki.client_config(n, port), t) for n, t in tasks.items()}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, clients[n].run()), daemon=True)
        for n in clients
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return results


def private_site(index: int, rounds: int = SITE_ROUNDS) -> BuiltinTask:
    return BuiltinTask(
        TASK,
        partition="iid",
        client_index=index,
        num_clients=len(NAMES),
        seed=index,
        dp_epsilon=TARGET,
        dp_delta=DELTA,
        dp_rounds=rounds,
    )


def test_the_training_ends_when_every_site_has_spent_its_budget(runtime_pki: RuntimePKI) -> None:
    announced = {"record_dp": {"target_epsilon": TARGET, "delta": DELTA, "rounds": SITE_ROUNDS}}
    agg, reporter = make_aggregator(
        runtime_pki,
        rounds=10,
        min_available=3,
        pipeline_config=record_pipeline(),
        task=announced,
    )
    try:
        assert agg.port is not None
        results = run_sites(
            runtime_pki, agg.port, {n: private_site(i) for i, n in enumerate(NAMES)}
        )
        result = agg.wait(timeout=180)
    finally:
        agg.stop()
    assert result is not None
    assert result.status == "budget-exhausted"
    assert "record-level privacy budget is spent" in result.message
    assert result.rounds == SITE_ROUNDS
    rounds = reporter.of(RoundFinished)
    assert [r.accepted for r in rounds] == [NAMES, NAMES]
    # the largest ε over the sites, never more than each site's budget, never going down
    epsilons = [r.epsilon for r in rounds]
    assert 0 < epsilons[0] < epsilons[1] <= TARGET
    assert epsilons[1] > 0.9 * TARGET
    assert reporter.of(TrainingStarted)[0].privacy["unit"] == "record"
    assert max(rounds[1].site_epsilon.values()) == epsilons[1]  # each site's, on its FLClient
    assert set(rounds[1].site_epsilon) == set(NAMES)
    assert reporter.of(TrainingFinished)[-1].epsilon == epsilons[1]
    for name in NAMES:
        assert results[name].status == "done"
        assert results[name].reason == "budget-exhausted"
        assert [o.status for o in results[name].rounds] == ["accepted", "accepted"]


def test_a_site_without_record_level_dp_cannot_take_part(runtime_pki: RuntimePKI) -> None:
    announced = {"record_dp": {"target_epsilon": TARGET, "delta": DELTA, "rounds": SITE_ROUNDS}}
    agg, _ = make_aggregator(
        runtime_pki,
        rounds=1,
        min_available=1,
        pipeline_config=record_pipeline(),
        task=announced,
        round_timeout=10.0,
    )
    try:
        assert agg.port is not None
        plain = BuiltinTask(TASK, partition="iid", client_index=0, num_clients=1, seed=0)
        results = run_sites(runtime_pki, agg.port, {"site-0": plain})
    finally:
        agg.stop()
    assert results["site-0"].status == "failed"
    assert results["site-0"].reason == "app-error"
    assert "report the ε it has spent" in results["site-0"].message


def test_a_restarted_aggregator_keeps_each_sites_largest_epsilon(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    announced = {"record_dp": {"target_epsilon": TARGET, "delta": DELTA, "rounds": 3}}
    settings: dict[str, Any] = {
        "rounds": 10,
        "min_available": 3,
        "pipeline_config": record_pipeline(),
        "task": announced,
        "checkpoint_dir": tmp_path / "state",
    }
    agg, reporter = make_aggregator(runtime_pki, **settings)
    sites = {n: private_site(i, rounds=3) for i, n in enumerate(NAMES)}  # not spent after 1
    clients = {
        n: FederationClient(runtime_pki.client_config(n, agg.port or 0), t)
        for n, t in sites.items()
    }
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients.values()]
    try:
        for t in threads:
            t.start()
        assert wait_for(lambda: len(reporter.of(RoundFinished)) >= 1, timeout=120)
    finally:
        agg.stop()
        for c in clients.values():
            c.stop()
    before = {n: agg.pipeline.site_epsilon(n) for n in NAMES}
    assert all(e is not None and 0 < e < TARGET for e in before.values())

    restarted, _ = make_aggregator(runtime_pki, **settings)
    try:
        assert restarted.pipeline.epsilon == max(e for e in before.values() if e is not None)
        for name in NAMES:
            assert restarted.pipeline.site_epsilon(name) == before[name]
    finally:
        restarted.stop()
