"""A site's own DP-SGD budget: calibrated to the planned rounds, never exceeded."""

from __future__ import annotations

import numpy as np
import pytest

from fedwarden.pipeline.errors import PrivacyBudgetExhaustedError
from fedwarden.sim.models import make_model
from fedwarden.sim.runner import SimulationConfig, run_simulation
from fedwarden.sim.site_dp import SiteDPSGD


def test_a_site_refuses_to_train_past_its_budget() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = make_model("logreg", 3, 2)
    site = SiteDPSGD(target_epsilon=1.0, delta=1e-5, rounds=3, num_examples=40, batch_size=10)
    params = model.init(rng)
    for _ in range(3):
        assert not site.budget_spent or site.epsilon > 0
        params = site.train(model, params, x, y, lr=0.1, rng=rng)
    assert 0.9 < site.epsilon <= 1.0
    assert site.budget_spent
    with pytest.raises(PrivacyBudgetExhaustedError):
        site.train(model, params, x, y, lr=0.1, rng=rng)
    assert site.epsilon <= 1.0  # the refused round spent nothing


def test_record_level_simulation_reports_the_sites_epsilon_and_stops_when_spent() -> None:
    config = SimulationConfig(
        dataset="breast-cancer",
        model="logreg",
        clients=3,
        attackers=0,
        free_riders=0,
        partition="iid",
        rounds=3,
    ).with_dp("record", target_epsilon=1.0)
    result = run_simulation(config)
    assert result.rounds_run == 3
    assert 0.9 < result.epsilon <= 1.0
    assert result.noise_multiplier is None  # no noise at the aggregator
    assert result.final_accuracy > 0.8
