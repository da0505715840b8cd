"""Each attack produces what its paper describes."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from fedwarden.sim.attacks import (
    ATTACKS,
    DATA_POISONING,
    MODEL_POISONING,
    ALittleIsEnough,
    Backdoor,
    ColludingSybils,
    GaussianAttack,
    InnerProductManipulation,
    LabelFlip,
    SignFlip,
    _krum_choice,
    alie_z,
    attack_parameters,
    backdoor_success_rate,
    make_attack,
)
from fedwarden.sim.datasets import load_dataset
from fedwarden.sim.models import local_sgd, make_model


@pytest.fixture
def honest() -> np.ndarray:
    rng = np.random.default_rng(0)
    common = rng.normal(size=50)
    return (common + 0.5 * rng.normal(size=(20, 50))).astype(np.float32)


def test_registry() -> None:
    assert set(ATTACKS) == {
        "none",
        "sign-flip",
        "gaussian",
        "ipm",
        "alie",
        "sybil",
        "label-flip",
        "backdoor",
    }
    assert set(MODEL_POISONING) == {"sign-flip", "gaussian", "ipm", "alie", "sybil"}
    assert set(DATA_POISONING) == {"label-flip", "backdoor"}
    assert attack_parameters("ipm") == {"eps": 0.1}


def test_sign_flip_sends_minus_scale_times_own_update(honest: np.ndarray) -> None:
    own = honest[:3]
    out = SignFlip(scale=4.0).craft(honest, own, 23, np.random.default_rng(0))
    np.testing.assert_allclose(out, -4.0 * own, rtol=1e-6)
    assert out.dtype == np.float32


def test_gaussian_has_the_stated_spread(honest: np.ndarray) -> None:
    out = GaussianAttack(sigma=200.0).craft(honest, np.zeros((4, 50)), 24, np.random.default_rng(0))
    assert out.shape == (4, 50)
    assert abs(out.mean()) < 30
    assert 180 < out.std() < 220
    assert not np.allclose(out[0], out[1])


def test_ipm_is_anti_aligned_with_the_honest_mean(honest: np.ndarray) -> None:
    out = InnerProductManipulation(eps=0.5).craft(honest, np.zeros((5, 50)), 25, None)  # type: ignore[arg-type]
    mean = honest.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(out, np.tile(-0.5 * mean, (5, 1)), rtol=1e-5)
    cos = out[0] @ mean / (np.linalg.norm(out[0]) * np.linalg.norm(mean))
    assert cos == pytest.approx(-1.0, abs=1e-6)
    # the cohort's mean moves against the honest direction only when eps is large (scaling)
    big = InnerProductManipulation(eps=100.0).craft(honest, np.zeros((5, 50)), 25, None)  # type: ignore[arg-type]
    assert np.vstack([honest, big]).mean(axis=0) @ mean < 0


def test_alie_z_follows_the_paper() -> None:
    # n = 25, f = 5: s = floor(13.5) - 5 = 8, z = Phi^-1(17/25)
    assert alie_z(25, 5) == pytest.approx(NormalDist().inv_cdf(17 / 25))
    assert alie_z(25, 5) == pytest.approx(0.468, abs=1e-3)
    # n = 50, f = 24: s = 2, z = Phi^-1(48/50), the paper's example value ~1.75
    assert alie_z(50, 24) == pytest.approx(1.75, abs=0.01)
    # n = 10, f = 1: s = 5, z = Phi^-1(0.5) = 0; with a single attacker there is nothing to shift
    assert alie_z(10, 1) == pytest.approx(0.0)


def test_alie_stays_inside_the_honest_coordinate_range(honest: np.ndarray) -> None:
    out = ALittleIsEnough().craft(honest, np.zeros((5, 50)), 25, None)  # type: ignore[arg-type]
    h = honest.astype(np.float64)
    expected = h.mean(axis=0) - alie_z(25, 5) * h.std(axis=0, ddof=1)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)
    assert np.all(out >= h.min(axis=0))
    assert np.all(out <= h.max(axis=0))
    # and every attacker sends the same vector, shifted below the mean on every coordinate
    assert np.all(out == out[0])
    assert np.all(out[0] < h.mean(axis=0))


def test_sybils_are_identical_and_win_krums_selection(honest: np.ndarray) -> None:
    out = ColludingSybils().craft(honest, np.zeros((5, 50)), 25, None)  # type: ignore[arg-type]
    assert np.all(out == out[0])
    mean = honest.astype(np.float64).mean(axis=0)
    shift = out[0] - mean  # -lam * sign(mean), lam > 0
    lam = float(np.abs(shift).max())
    assert lam > 0
    np.testing.assert_allclose(shift, -lam * np.sign(mean), rtol=1e-4, atol=1e-5)
    cohort = np.vstack([honest, out]).astype(np.float64)
    assert _krum_choice(cohort, 5) >= len(honest)
    # a bit further and Krum would no longer pick it: the search found (close to) the largest
    further = np.tile(mean - 1.1 * lam * np.sign(mean), (5, 1))
    assert _krum_choice(np.vstack([honest, further]), 5) < len(honest)
    fixed = ColludingSybils(lam=2.0).craft(honest, np.zeros((3, 50)), 23, None)  # type: ignore[arg-type]
    np.testing.assert_allclose(fixed[0], mean - 2.0 * np.sign(mean), rtol=1e-5)


def test_label_flip_maps_l_to_last_minus_l() -> None:
    y = np.arange(10)
    x = np.zeros((10, 3), np.float32)
    x2, y2 = LabelFlip().poison(x, y, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(y2, 9 - y)
    assert x2 is x


def test_backdoor_trigger_poisoning_and_success_rate() -> None:
    ds = load_dataset("digits")
    attack = Backdoor(target=0, trigger_size=4, poison_fraction=0.5)
    trigger = attack.trigger(ds)
    np.testing.assert_array_equal(trigger.indices, [60, 61, 62, 63])
    assert np.all(trigger.values > ds.x_train[:, trigger.indices].max(axis=0))
    x, y = ds.x_train[:100], ds.y_train[:100]
    xp, yp = attack.poison_with(trigger, x, y, np.random.default_rng(0))
    assert len(yp) == 150
    np.testing.assert_array_equal(xp[:100], x)
    assert np.all(yp[100:] == 0)
    np.testing.assert_array_equal(xp[100:, trigger.indices], np.tile(trigger.values, (50, 1)))

    model = make_model("logreg", ds.n_features, ds.n_classes)
    clean = local_sgd(
        model,
        model.init(np.random.default_rng(0)),
        ds.x_train,
        ds.y_train,
        epochs=3,
        lr=0.1,
        batch_size=16,
        rng=np.random.default_rng(0),
    )
    xb, yb = attack.poison_with(trigger, ds.x_train, ds.y_train, np.random.default_rng(0))
    poisoned = local_sgd(
        model,
        model.init(np.random.default_rng(0)),
        xb,
        yb,
        epochs=3,
        lr=0.1,
        batch_size=16,
        rng=np.random.default_rng(0),
    )
    clean_rate = backdoor_success_rate(model.predict, clean, ds.x_test, ds.y_test, trigger)
    bad_rate = backdoor_success_rate(model.predict, poisoned, ds.x_test, ds.y_test, trigger)
    assert clean_rate < 0.2
    assert bad_rate > 0.9
    # inputs whose label is already the target do not count
    only_target = ds.y_test == 0
    assert (
        backdoor_success_rate(
            model.predict, poisoned, ds.x_test[only_target], ds.y_test[only_target], trigger
        )
        == 0.0
    )


def test_make_attack_converts_and_validates_parameters() -> None:
    attack = make_attack("ipm", eps="0.5")
    assert attack == InnerProductManipulation(eps=0.5)
    assert make_attack("backdoor", target="3").target == 3  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown attack"):
        make_attack("teleport")
    with pytest.raises(ValueError, match="has no parameter beta; its parameters: eps"):
        make_attack("ipm", beta=1)
    with pytest.raises(ValueError, match="must be a number"):
        make_attack("alie", z="big")
    with pytest.raises(ValueError, match="eps must be > 0"):
        make_attack("ipm", eps=-1)
    with pytest.raises(ValueError, match="not a class"):
        make_attack("backdoor", target=7).trigger(load_dataset("wine"))  # type: ignore[union-attr]
