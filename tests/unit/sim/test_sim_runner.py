"""End-to-end runs of the simulation through the pipeline (small and fast)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fedwarden.pipeline.round import PipelineConfig, PrivacyConfig
from fedwarden.sim.attacks import backdoor_success_rate, make_attack
from fedwarden.sim.datasets import load_dataset
from fedwarden.sim.models import make_model
from fedwarden.sim.runner import (
    Detection,
    SimulationConfig,
    reason_category,
    run_simulation,
)

SMALL = SimulationConfig(
    dataset="digits",
    model="logreg",
    clients=10,
    attackers=0,
    attack="none",
    free_riders=0,
    partition="iid",
    rounds=8,
    lr=0.2,
    seed=1,
    pipeline=PipelineConfig.plain_fedavg(),
)


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def clean_accuracy(digits) -> float:  # type: ignore[no-untyped-def]
    return run_simulation(SMALL, dataset=digits).final_accuracy


def test_without_attack_it_learns(digits, clean_accuracy: float) -> None:  # type: ignore[no-untyped-def]
    assert clean_accuracy > 0.8  # chance is 0.1
    result = run_simulation(SMALL, dataset=digits)
    assert result.initial_accuracy < 0.3
    assert result.rounds_run == 8
    assert [r.round for r in result.rounds] == list(range(1, 9))
    assert result.backdoor_success is None
    assert result.initial_backdoor_success is None
    assert result.epsilon == 0.0
    assert result.stopped is None
    assert not result.banned


def test_recommended_defences_learn_without_attack(digits) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(SMALL, pipeline=PipelineConfig.recommended(), rounds=10)
    result = run_simulation(config, dataset=digits)
    assert result.final_accuracy > 0.7


@pytest.mark.parametrize("attack", ["sign-flip", "gaussian"])
def test_plain_fedavg_is_hurt_by_model_poisoning(
    digits, clean_accuracy: float, attack: str
) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(SMALL, attackers=3, attack=attack)
    result = run_simulation(config, dataset=digits)
    assert len(result.attackers) == 3
    assert result.final_accuracy < clean_accuracy - 0.3


def test_inflated_sample_counts_buy_influence_only_where_counts_are_trusted(digits) -> None:  # type: ignore[no-untyped-def]
    recommended = PipelineConfig.recommended()
    # −1 × own update: not an outlier by norm, and with the opposition test off (it refuses
    # an update against an IID cohort that agrees), only the weight decides.
    trusting = dataclasses.replace(
        recommended,
        aggregator="fedavg",
        aggregator_params={},
        free_riders=dataclasses.replace(recommended.free_riders, opposition_cosine=None),
    )
    config = dataclasses.replace(
        SMALL, attackers=2, attack="sign-flip", attack_params={"scale": 1.0}, rounds=10
    )
    inflated = dataclasses.replace(config, attacker_claimed_examples=10_000)
    # Clipping keeps honest-count FedAvg learning: two of ten clients weigh a fifth.
    assert (
        run_simulation(
            dataclasses.replace(config, pipeline=trusting), dataset=digits
        ).final_accuracy
        > 0.7
    )
    # Claiming 10,000 examples against about 130 each, the two take over the weighted mean...
    captured = run_simulation(dataclasses.replace(inflated, pipeline=trusting), dataset=digits)
    assert captured.final_accuracy < 0.3
    # ...and change nothing for a rule that ignores the counts: the same run, bit for bit.
    robust = [
        run_simulation(dataclasses.replace(c, pipeline=recommended), dataset=digits)
        for c in (config, inflated)
    ]
    assert robust[0].final_accuracy > 0.7
    assert [r.accuracy for r in robust[0].rounds] == [r.accuracy for r in robust[1].rounds]


def test_same_seed_same_run_other_seed_other_run(digits) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(SMALL, attackers=2, attack="alie", rounds=3)
    a, b = run_simulation(config, dataset=digits), run_simulation(config, dataset=digits)
    assert [r.accuracy for r in a.rounds] == [r.accuracy for r in b.rounds]
    assert a.attackers == b.attackers
    c = run_simulation(dataclasses.replace(config, seed=2), dataset=digits)
    assert [r.accuracy for r in a.rounds] != [r.accuracy for r in c.rounds]


def test_backdoor_success_is_reported(digits) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(SMALL, attackers=3, attack="backdoor", rounds=4)
    result = run_simulation(config, dataset=digits)
    assert result.backdoor_success is not None
    assert 0.0 <= result.backdoor_success <= 1.0
    assert all(r.backdoor_success is not None for r in result.rounds)
    # three of ten clients poisoning half their data, unboosted, against plain FedAvg
    assert result.backdoor_success > 0.3


def test_the_initial_models_backdoor_rate_is_measured_before_any_training(digits) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(SMALL, attackers=3, attack="backdoor", rounds=1)
    result = run_simulation(config, dataset=digits)
    model = make_model(config.model, digits.n_features, digits.n_classes, hidden=config.hidden)
    s_init = np.random.SeedSequence(config.seed).spawn(8)[4]  # run_simulation's init stream
    initial = model.init(np.random.default_rng(s_init))
    trigger = make_attack("backdoor").trigger(digits)
    expected = backdoor_success_rate(model.predict, initial, digits.x_test, digits.y_test, trigger)
    assert result.initial_backdoor_success == expected
    assert result.to_dict()["initial_backdoor_success"] == expected


def test_free_riders_are_banned_and_never_sampled_again(digits) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(
        SMALL, free_riders=2, free_rider_kind="zero", pipeline=PipelineConfig.recommended()
    )
    result = run_simulation(config, dataset=digits)
    assert set(result.free_riders_banned) == set(result.free_riders)
    assert result.free_rider_detection.recall == 1.0
    for client, info in result.banned.items():
        later = [r for r in result.rounds if r.round > info["round"]]
        assert all(client not in r.rejected for r in later)  # not sampled, so not even refused
    assert "banned" not in result.rejections
    assert result.rejections_by_role.get("free_rider", 0) >= 2 * 3 - 1


def test_every_role_present_and_json_ready(digits) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(
        SMALL,
        clients=12,
        attackers=2,
        attack="ipm",
        attack_params={"eps": 0.5},
        free_riders=2,
        free_rider_kind="replay-noise",
        partition="dirichlet",
        alpha=0.5,
        rounds=3,
        model="mlp",
        pipeline=PipelineConfig.recommended(),
    )
    result = run_simulation(config, dataset=digits)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["rounds_run"] == 3
    assert len(payload["accuracy"]) == 3
    assert payload["config"]["attack_params"] == {"eps": 0.5}
    assert payload["config"]["pipeline"]["aggregator"] == config.pipeline.aggregator
    assert set(payload["attackers"]).isdisjoint(payload["free_riders"])
    assert 0.0 <= payload["label_skew"] <= 1.0


def test_client_sampling(digits) -> None:  # type: ignore[no-untyped-def]
    fixed = dataclasses.replace(SMALL, clients=20, clients_per_round=5, rounds=4)
    assert all(r.participants == 5 for r in run_simulation(fixed, dataset=digits).rounds)
    poisson = dataclasses.replace(fixed, sampling="poisson", rounds=6)
    sizes = [r.participants for r in run_simulation(poisson, dataset=digits).rounds]
    assert len(set(sizes)) > 1


def test_exhausted_privacy_budget_stops_training(digits) -> None:  # type: ignore[no-untyped-def]
    privacy = PrivacyConfig(mode="central", noise_multiplier=0.5, target_epsilon=0.1)
    config = dataclasses.replace(
        SMALL, pipeline=dataclasses.replace(PipelineConfig.recommended(), privacy=privacy)
    )
    result = run_simulation(config, dataset=digits)
    assert result.stopped is not None
    assert "privacy budget" in result.stopped
    assert result.rounds_run < config.rounds
    assert result.epsilon <= 0.1


def test_central_and_local_dp_run_and_account(digits) -> None:  # type: ignore[no-untyped-def]
    for mode in ("central", "local"):
        # (a large σ keeps the PLD accountant quick)
        privacy = PrivacyConfig(mode=mode, noise_multiplier=3.0)  # type: ignore[arg-type]
        config = dataclasses.replace(
            SMALL,
            clients=20,
            clients_per_round=10,
            rounds=2,
            pipeline=dataclasses.replace(PipelineConfig.recommended(), privacy=privacy),
        )
        result = run_simulation(config, dataset=digits)
        assert result.rounds_run == 2
        assert result.epsilon > 0
        eps = [r.epsilon for r in result.rounds]
        assert eps == sorted(eps)
        assert result.delta == 1e-5
        assert np.isfinite(result.final_accuracy)


def test_with_dp_calibrates_for_a_target_epsilon(digits) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(
        SMALL, clients=20, clients_per_round=10, rounds=2, pipeline=PipelineConfig.recommended()
    ).with_dp("central", target_epsilon=8.0, accountant="rdp")  # rdp: a quicker calibration
    assert config.effective_sampling == "poisson"
    assert config.pipeline.privacy.rounds == 2
    assert config.pipeline.privacy.sample_rate == 0.5
    result = run_simulation(config, dataset=digits)
    assert result.noise_multiplier is not None
    assert result.stopped is None
    assert 0 < result.epsilon <= 8.0


def test_dp_noise_is_seeded_unless_asked_otherwise(digits) -> None:  # type: ignore[no-untyped-def]
    privacy = PrivacyConfig(mode="central", noise_multiplier=3.0)
    config = dataclasses.replace(
        SMALL,
        rounds=2,
        pipeline=dataclasses.replace(PipelineConfig.recommended(), privacy=privacy),
    )
    a, b = run_simulation(config, dataset=digits), run_simulation(config, dataset=digits)
    assert a.noise_seeded
    assert a.final_loss == b.final_loss
    fresh = dataclasses.replace(config, seeded_noise=False)
    c, d = run_simulation(fresh, dataset=digits), run_simulation(fresh, dataset=digits)
    assert not c.noise_seeded
    assert c.final_loss != d.final_loss


def test_dataset_must_match_the_config(digits) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="data set is 'digits'"):
        run_simulation(dataclasses.replace(SMALL, dataset="wine"), dataset=digits)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attackers": 8, "free_riders": 2}, "leave no honest client"),
        ({"attack": "teleport"}, "unknown attack"),
        ({"attack": "ipm", "attack_params": {"beta": 1}}, "has no parameter"),
        ({"dataset": "imagenet"}, "unknown dataset"),
        ({"clients_per_round": 11}, "clients_per_round"),
        ({"rounds": 0}, "rounds"),
        ({"seed": -1}, "seed"),
        ({"lr": -1.0}, "lr"),
        ({"free_rider_kind": "lazy"}, "unknown free-rider kind"),
        ({"attacker_claimed_examples": 0}, "attacker_claimed_examples must be >= 1"),
    ],
)
def test_bad_configurations_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **changes)  # type: ignore[arg-type]


def test_detection_metrics() -> None:
    d = Detection.of({"a", "b", "x"}, {"a", "b", "c", "d"})
    assert d.precision == pytest.approx(2 / 3)
    assert d.recall == pytest.approx(0.5)
    assert d.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert Detection.of(set(), {"a"}) == Detection(None, 0.0, None)
    assert Detection.of({"x"}, {"a"}).f1 == 0.0


def test_reason_categories() -> None:
    assert reason_category("free-riding: zero update (norm 0, cohort median 0.5)") == (
        "free-riding: zero update"
    )
    assert reason_category("statistical outlier: norm 12.3 has robust z-score 9") == (
        "statistical outlier: norm"
    )
    assert reason_category("banned: 3 strikes, the last in round 4: zero update") == "banned"
