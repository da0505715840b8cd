"""The sites' record-level ε survives an aggregator restart through the checkpoint file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedwarden.aggregator import load_checkpoint, save_checkpoint
from fedwarden.aggregator.checkpoint import Checkpoint
from fedwarden.pipeline.freeriders import FreeRiderConfig
from fedwarden.pipeline.round import ClippingConfig, Pipeline, PipelineConfig, PrivacyConfig
from fedwarden.pipeline.site_privacy import SiteReport


def pipeline() -> Pipeline:
    config = PipelineConfig(
        aggregator="fedavg",
        aggregator_params={},
        clipping=ClippingConfig(mode="fixed", clip_norm=10.0),
        free_riders=FreeRiderConfig(enabled=False),
        privacy=PrivacyConfig(mode="record", target_epsilon=1.0, delta=1e-5),
    )
    return Pipeline(config, dim=3, population=2)


def test_the_largest_epsilon_per_site_is_kept_across_a_restart(tmp_path: Path) -> None:
    before = pipeline()
    reports = {"a": SiteReport(0.9, True), "b": SiteReport(0.4)}
    before.run_round(np.full((2, 3), 0.1, np.float32), ["a", "b"], site_reports=reports)
    model = np.zeros(3, np.float32)
    save_checkpoint(tmp_path, Checkpoint("uid", 1, model, before.state_dict()))

    after = pipeline()
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    after.load_state_dict(loaded.pipeline)
    assert after.epsilon == before.epsilon == 0.9
    assert after.site_epsilon("b") == 0.4
    assert after.sites_budget_spent == {"a"}
    result = after.run_round(
        np.full((1, 3), 0.1, np.float32), ["b"], site_reports={"b": SiteReport(0.2)}
    )
    assert "went down" in result.rejected["b"]
