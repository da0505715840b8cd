import numpy as np
import pytest

from fedwarden.pipeline.accounting import calibrate_noise_multiplier, get_accountant
from fedwarden.sim.datasets import load_dataset
from fedwarden.sim.models import DPSGDConfig, dp_sgd, evaluate, make_model


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", seed=0)
    return data, make_model("logreg", data.n_features, data.n_classes)


def test_without_noise_dp_sgd_learns(digits):
    data, model = digits
    params = model.init(np.random.default_rng(0))
    config = DPSGDConfig(clip_norm=1.0, noise_multiplier=0.0, sample_rate=0.05)
    trained, steps = dp_sgd(
        model,
        params,
        data.x_train,
        data.y_train,
        epochs=2,
        lr=0.5,
        config=config,
        rng=np.random.default_rng(1),
    )
    assert steps == 2 * 20
    assert evaluate(model, trained, data.x_test, data.y_test)[0] > 0.85


def test_one_example_moves_a_step_by_at_most_lr_c_over_the_expected_batch(digits):
    # the sensitivity DP-SGD's accounting rests on: one example's clipped gradient is <= C
    data, model = digits
    params = model.init(np.random.default_rng(0))
    x, y = data.x_train[:1] * 1000, data.y_train[:1]  # a huge gradient, clipped to C
    config = DPSGDConfig(clip_norm=0.5, noise_multiplier=0.0, sample_rate=1.0)
    trained, steps = dp_sgd(
        model, params, x, y, epochs=1, lr=1.0, config=config, rng=np.random.default_rng(2)
    )
    assert steps == 1
    assert np.linalg.norm(trained - params) == pytest.approx(0.5, rel=1e-4)


def test_noise_has_the_stated_scale(digits):
    data, model = digits
    params = np.zeros(model.dim, np.float32)
    config = DPSGDConfig(clip_norm=1.0, noise_multiplier=2.0, sample_rate=1.0)
    trained, _ = dp_sgd(
        model,
        params,
        data.x_train[:10],
        data.y_train[:10],
        epochs=1,
        lr=1.0,
        config=config,
        rng=np.random.default_rng(3),
    )
    # q = 1 draws every example, so the run without noise takes the same steps and the
    # difference is the noise alone: per coordinate lr·σC / (q·n) = 2/10
    residual = (
        trained
        - dp_sgd(
            model,
            params,
            data.x_train[:10],
            data.y_train[:10],
            epochs=1,
            lr=1.0,
            config=DPSGDConfig(1.0, 0.0, 1.0),
            rng=np.random.default_rng(3),
        )[0]
    )
    assert np.std(residual) == pytest.approx(0.2, rel=0.1)


def test_calibrated_dp_sgd_spends_the_target_epsilon():
    q, rounds, steps_per_round = 0.1, 10, 10
    sigma = calibrate_noise_multiplier(1.0, 1e-5, q, rounds * steps_per_round, accountant="rdp")
    accountant = get_accountant("rdp")
    accountant.step(sigma, q, rounds * steps_per_round)
    assert accountant.epsilon(1e-5) <= 1.0 + 1e-6


@pytest.mark.parametrize(
    "kwargs", [{"clip_norm": 0}, {"noise_multiplier": -1}, {"sample_rate": 0}, {"sample_rate": 2}]
)
def test_absurd_settings_are_refused(kwargs):
    settings = {"clip_norm": 1.0, "noise_multiplier": 1.0, "sample_rate": 0.1} | kwargs
    with pytest.raises(ValueError, match="must be"):
        DPSGDConfig(**settings)
