"""The privacy-units benchmark: each cell an ordinary simulation, only the privacy mode differs."""

from __future__ import annotations

from fedwarden.bench.privacy_units import UnitsConfig, markdown_table, run_privacy_units


def test_a_tiny_grid_runs_every_mode_and_names_the_better_unit() -> None:
    config = UnitsConfig(
        tasks=("breast-cancer-logreg",),
        sites=(3,),
        populations=(),
        rounds=2,
        seeds=(0,),
        processes=1,
    )
    result = run_privacy_units(config)
    assert [c.mode for c in result.cells] == ["none", "central", "record"]
    none, central, record = result.cells
    assert none.epsilon == 0.0
    assert 0.9 < central.epsilon <= 1.0
    assert 0.9 < record.epsilon <= 1.0
    assert central.noise_multiplier is not None
    assert record.noise_multiplier is not None
    assert record.noise_multiplier < central.noise_multiplier  # amplified by its batches
    assert result.better_unit("breast-cancer-logreg", 3) in ("record", "client")
    table = markdown_table(result)
    assert "| breast-cancer-logreg | 3 |" in table
    assert result.to_dict()["better_unit"]["breast-cancer-logreg/3"] in ("record", "client")
    # every cell is a simulation `fedwarden simulate` can rerun: same aggregation in each mode
    sims = [config.simulation("breast-cancer-logreg", 3, m, 0) for m in ("none", "record")]
    assert sims[0].pipeline.aggregator == sims[1].pipeline.aggregator == "fedavg"
    assert sims[1].pipeline.privacy.mode == "record"
