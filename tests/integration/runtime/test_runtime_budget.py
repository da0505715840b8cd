"""An exhausted privacy budget ends the training with a clear status, not a crash: the round that
would exceed it is not run (nothing of it spent), clients are told DONE with the reason. An
aggregator that lost its checkpoint while the durable record shows ε spent does not train."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_helpers import ClientThreads, RuntimePKI, make_aggregator

from fedwarden.aggregator import Reporter, RoundFinished, TrainingFinished
from fedwarden.aggregator.checkpoint import PrivacyStateLostError
from fedwarden.aggregator.reporting import RecordedProgress
from fedwarden.pipeline.accounting import get_accountant
from fedwarden.pipeline.round import ClippingConfig, PipelineConfig, PrivacyConfig

SIGMA, Q, DELTA = 2.0, 1.0, 1e-5


def epsilon_after(rounds: int) -> float:
    accountant = get_accountant("pld", sampling="poisson")
    accountant.step(SIGMA, Q, steps=rounds)
    return accountant.epsilon(DELTA)


def test_training_stops_when_the_budget_is_spent(runtime_pki: RuntimePKI) -> None:
    target = (epsilon_after(2) + epsilon_after(3)) / 2  # two rounds fit, a third does not
    privacy = PrivacyConfig(
        mode="central",
        noise_multiplier=SIGMA,
        target_epsilon=target,
        delta=DELTA,
        sample_rate=Q,
        sampling="poisson",
    )
    config = PipelineConfig.plain_fedavg()
    config = PipelineConfig(
        aggregator=config.aggregator,
        aggregator_params=config.aggregator_params,
        validation=config.validation,
        clipping=ClippingConfig(mode="fixed", clip_norm=1.0),
        free_riders=config.free_riders,
        privacy=privacy,
    )
    names = ["site-0", "site-1", "site-2"]
    agg, reporter = make_aggregator(
        runtime_pki,
        rounds=10,
        min_available=3,
        pipeline_config=config,
        sampling="poisson",
        fraction=Q,
    )
    try:
        assert agg.port is not None
        clients = ClientThreads(runtime_pki, agg.port, names).start()
        result = agg.wait(timeout=180)
        clients.join()
    finally:
        agg.stop()
    assert result is not None
    assert result.status == "budget-exhausted"
    assert "would bring ε to" in result.message
    assert result.rounds == 2
    assert result.epsilon <= target
    assert [r.round for r in reporter.of(RoundFinished)] == [1, 2]
    assert reporter.of(TrainingFinished)[-1].status == "budget-exhausted"
    for name in names:
        assert clients.results[name].status == "done"
        assert clients.results[name].reason == "budget-exhausted"


class _StatusOnTheResource(Reporter):
    """A durable record of an earlier aggregator's progress, as the training's status keeps it."""

    def __init__(self, rounds: int, epsilon: float | None) -> None:
        self.record = RecordedProgress(rounds, epsilon, "the resource's status")

    def recorded_progress(self) -> RecordedProgress:
        return self.record


def _central_dp() -> PipelineConfig:
    privacy = PrivacyConfig(
        mode="central", noise_multiplier=SIGMA, delta=DELTA, sample_rate=Q, sampling="poisson"
    )
    return PipelineConfig.recommended(privacy)


def test_a_lost_checkpoint_does_not_spend_the_budget_again(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    record = _StatusOnTheResource(rounds=3, epsilon=epsilon_after(3))
    with pytest.raises(PrivacyStateLostError, match="privacy state lost") as refused:
        make_aggregator(
            runtime_pki,
            rounds=10,
            min_available=1,
            pipeline_config=_central_dp(),
            reporter=record,
            checkpoint_dir=tmp_path / "state",  # empty: the volume was lost
            sampling="poisson",
            fraction=Q,
        )
    assert "ε = " in str(refused.value)
    assert "3 rounds" in str(refused.value)
    assert str(tmp_path / "state") in str(refused.value)


def test_a_record_without_spent_budget_or_no_dp_starts_afresh(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    for pipeline_config, record in (
        (_central_dp(), _StatusOnTheResource(rounds=0, epsilon=None)),
        (PipelineConfig.recommended(), _StatusOnTheResource(rounds=3, epsilon=None)),
    ):
        agg, _ = make_aggregator(
            runtime_pki,
            rounds=1,
            min_available=1,
            pipeline_config=pipeline_config,
            reporter=record,
            checkpoint_dir=tmp_path / "state",
            sampling="poisson",
            fraction=Q,
        )
        agg.stop()
