"""The defence matrix (``fedwarden.bench.defences``, ``fedwarden bench defences``) on a tiny
configuration: two defences × two attacks, a few rounds."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from fedwarden.bench.defences import (
    ATTACK_COLUMNS,
    AttackColumn,
    Cell,
    Defence,
    FreeRiderCell,
    MatrixConfig,
    MatrixResult,
    check_criteria,
    default_defences,
    markdown_tables,
    run_matrix,
)
from fedwarden.commands.bench_defences import defences as defences_command
from fedwarden.pipeline.round import PipelineConfig
from fedwarden.sim.runner import run_simulation

COLUMNS = {c.name: c for c in ATTACK_COLUMNS}
TINY = MatrixConfig(
    model="logreg",
    clients=10,
    attackers=2,
    rounds=3,
    seeds=(0,),
    defences=(
        Defence("plain-fedavg", PipelineConfig.plain_fedavg()),
        Defence("recommended", PipelineConfig.recommended()),
    ),
    attacks=(COLUMNS["none"], COLUMNS["sign-flip"]),
    free_rider_kinds=("zero",),
    free_riders=2,
    processes=1,
)


@pytest.fixture(scope="module")
def tiny() -> MatrixResult:
    return run_matrix(TINY)


def test_every_cell_and_free_rider_run_is_reported(tiny: MatrixResult) -> None:
    assert {(c.defence, c.attack, c.seed) for c in tiny.cells} == {
        (d, a, 0) for d in ("plain-fedavg", "recommended") for a in ("none", "sign-flip")
    }
    # plain FedAvg has no free-rider detection: the experiment runs for the other row only
    assert [(c.defence, c.kind) for c in tiny.free_rider_cells] == [("recommended", "zero")]
    assert all(c.rounds_run == 3 for c in tiny.cells)
    assert all(0.0 <= c.accuracy <= 1.0 for c in tiny.cells)


def test_a_cell_is_the_simulation_it_names(tiny: MatrixResult) -> None:
    defence, column = TINY.defences[1], TINY.attacks[1]
    alone = run_simulation(TINY.simulation(defence, column, 0))
    cell = next(c for c in tiny.cells if c.defence == defence.name and c.attack == column.name)
    assert cell.accuracy == alone.final_accuracy
    assert cell.skipped_rounds == len(alone.skipped)


def test_a_backdoor_cell_reports_the_untrained_models_rate_too(tiny: MatrixResult) -> None:
    config = dataclasses.replace(TINY, attacks=(COLUMNS["backdoor"],), free_rider_kinds=())
    cells = run_matrix(config).cells
    alone = run_simulation(config.simulation(config.defences[0], COLUMNS["backdoor"], 0))
    assert alone.initial_backdoor_success is not None
    # the initial model depends on the seed, not on the defence
    assert [c.initial_backdoor_success for c in cells] == [alone.initial_backdoor_success] * 2
    assert all(c.initial_backdoor_success is None for c in tiny.cells)  # no backdoor there


def test_rows_take_the_mean_and_the_worst_case(tiny: MatrixResult) -> None:
    for row in tiny.rows():
        mine = {c.attack: c.accuracy for c in tiny.cells if c.defence == row.defence}
        assert row.accuracy == mine
        assert row.worst == min(mine.values())
        assert row.accuracy[row.worst_attack] == row.worst
        assert row.backdoor_success is None  # no backdoor column here


def test_json_markdown_and_criteria(tiny: MatrixResult) -> None:
    payload = json.loads(json.dumps(tiny.to_dict()))
    assert len(payload["cells"]) == 4
    assert payload["config"]["seeds"] == [0]
    assert payload["config"]["defences"][1]["pipeline"]["aggregator"] == "block-dnc"
    names = [c["name"] for c in payload["criteria"]]
    assert names == [
        "far above plain FedAvg",
        "within 2 points of the best row",
        "backdoor success < 10%",
        "free riders banned, F1 ≥ 0.9",
        "no honest client banned",
    ]
    backdoor = next(c for c in payload["criteria"] if c["name"].startswith("backdoor"))
    assert not backdoor["passed"]
    assert "no backdoor column" in backdoor["detail"]
    text = markdown_tables(tiny)
    assert "| defence | none | sign-flip | **worst** |" in text
    assert "| **recommended** |" in text
    assert "| criterion (recommended row) | result | detail |" in text


def test_identical_rows_run_once_and_progress_counts_unique_runs() -> None:
    twice = dataclasses.replace(
        TINY,
        defences=(*TINY.defences, Defence("same-again", PipelineConfig.recommended())),
        attacks=(COLUMNS["none"],),
        free_rider_kinds=(),
    )
    seen: list[tuple[int, int]] = []
    result = run_matrix(twice, progress=lambda cell, done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]
    by_row = {c.defence: c for c in result.cells}
    assert set(by_row) == {"plain-fedavg", "recommended", "same-again"}
    assert by_row["same-again"].accuracy == by_row["recommended"].accuracy


def test_worker_processes_give_the_same_cells(tiny: MatrixResult) -> None:
    pooled = run_matrix(dataclasses.replace(TINY, processes=2))
    assert pooled.cells == [
        dataclasses.replace(c, seconds=p.seconds)
        for c, p in zip(tiny.cells, pooled.cells, strict=True)
    ]


def _cell(defence: str, attack: str, accuracy: float, **kw: object) -> Cell:
    values = {
        "defence": defence,
        "attack": attack,
        "seed": 0,
        "accuracy": accuracy,
        "backdoor_success": None,
        "rounds_run": 10,
        "skipped_rounds": 0,
        "honest_banned": 0,
        "attackers_banned": 0,
        "seconds": 0.0,
    }
    values.update(kw)
    return Cell(**values)  # type: ignore[arg-type]


def _rider(defence: str, f1: float | None, honest: int = 0) -> FreeRiderCell:
    return FreeRiderCell(defence, "zero", 0, 0.9, f1, f1, f1, 2, honest, 0, 0.0)


def _synthetic(
    rec: tuple[float, float, float], best: tuple[float, float, float], riders: list[FreeRiderCell]
) -> MatrixResult:
    config = dataclasses.replace(
        TINY,
        defences=(
            *TINY.defences,
            Defence("best", PipelineConfig(aggregator="median", aggregator_params={})),
        ),
        attacks=(COLUMNS["none"], COLUMNS["sign-flip"], COLUMNS["backdoor"]),
    )
    cells = [
        _cell("plain-fedavg", "none", 0.9),
        _cell("plain-fedavg", "sign-flip", 0.2),
        _cell("plain-fedavg", "backdoor", 0.9, backdoor_success=0.9),
    ]
    for name, (clean, flipped, backdoor) in (("recommended", rec), ("best", best)):
        cells += [
            _cell(name, "none", clean),
            _cell(name, "sign-flip", flipped),
            _cell(name, "backdoor", clean, backdoor_success=backdoor),
        ]
    return MatrixResult(config, cells, riders, 0.0)


def test_criteria_pass_when_every_promise_holds() -> None:
    result = _synthetic((0.92, 0.88, 0.05), (0.93, 0.89, 0.5), [_rider("recommended", 1.0)])
    verdict = {c.name: c for c in check_criteria(result)}
    assert all(c.passed for c in verdict.values()), verdict
    assert verdict["far above plain FedAvg"].value == pytest.approx(0.68)
    assert verdict["within 2 points of the best row"].value == pytest.approx(0.01)


def test_criteria_fail_with_the_numbers() -> None:
    result = _synthetic(
        (0.92, 0.80, 0.4), (0.93, 0.89, 0.0), [_rider("recommended", None, honest=1)]
    )
    verdict = {c.name: c for c in check_criteria(result)}
    assert verdict["far above plain FedAvg"].passed
    gap = verdict["within 2 points of the best row"]
    assert not gap.passed
    assert "9.0 points below" in gap.detail
    assert "(best)" in gap.detail
    assert not verdict["backdoor success < 10%"].passed
    assert "40.0%" in verdict["backdoor success < 10%"].detail
    assert not verdict["free riders banned, F1 ≥ 0.9"].passed
    assert not verdict["no honest client banned"].passed


def test_a_row_that_trusts_claimed_counts_is_also_left_out_of_the_comparison() -> None:
    result = _synthetic((0.92, 0.80, 0.0), (0.93, 0.89, 0.0), [_rider("recommended", 1.0)])
    trusting = tuple(
        dataclasses.replace(d, trusts_claimed_counts=d.name in ("plain-fedavg", "best"))
        for d in result.config.defences
    )
    result = dataclasses.replace(
        result, config=dataclasses.replace(result.config, defences=trusting)
    )
    verdict = {c.name: c for c in check_criteria(result)}
    assert not verdict["within 2 points of the best row"].passed
    robust = verdict["within 2 points of the best row that ignores claimed sample counts"]
    assert robust.passed
    assert robust.value == pytest.approx(0.0)
    assert "(recommended)" in robust.detail


def test_skipped_and_never_trained_cells_are_marked() -> None:
    result = _synthetic((0.9, 0.9, 0.0), (0.9, 0.9, 0.0), [])
    result.cells[3] = _cell("recommended", "none", 0.1, skipped_rounds=10)
    result.cells[4] = _cell("recommended", "sign-flip", 0.8, skipped_rounds=2)
    row = result.row("recommended")
    assert row is not None
    assert row.never_trained == ["none"]
    assert row.skipped_rounds["sign-flip"] == 2
    text = markdown_tables(result)
    assert "10.0 ‡(10)" in text
    assert "80.0 †(2)" in text


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(ValueError, match="seed"):
        dataclasses.replace(TINY, seeds=())
    with pytest.raises(ValueError, match="distinct"):
        dataclasses.replace(TINY, defences=(TINY.defences[0], TINY.defences[0]))
    with pytest.raises(ValueError, match="free-rider kind"):
        dataclasses.replace(TINY, free_rider_kinds=("ghost",))
    with pytest.raises(ValueError, match="attack"):
        AttackColumn("x", "teleport")
    with pytest.raises(ValueError, match=r"more attackers|no honest"):
        dataclasses.replace(TINY, attackers=10)


def test_default_rows_cover_every_aggregator_and_the_baselines() -> None:
    rows = default_defences()
    names = [d.name for d in rows]
    assert names[0] == "plain-fedavg"
    assert names[-1] == "recommended"
    assert {d.pipeline.aggregator for d in rows} >= {
        "fedavg", "krum", "multi-krum", "median", "trimmed-mean", "bulyan",
        "geometric-median", "centered-clip",
    }  # fmt: skip
    assert any(d.pipeline.aggregator_params.get("preaggregation") == "nnm" for d in rows)
    assert any(d.pipeline.aggregator_params.get("preaggregation") == "bucketing" for d in rows)
    assert any(d.pipeline.aggregator_params.get("preaggregation") == "dnc" for d in rows)
    assert rows[-1].pipeline == PipelineConfig.recommended()


def _cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(defences_command, list(args), catch_exceptions=False)


def test_command_runs_a_tiny_matrix_with_json() -> None:
    result = _cli(
        "--model", "logreg", "--clients", "10", "--attackers", "2", "--rounds", "2",
        "--seeds", "1", "--defences", "plain-fedavg,recommended", "--attacks", "none,sign-flip",
        "--no-free-riders", "--processes", "1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [r["defence"] for r in payload["rows"]] == ["plain-fedavg", "recommended"]
    assert payload["free_rider_cells"] == []


def test_command_lists_rows_and_refuses_unknown_names() -> None:
    listed = _cli("--list")
    assert listed.exit_code == 0
    assert "recommended" in listed.output
    assert "scaling" in listed.output
    bad = _cli("--defences", "krum,teleport", "--seeds", "1")
    assert bad.exit_code != 0
    assert "teleport" in bad.output
    both = _cli("--json", "--markdown")
    assert both.exit_code != 0
