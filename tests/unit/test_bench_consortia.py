"""The small-consortium grid (``fedwarden.bench.consortia``, ``fedwarden bench defences
--small-consortia``) on a tiny configuration."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fedwarden.bench.consortia import ConsortiumGrid, markdown_tables, run_consortia
from fedwarden.commands.bench_defences import defences as defences_command

TINY = ConsortiumGrid(
    tasks=("wine-logreg",),
    sites=(3, 5),
    partitions=("iid",),
    attacks=("sign-flip",),
    free_rider_kinds=("zero",),
    rounds=3,
    seeds=(0,),
    processes=1,
)


def test_the_grid_keeps_attackers_a_minority_and_adds_the_fedavg_reference() -> None:
    runs = TINY.runs()
    attacked = {(r.sites, r.attackers) for r in runs if r.attackers}
    assert attacked == {(3, 1), (5, 1), (5, 2)}
    assert {r.defence for r in runs if r.attackers == 0 and r.free_rider_kind is None} == {
        "recommended",
        "plain-fedavg",
    }
    assert all(r.defence == "recommended" for r in runs if r.attackers or r.free_rider_kind)


def test_a_tiny_grid_counts_honest_site_rounds_and_bans() -> None:
    result = run_consortia(TINY)
    assert len(result.runs) == len(TINY.runs())
    clean = next(r for r in result.runs if r.sites == 5 and r.attack == "none")
    assert clean.honest_site_rounds == 5 * 3
    assert clean.honest_banned == 0
    rider = next(r for r in result.runs if r.sites == 5 and r.free_rider_kind == "zero")
    assert rider.honest_site_rounds == 4 * 3
    tables = markdown_tables(result)
    assert "| 5 | iid |" in tables
    assert "| zero |" in tables


def test_unknown_attack_columns_and_tiny_consortia_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown attack column"):
        ConsortiumGrid(attacks=("nope",))
    with pytest.raises(ValueError, match="at least 3 sites"):
        ConsortiumGrid(sites=(2,))


def test_the_command_runs_the_grid_with_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedwarden.bench import consortia

    monkeypatch.setattr(
        consortia,
        "ConsortiumGrid",
        lambda **kwargs: ConsortiumGrid(
            **{**kwargs, "tasks": TINY.tasks, "sites": (3,), "partitions": ("iid",)}
        ),
    )
    result = CliRunner().invoke(
        defences_command,
        ["--small-consortia", "--rounds", "2", "--seeds", "1", "--processes", "1", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["config"]["rounds"] == 2
    assert {run["sites"] for run in payload["runs"]} == {3}
