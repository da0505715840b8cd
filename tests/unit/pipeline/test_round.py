"""The round orchestrator: order of defences, DP accounting, budget enforcement, state."""

from dataclasses import replace

import numpy as np
import pytest

from fedwarden.pipeline.accounting import get_accountant
from fedwarden.pipeline.errors import (
    InvalidCohortError,
    PrivacyBudgetExhaustedError,
    UnsoundPrivacyError,
)
from fedwarden.pipeline.freeriders import FreeRiderConfig
from fedwarden.pipeline.round import (
    ClippingConfig,
    Pipeline,
    PipelineConfig,
    PrivacyConfig,
)
from fedwarden.pipeline.validation import ValidationConfig

D = 500


def _honest(rng: np.random.Generator, n: int, direction: np.ndarray) -> np.ndarray:
    return (direction + 0.5 * rng.normal(size=(n, D)) / np.sqrt(D)).astype(np.float32)


def _ids(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_a_clean_round_accepts_everyone_and_moves_along_the_honest_direction():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=D) / np.sqrt(D)
    pipe = Pipeline(PipelineConfig.recommended(), dim=D, seed=0)
    result = pipe.run_round(_honest(rng, 12, direction), _ids(12))
    assert result.rejected == {}
    assert result.accepted == _ids(12)
    assert result.aggregate.dtype == np.float32
    cosine = (
        result.aggregate @ direction / np.linalg.norm(result.aggregate) / np.linalg.norm(direction)
    )
    assert cosine > 0.9


def test_every_kind_of_bad_update_is_rejected_with_a_reason_and_counted():
    rng = np.random.default_rng(1)
    direction = rng.normal(size=D) / np.sqrt(D)
    honest = list(_honest(rng, 10, direction))
    bad = {
        "nan": np.full(D, np.nan, np.float32),
        "short": np.zeros(D - 1, np.float32),
        "int": np.zeros(D, np.int32),
        "boosted": (direction * 100).astype(np.float32),
        "zero": np.zeros(D, np.float32),
    }
    pipe = Pipeline(PipelineConfig.recommended(), dim=D, seed=0)
    result = pipe.run_round(honest + list(bad.values()), _ids(10) + list(bad))
    assert set(result.rejected) == set(bad)
    assert "non-finite" in result.rejected["nan"]
    assert "the model has 500" in result.rejected["short"]
    assert "dtype int32" in result.rejected["int"]
    assert "outlier" in result.rejected["boosted"]
    assert "zero update" in result.rejected["zero"]
    assert all(result.strikes[c] == 1 for c in bad)
    assert np.isfinite(result.aggregate).all()


def test_repeat_offenders_are_banned_and_stay_banned():
    rng = np.random.default_rng(2)
    direction = rng.normal(size=D) / np.sqrt(D)
    pipe = Pipeline(PipelineConfig.recommended(), dim=D, seed=0)
    banned_in = {}
    for round_number in range(1, 6):
        updates = np.concatenate([_honest(rng, 8, direction), np.zeros((1, D), np.float32)])
        result = pipe.run_round(updates, [*_ids(8), "rider"])
        for client in result.newly_banned:
            banned_in[client] = round_number
    assert banned_in == {"rider": 3}
    assert pipe.banned == {"rider"}
    assert "zero update" in pipe.ban_reason("rider")
    # a banned client is refused even with a perfect update
    result = pipe.run_round(_honest(rng, 9, direction), [*_ids(8), "rider"])
    assert result.rejected["rider"].startswith("banned:")


def test_too_few_valid_updates_skip_the_round_without_moving_the_model():
    pipe = Pipeline(PipelineConfig(aggregator="krum", aggregator_params={"f": 2}), dim=D, seed=0)
    rng = np.random.default_rng(3)
    result = pipe.run_round(_honest(rng, 4, rng.normal(size=D)), _ids(4))
    assert result.skipped is not None
    assert "krum needs at least 7" in result.skipped
    assert not result.aggregate.any()


def test_an_empty_cohort_is_an_error():
    pipe = Pipeline(PipelineConfig.recommended(), dim=D)
    with pytest.raises(InvalidCohortError, match="empty cohort"):
        pipe.run_round(np.zeros((0, D), np.float32), [])


def _dp_fedavg(privacy: PrivacyConfig) -> PipelineConfig:
    """DP-FedAvg: per-update checks only, so one client cannot change which others count."""
    return PipelineConfig(
        aggregator="fedavg",
        aggregator_params={},
        validation=ValidationConfig(outlier_z=None),
        free_riders=FreeRiderConfig(enabled=False),
        clipping=ClippingConfig(mode="fixed", clip_norm=1.0),
        privacy=privacy,
    )


def test_central_dp_adds_calibrated_noise_and_accounts_every_round():
    rng = np.random.default_rng(4)
    config = _dp_fedavg(PrivacyConfig(mode="central", noise_multiplier=1.0, sample_rate=0.1))
    pipe = Pipeline(config, dim=D, population=200, seed=7)
    epsilons = []
    for _ in range(3):
        result = pipe.run_round(_honest(rng, 20, rng.normal(size=D)), _ids(20))
        epsilons.append(result.epsilon)
        assert result.noise_std > 0
    assert epsilons[0] > 0
    assert epsilons == sorted(epsilons)
    assert len(set(epsilons)) == 3


def test_a_round_that_would_exceed_the_budget_is_refused_and_spends_nothing():
    rng = np.random.default_rng(5)
    config = _dp_fedavg(
        PrivacyConfig(mode="central", target_epsilon=1.0, rounds=5, sample_rate=0.1)
    )
    pipe = Pipeline(config, dim=D, population=200, seed=7)
    for _ in range(5):
        pipe.run_round(_honest(rng, 20, rng.normal(size=D)), _ids(20))
    spent = pipe.epsilon
    assert spent <= 1.0 + 1e-6
    with pytest.raises(PrivacyBudgetExhaustedError):
        pipe.run_round(_honest(rng, 20, rng.normal(size=D)), _ids(20))
    assert pipe.epsilon == spent
    assert pipe.round == 5


def test_dp_fedavg_noise_matches_its_fixed_denominator_sensitivity():
    config = _dp_fedavg(PrivacyConfig(mode="central", noise_multiplier=2.0, sample_rate=0.1))
    pipe = Pipeline(config, dim=D, population=200, seed=0)
    result = pipe.run_round(np.zeros((20, D), np.float32), _ids(20))
    # Σx/n with n = q·N = 20 fixed in advance: sensitivity C/n = 0.05, noise σ·C/n = 0.1
    assert result.noise_std == pytest.approx(0.1)
    assert np.std(result.aggregate) == pytest.approx(0.1, rel=0.15)


def test_poisson_dp_fedavg_with_cohort_filters_is_refused_as_unsound():
    config = replace(
        _dp_fedavg(PrivacyConfig(mode="central", noise_multiplier=1.0, sample_rate=0.1)),
        free_riders=FreeRiderConfig(),
    )
    with pytest.raises(UnsoundPrivacyError, match="no sensitivity bound"):
        Pipeline(config, dim=D, population=200)


def test_robust_aggregation_under_dp_pays_for_its_sensitivity():
    config = PipelineConfig(
        aggregator="trimmed-mean",
        aggregator_params={"beta": 0.2},
        clipping=ClippingConfig(mode="fixed", clip_norm=1.0),
        privacy=PrivacyConfig(mode="central", noise_multiplier=1.0, sample_rate=0.1),
    )
    pipe = Pipeline(config, dim=D, population=200, seed=0)
    rng = np.random.default_rng(10)
    result = pipe.run_round(_honest(rng, 20, rng.normal(size=D)), _ids(20))
    fedavg_noise = 1.0 * 1.0 / 20
    assert result.noise_std > 10 * fedavg_noise


def test_a_small_dp_cohort_is_padded_and_spends_instead_of_skipping():
    # skipping would reveal the (private) cohort size; the round releases a noised aggregate
    config = PipelineConfig(
        aggregator="trimmed-mean",
        aggregator_params={"beta": 0.2},
        clipping=ClippingConfig(mode="fixed", clip_norm=1.0),
        privacy=PrivacyConfig(mode="central", noise_multiplier=1.0, sample_rate=0.1),
    )
    pipe = Pipeline(config, dim=D, population=20, seed=0)
    result = pipe.run_round(np.ones((1, D), np.float32) / np.sqrt(D), ["lonely"])
    assert result.skipped is None
    assert result.epsilon > 0


def test_central_dp_refuses_unclipped_updates():
    config = PipelineConfig(
        clipping=ClippingConfig(mode="none"),
        privacy=PrivacyConfig(mode="central", noise_multiplier=1.0, sample_rate=0.1),
    )
    with pytest.raises(ValueError, match="central DP needs clipping"):
        Pipeline(config, dim=D, population=100)


def test_local_dp_accounts_without_clipping_the_noised_updates_again():
    rng = np.random.default_rng(6)
    config = PipelineConfig(
        aggregator="fedavg",
        aggregator_params={},
        clipping=ClippingConfig(mode="fixed", clip_norm=0.5),
        validation=ValidationConfig(outlier_z=None),
        privacy=PrivacyConfig(mode="local", noise_multiplier=2.0, sample_rate=0.5),
    )
    pipe = Pipeline(config, dim=D, population=20, seed=0)
    noised = rng.normal(size=(10, D)).astype(np.float32)
    result = pipe.run_round(noised, _ids(10))
    assert result.rejected == {}
    np.testing.assert_allclose(result.aggregate, noised.mean(0), rtol=1e-5, atol=1e-6)
    # the aggregator sees who sent: no amplification by sampling, σ/2 per round in full
    reference = get_accountant("pld")
    reference.step(1.0, 1.0)
    assert result.epsilon == pytest.approx(reference.epsilon(1e-5))


def test_state_round_trips_so_a_restart_resumes_exactly():
    rng = np.random.default_rng(8)
    config = PipelineConfig(
        clipping=ClippingConfig(mode="adaptive", clip_norm=0.1),
        privacy=PrivacyConfig(mode="central", noise_multiplier=5.0, sample_rate=0.2),
        aggregator="trimmed-mean",
        aggregator_params={"beta": 0.1},
    )
    cohorts = [_honest(rng, 20, rng.normal(size=D)) for _ in range(4)]
    cohorts[1][3] = 0.0
    uninterrupted = Pipeline(config, dim=D, population=100, seed=1)
    for cohort in cohorts:
        uninterrupted.run_round(cohort, _ids(20))
    first = Pipeline(config, dim=D, population=100, seed=1)
    for cohort in cohorts[:2]:
        first.run_round(cohort, _ids(20))
    resumed = Pipeline(config, dim=D, population=100, seed=2)
    resumed.load_state_dict(first.state_dict())
    for cohort in cohorts[2:]:
        resumed.run_round(cohort, _ids(20))
    assert resumed.round == uninterrupted.round == 4
    assert resumed.epsilon == pytest.approx(uninterrupted.epsilon, rel=1e-9)
    assert resumed.state_dict()["strikes"] == uninterrupted.state_dict()["strikes"]
    # a seeded simulation resumes the same noise stream, so even the adaptive C agrees
    assert resumed.state_dict()["clipper"] == uninterrupted.state_dict()["clipper"]


def test_client_weights_cannot_buy_influence_in_the_recommended_pipeline():
    rng = np.random.default_rng(9)
    direction = rng.normal(size=D) / np.sqrt(D)
    cohort = _honest(rng, 10, direction)
    cohort[0] = -3 * direction.astype(np.float32)
    weights = np.ones(10)
    pipe = Pipeline(PipelineConfig.recommended(), dim=D, seed=0)
    modest = pipe.run_round(cohort, _ids(10), weights=weights).aggregate
    weights[0] = 1e9
    pipe = Pipeline(PipelineConfig.recommended(), dim=D, seed=0)
    greedy = pipe.run_round(cohort, _ids(10), weights=weights).aggregate
    np.testing.assert_allclose(greedy, modest, atol=1e-6)


def test_plain_fedavg_is_really_undefended():
    config = PipelineConfig.plain_fedavg()
    assert config.free_riders == FreeRiderConfig(enabled=False)
    pipe = Pipeline(config, dim=D)
    cohort = np.ones((5, D), np.float32)
    cohort[0] *= 1000
    result = pipe.run_round(cohort, _ids(5))
    assert result.rejected == {}
    assert result.aggregate[0] == pytest.approx((1000 + 4) / 5)


def test_an_empty_central_dp_round_still_releases_noise_and_spends():
    # under Poisson sampling "nobody took part" is itself private: no skipping, no free rounds
    config = _dp_fedavg(PrivacyConfig(mode="central", noise_multiplier=1.0, sample_rate=0.1))
    pipe = Pipeline(config, dim=D, population=200, seed=0)
    result = pipe.run_round(np.zeros((0, D), np.float32), [])
    assert result.epsilon > 0
    assert result.noise_std > 0
    assert result.aggregate.any()
