"""The aggregator benchmark: structure, agreement check, targets, timeouts and the command.

Tiny inputs only (n=10, d=1000) and no assertions on wall-clock times: machines are noisy.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from fedwarden.bench import aggregators as bench
from fedwarden.commands.bench import bench as bench_command

pytestmark = pytest.mark.flower

TINY = {"clients": (10,), "dims": (1000,), "repeat": 1, "max_seconds_per_case": 30.0}


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(bench_command, ["aggregators", *args])


def test_updates_are_reproducible_and_have_outliers() -> None:
    a, weights_a, outliers_a = bench.make_updates(10, 1000, seed=3)
    b, weights_b, outliers_b = bench.make_updates(10, 1000, seed=3)
    assert a.dtype == np.float32
    assert a.shape == (10, 1000)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(weights_a, weights_b)
    np.testing.assert_array_equal(outliers_a, outliers_b)
    assert len(outliers_a) == bench.byzantine_count(10) == 1
    c, _, _ = bench.make_updates(10, 1000, seed=4)
    assert not np.array_equal(a, c)


def test_parameters_give_flower_the_same_f_trim_and_m() -> None:
    for n in (10, 50, 100):
        f = bench.byzantine_count(n)
        assert n >= 4 * f + 3  # Bulyan is allowed
        assert bench.params_for("krum", n, 1000) == {"f": f}
        assert bench.params_for("multi-krum", n, 1000) == {"f": f, "m": n - f}
        beta = bench.params_for("trimmed-mean", n, 1000)["beta"]
        assert int(beta * n) == f  # what Flower's _trim_mean cuts per side


def test_run_structure_agreement_and_json() -> None:
    names = ("fedavg", "krum", "median")
    result = bench.run(aggregators=names, seed=0, **TINY)  # type: ignore[arg-type]

    assert [c.aggregator for c in result.cases] == list(names)
    for case in result.cases:
        assert (case.n, case.d) == (10, 1000)
        assert case.error is None
        assert case.ours.seconds is not None
        assert case.ours.repeats >= 1
        assert case.peak_extra_mb is not None
        assert case.peak_extra_mb >= 0
        assert case.floor.seconds is not None
        assert case.over_floor is not None
        assert case.flower is not None
        assert case.flower.same_definition
        assert case.flower.speedup is not None
        # Flower's functions compute the same thing on these inputs: outputs must agree
        assert case.flower.agreement.checked
        assert case.flower.agreement.agree, case.flower.agreement.detail
        assert case.targets == ()  # targets are judged at n=50, d=1M only
    krum = result.cases[1]
    assert krum.flower is not None
    assert krum.flower.agreement.detail.startswith("same index")
    # both Flower Krums are measured; the slower one is reported as an alternative
    assert {krum.flower.short, *(b.short for b in krum.flower_others)} == {
        "aggregate_krum",
        "select_multikrum",
    }

    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["seed"] == 0
    assert payload["environment"]["numpy"] == np.__version__
    assert payload["environment"]["flwr"]
    assert len(payload["cases"]) == 3
    assert payload["cases"][0]["flower"]["function"].startswith("flwr.server.strategy.aggregate")

    md = bench.to_markdown(result)
    assert "| aggregator | n | d | ours |" in md
    assert "not measured" in md  # no n=50, d=1M case in this run
    assert len(bench.table_rows(result)) == 3


def _factory_with(name: str, impl: Callable[..., Any]) -> bench.Factory:
    from fedwarden.pipeline import aggregators

    def get(agg: str, **params: Any) -> Any:
        return impl if agg == name else aggregators.get(agg, **params)

    return get


def test_disagreement_is_reported_not_hidden() -> None:
    _, _, outliers = bench.make_updates(10, 1000, seed=0)
    bad = int(outliers[0])

    def wrong_krum(x: Any, weights: Any = None) -> Any:
        return x[bad].copy()  # an outlier: never Krum's choice

    result = bench.run(
        aggregators=("krum", "median"),
        seed=0,
        factory=_factory_with("krum", wrong_krum),
        **TINY,  # type: ignore[arg-type]
    )
    krum, median = result.cases
    assert krum.flower is not None
    assert krum.flower.agreement.agree is False
    assert f"ours picked {bad}" in krum.flower.agreement.detail
    assert bench.table_rows(result)[0]["agreement"].startswith("WARN")
    assert median.flower is not None
    assert median.flower.agreement.agree is True


def test_a_refusal_of_ours_is_a_reported_case() -> None:
    def refuses(x: Any, weights: Any = None) -> Any:
        raise ValueError("not today")

    result = bench.run(
        aggregators=("median",),
        seed=0,
        factory=_factory_with("median", refuses),
        **TINY,  # type: ignore[arg-type]
    )
    (case,) = result.cases
    assert case.error == "refused: not today"
    assert case.ours.seconds is None
    assert bench.table_rows(result)[0]["ours"] == "error"


def test_unknown_aggregator_and_bad_sizes_raise_value_error() -> None:
    with pytest.raises(ValueError, match=r"unknown aggregator 'krumm'; choose from fedavg"):
        bench.run(aggregators=("krumm",), **TINY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"clients must be integers ≥ 3, got \[2\]"):
        bench.run(clients=(2,), dims=(10,))
    with pytest.raises(ValueError, match=r"repeat must be ≥ 1"):
        bench.run(clients=(10,), dims=(10,), repeat=0)


def test_a_call_over_the_cap_is_interrupted_and_reported() -> None:
    timing, out = bench._time(lambda: time.sleep(30), min_repeats=3, cap=0.2)
    assert timing.timed_out
    assert timing.seconds is None
    assert out is None
    assert timing.display() == "> 0.2 s"


def _case(
    name: str, ours: float, flower: bench.Timing | None, floor: float = 0.01
) -> bench.CaseResult:
    ours_t = bench.Timing(ours, 3, False, 60.0)
    baseline = None
    if flower is not None:
        speedup, bound = bench._speedup(flower, ours_t)
        baseline = bench.BaselineResult(
            "fn", "flwr.fn", True, "", flower, bench.Agreement(True, True, "ok"), speedup, bound
        )
    return bench.CaseResult(
        aggregator=name,
        n=bench.TARGET_N,
        d=bench.TARGET_D,
        params={},
        ours=ours_t,
        error=None,
        peak_extra_mb=1.0,
        floor=bench.Timing(floor, 5, False, 60.0),
        flower=baseline,
        flower_others=(),
        over_floor=ours / floor,
    )


def test_targets_pass_fail_and_lower_bounds() -> None:
    t = bench._targets_for
    Timing = bench.Timing
    fast = t(_case("krum", 0.1, Timing(0.6, 3, False, 60.0)))
    assert [(c.metric, c.passed) for c in fast] == [("speedup", True), ("over_floor", True)]
    slow = t(_case("median", 0.1, Timing(0.4, 3, False, 60.0)))
    assert [c.passed for c in slow] == [False, True]
    # Flower timed out at 60 s: the speed-up is a lower bound, enough for 20× when ours is 1 s
    bound = t(_case("bulyan", 1.0, Timing(None, 0, True, 60.0), floor=0.1))
    assert bound[0].passed is True
    assert bound[0].detail.startswith("Flower timed out")
    # ... but not enough to claim 20× when ours takes 10 s; and 10 s is 100× the floor
    unsure = t(_case("bulyan", 10.0, Timing(None, 0, True, 60.0), floor=0.1))
    assert [c.passed for c in unsure] == [None, False]
    # no Flower equivalent: only the floor target applies
    (only,) = t(_case("geometric-median", 0.1, None))
    assert only.metric == "over_floor"


def test_cli_json_output_file_and_markdown(tmp_path: Any) -> None:
    out = tmp_path / "results" / "aggregators.json"
    args = ["--clients", "10", "--dims", "1000", "--aggregators", "fedavg,median", "--repeat", "1"]
    result = _invoke(*args, "--json", "--output", str(out))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [c["aggregator"] for c in payload["cases"]] == ["fedavg", "median"]
    assert payload["clients"] == [10]
    assert json.loads(out.read_text()) == payload

    result = _invoke(*args, "--markdown")
    assert result.exit_code == 0, result.output
    assert "| aggregator | n | d | ours |" in result.stdout
    assert "| median | 10 | 1k |" in result.stdout


def test_cli_unknown_aggregator_is_a_clean_error() -> None:
    result = _invoke("--clients", "10", "--dims", "1000", "--aggregators", "krum,zeno")
    assert result.exit_code == 2
    assert "unknown aggregator 'zeno'" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("value", "message"),
    [("10,ten", "'ten' is not an integer"), ("2", "must be ≥ 3"), (",", "comma-separated")],
)
def test_cli_bad_clients_is_a_clean_error(value: str, message: str) -> None:
    result = _invoke("--clients", value, "--dims", "1000")
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_json_and_markdown_are_exclusive() -> None:
    result = _invoke("--clients", "10", "--dims", "1000", "--json", "--markdown")
    assert result.exit_code == 2
    assert "choose one" in result.output


def test_cli_without_flower_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flwr", None)  # makes `import flwr` fail
    result = _invoke("--clients", "10", "--dims", "1000", "--aggregators", "fedavg")
    assert result.exit_code == 1
    assert "install fedwarden[flower]" in result.output
    assert "Traceback" not in result.output


def test_bench_is_a_group() -> None:
    result = CliRunner().invoke(bench_command, ["--help"])
    assert result.exit_code == 0
    assert "aggregators" in result.output
