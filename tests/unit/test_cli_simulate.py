"""``fedwarden simulate``: help, a tiny run with --json, clean errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fedwarden.commands.simulate import simulate

TINY = [
    "--dataset", "wine",
    "--model", "logreg",
    "--clients", "6",
    "--attackers", "1",
    "--attack", "sign-flip",
    "--free-riders", "1",
    "--free-rider-kind", "zero",
    "--partition", "iid",
    "--rounds", "3",
    "--lr", "0.2",
]  # fmt: skip


def _run(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(simulate, args, catch_exceptions=False)


def test_help_lists_the_flags() -> None:
    result = _run(["--help"])
    assert result.exit_code == 0
    for flag in (
        "--dataset", "--model", "--clients", "--attackers", "--attack", "--attack-param",
        "--free-riders", "--free-rider-kind", "--aggregator", "--agg-param", "--alpha",
        "--partition", "--rounds", "--clients-per-round", "--clipping", "--dp",
        "--target-epsilon", "--delta", "--noise-multiplier", "--seed", "--json",
    ):  # fmt: skip
        assert flag in result.output


def test_tiny_run_prints_one_json_object() -> None:
    result = _run([*TINY, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["rounds_run"] == 3
    assert 0.0 <= payload["final_accuracy"] <= 1.0
    assert payload["config"]["dataset"] == "wine"
    assert payload["config"]["attack"] == "sign-flip"
    assert len(payload["attackers"]) == 1
    assert len(payload["free_riders"]) == 1
    assert payload["backdoor_success"] is None


def test_table_without_json() -> None:
    result = _run(TINY)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the table goes to stderr
    assert "accuracy" in result.output
    assert "banned" in result.output


def test_aggregator_clipping_and_dp_flags_reach_the_pipeline() -> None:
    args = [
        *TINY, "--aggregator", "median", "--clipping", "fixed", "--clip-norm", "2",
        "--dp", "central", "--noise-multiplier", "1.0", "--json",
    ]  # fmt: skip
    result = _run(args)
    assert result.exit_code == 0, result.output
    pipeline = json.loads(result.stdout)["config"]["pipeline"]
    assert pipeline["aggregator"] == "median"
    assert pipeline["clipping"]["mode"] == "fixed"
    assert pipeline["clipping"]["clip_norm"] == 2.0
    assert pipeline["privacy"]["mode"] == "central"
    assert json.loads(result.stdout)["epsilon"] > 0


def test_rounds_the_aggregator_cannot_run_are_reported() -> None:
    # Bulyan with f=2 needs 4f+3 = 11 clients; the cohort has 6
    result = _run([*TINY, "--aggregator", "bulyan", "--agg-param", "f=2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sorted(payload["skipped_rounds"]) == ["1", "2", "3"]
    assert "bulyan needs at least 11" in payload["skipped_rounds"]["1"]
    assert "skipped rounds" in result.output


def test_defence_none_is_plain_fedavg() -> None:
    result = _run([*TINY, "--defence", "none", "--json"])
    assert result.exit_code == 0, result.output
    pipeline = json.loads(result.stdout)["config"]["pipeline"]
    assert pipeline["aggregator"] == "fedavg"
    assert pipeline["clipping"]["mode"] == "none"


def test_recommended_defence_with_central_dp_is_dp_fedavg() -> None:
    args = [*TINY, "--dp", "central", "--noise-multiplier", "1.0", "--json"]
    result = _run(args)
    assert result.exit_code == 0, result.output
    pipeline = json.loads(result.stdout)["config"]["pipeline"]
    assert pipeline["aggregator"] == "fedavg"
    assert pipeline["clipping"]["mode"] == "adaptive"
    assert pipeline["validation"]["outlier_z"] is None
    assert pipeline["free_riders"]["enabled"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "0"], "--clients"),
        (["--attack", "teleport"], "--attack"),
        (["--attack-param", "eps"], "KEY=VALUE"),
        (["--attack", "ipm", "--attack-param", "beta=1"], "has no parameter beta"),
        (["--attackers", "5", "--free-riders", "1"], "leave no honest client"),
        (["--aggregator", "teleport"], "teleport"),
        (["--dp", "central"], "noise_multiplier or a target_epsilon"),
        (["--target-epsilon", "1"], "need --dp central, local or record"),
        (["--alpha", "-1"], "--alpha"),
    ],
)
def test_bad_input_is_a_clean_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(simulate, [*TINY, *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
