"""An exhausted privacy budget ends the training with a clear status, not a crash: the round that
would exceed it is not run (nothing of it spent), clients are told DONE with the reason."""

from __future__ import annotations

from runtime_helpers import ClientThreads, RuntimePKI, make_aggregator

from fedwarden.aggregator import RoundFinished, TrainingFinished
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
