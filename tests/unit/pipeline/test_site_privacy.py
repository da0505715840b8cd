"""Record-level DP at the aggregator: the books of the sites' signed ε reports."""

from __future__ import annotations

import numpy as np
import pytest

from fedwarden.pipeline.freeriders import FreeRiderConfig
from fedwarden.pipeline.round import (
    ClippingConfig,
    Pipeline,
    PipelineConfig,
    PrivacyConfig,
    privacy_unit,
)
from fedwarden.pipeline.site_privacy import SiteBudgets, SiteReport


def record_pipeline(target: float = 1.0) -> Pipeline:
    config = PipelineConfig(
        aggregator="fedavg",
        aggregator_params={},
        clipping=ClippingConfig(mode="fixed", clip_norm=10.0),
        free_riders=FreeRiderConfig(enabled=False),
        privacy=PrivacyConfig(mode="record", target_epsilon=target, delta=1e-5),
    )
    return Pipeline(config, dim=4, population=3, seed=0)


def updates(n: int) -> np.ndarray:
    return np.ones((n, 4), dtype=np.float32) * 0.1


def test_the_largest_site_epsilon_is_what_is_reported() -> None:
    pipe = record_pipeline()
    reports = {"a": SiteReport(0.2), "b": SiteReport(0.7), "c": SiteReport(0.4)}
    result = pipe.run_round(updates(3), ["a", "b", "c"], site_reports=reports)
    assert result.accepted == ["a", "b", "c"]
    assert result.epsilon == pytest.approx(0.7)
    assert pipe.epsilon == pytest.approx(0.7)
    assert pipe.site_epsilon("a") == pytest.approx(0.2)
    assert pipe.noise_multiplier is None
    assert result.noise_std == 0.0


def test_an_update_without_epsilon_or_above_the_budget_is_refused_and_not_booked() -> None:
    pipe = record_pipeline(target=1.0)
    result = pipe.run_round(
        updates(3), ["a", "b", "c"], site_reports={"a": SiteReport(0.5), "b": SiteReport(1.5)}
    )
    assert result.accepted == ["a"]
    assert "over budget" in result.rejected["b"]
    assert "no record-level epsilon" in result.rejected["c"]
    assert result.strikes == {"b": 1, "c": 1}
    assert pipe.epsilon == pytest.approx(0.5)  # the refused 1.5 is not the training's ε


def test_a_site_epsilon_never_goes_down() -> None:
    pipe = record_pipeline()
    pipe.run_round(updates(1), ["a"], site_reports={"a": SiteReport(0.6)})
    result = pipe.run_round(updates(1), ["a"], site_reports={"a": SiteReport(0.3)})
    assert "went down" in result.rejected["a"]
    assert pipe.site_epsilon("a") == pytest.approx(0.6)


def test_sites_that_report_their_budget_spent_are_known() -> None:
    pipe = record_pipeline()
    pipe.run_round(
        updates(2), ["a", "b"], site_reports={"a": SiteReport(1.0, True), "b": SiteReport(0.5)}
    )
    assert pipe.sites_budget_spent == {"a"}
    pipe.run_round(updates(1), ["b"], site_reports={"b": SiteReport(0.99, True)})
    assert pipe.sites_budget_spent == {"a", "b"}


def test_the_books_survive_a_restart_through_the_checkpointed_state() -> None:
    pipe = record_pipeline()
    pipe.run_round(
        updates(2), ["a", "b"], site_reports={"a": SiteReport(0.8, True), "b": SiteReport(0.3)}
    )
    restarted = record_pipeline()
    restarted.load_state_dict(pipe.state_dict())
    assert restarted.epsilon == pytest.approx(0.8)
    assert restarted.sites_budget_spent == {"a"}
    result = restarted.run_round(updates(1), ["b"], site_reports={"b": SiteReport(0.1)})
    assert "went down" in result.rejected["b"]


def test_record_mode_needs_a_per_site_target_and_no_noise_multiplier() -> None:
    with pytest.raises(ValueError, match="record-level DP needs a target_epsilon"):
        PrivacyConfig(mode="record")
    with pytest.raises(ValueError, match="no noise_multiplier"):
        PrivacyConfig(mode="record", target_epsilon=1.0, noise_multiplier=2.0)
    assert privacy_unit("record") == "record"
    assert privacy_unit("central") == privacy_unit("local") == "client"
    assert privacy_unit("none") is None


def test_the_ledger_refuses_non_finite_reports() -> None:
    books = SiteBudgets(1.0, 1e-5)
    assert books.refusal("a", SiteReport(float("nan"))) is not None
    assert books.refusal("a", SiteReport(-0.1)) is not None
    assert books.refusal("a", SiteReport(1.0)) is None  # exactly the budget is within it
    assert books.epsilon == 0.0
