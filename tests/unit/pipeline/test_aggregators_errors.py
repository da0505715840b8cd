"""Bad names, parameters and cohorts are refused with a ValueError that says what is allowed."""

from __future__ import annotations

import numpy as np
import pytest

from fedwarden.pipeline import aggregators
from fedwarden.pipeline.errors import InvalidCohortError

PARAMS = {"centered-clip": {"tau": 1.0}}


def cohort(n: int, d: int = 4) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, d)).astype(np.float32)


def test_names_are_the_eight_of_the_design_then_block_dnc() -> None:
    assert aggregators.names() == (
        "fedavg",
        "krum",
        "multi-krum",
        "median",
        "trimmed-mean",
        "bulyan",
        "geometric-median",
        "centered-clip",
        "block-dnc",
    )


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown aggregator 'krumm'; choose one of: fedavg, krum"
    ):
        aggregators.get("krumm")


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("krum", {"beta": 0.1}, r"unknown parameter 'beta' for krum; it takes: f \("),
        ("fedavg", {"f": 1}, r"for fedavg; it takes: no parameters \(preaggregation='nnm' takes f"),
        (
            "median",
            {"seed": 1},
            r"'seed' for median; it takes: f \(.*'bucketing' takes bucket_size",
        ),
        (
            "krum",
            {"preaggregation": "nnm", "bucket_size": 2},
            r"'bucket_size' for krum with preaggregation='nnm'; it takes: f",
        ),
        ("krum", {"preaggregation": "mix"}, r"unknown preaggregation 'mix'; choose one of: nnm"),
    ],
)
def test_unknown_parameters_say_what_is_taken(
    name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        aggregators.get(name, **params)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("krum", {"f": -1}, r"f must be an integer >= 0, got -1"),
        ("krum", {"f": 1.5}, r"f must be an integer >= 0, got 1.5"),
        ("krum", {"f": True}, r"f must be an integer >= 0, got True"),
        ("trimmed-mean", {"beta": 0.5}, r"beta must be a finite number in \[0, 0.5\), got 0.5"),
        ("trimmed-mean", {"beta": -0.1}, r"beta must be a finite number in \[0, 0.5\), got -0.1"),
        ("trimmed-mean", {"beta": float("nan")}, r"beta must be a finite number in \[0, 0.5\)"),
        (
            "median",
            {"preaggregation": "dnc", "filter_fraction": 0.5},
            r"filter_fraction must be a finite number in \[0, 0.5\), got 0.5",
        ),
        ("trimmed-mean", {"beta": 0.0, "f": 1}, r"beta=0 trims nothing; f=1 needs beta > 0"),
        ("multi-krum", {"m": 0}, r"m must be an integer >= 1, got 0"),
        (
            "centered-clip",
            {},
            r"centered-clip needs tau, the clipping radius \(a finite number > 0",
        ),
        ("centered-clip", {"tau": 0}, r"tau must be a finite number in \(0, inf\), got 0"),
        ("centered-clip", {"tau": 1, "iterations": 0}, r"iterations must be an integer >= 1"),
        ("geometric-median", {"nu": 0.0}, r"nu must be a finite number in \(0, inf\)"),
        ("geometric-median", {"eps": -1.0}, r"eps must be a finite number in \[0, inf\)"),
        ("geometric-median", {"max_iter": 0}, r"max_iter must be an integer >= 1"),
        ("median", {"preaggregation": "bucketing", "bucket_size": 1}, r"bucket_size must be an"),
        ("median", {"preaggregation": "bucketing", "seed": -3}, r"seed must be an integer >= 0"),
        (
            "median",
            {"preaggregation": "dnc", "min_share": 1.0},
            r"min_share must be a finite number in \[0, 1\), got 1.0",
        ),
        ("block-dnc", {"block_size": 0}, r"block_size must be an integer >= 1, got 0"),
        ("block-dnc", {"block_size": 2.5}, r"block_size must be an integer >= 1, got 2.5"),
        (
            "block-dnc",
            {"filter_fraction": 0.5},
            r"filter_fraction must be a finite number in \[0, 0.5\), got 0.5",
        ),
        ("block-dnc", {"f": 1}, r"unknown parameter 'f' for block-dnc; it takes: block_size"),
    ],
)
def test_impossible_parameters_say_what_is_allowed(
    name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        aggregators.get(name, **params)


@pytest.mark.parametrize(
    ("name", "params", "n", "message"),
    [
        ("bulyan", {"f": 2}, 10, r"^bulyan needs n >= 4f \+ 3 = 11 clients, got 10$"),
        ("krum", {"f": 2}, 6, r"^krum needs n >= 2f \+ 3 = 7 clients, got 6$"),
        ("multi-krum", {"f": 1, "m": 5}, 5, r"needs n >= max\(2f \+ 3, m \+ f\) = 6 clients"),
        ("median", {"f": 3}, 6, r"^median needs n >= 2f \+ 1 = 7 clients, got 6$"),
        ("geometric-median", {"f": 1}, 2, r"needs n >= 2f \+ 1 = 3 clients, got 2"),
        ("centered-clip", {"f": 1, "tau": 1.0}, 2, r"needs n >= 2f \+ 1 = 3 clients, got 2"),
        (
            "trimmed-mean",
            {"beta": 0.1, "f": 2},
            19,
            r"^trimmed-mean needs n >= 20 clients, so that it trims int\(beta·n\) >= f = 2 per",
        ),
        (
            "krum",
            {"f": 1, "preaggregation": "bucketing"},
            8,
            r"^krum with bucketing pre-aggregation needs n >= 9 clients, so that its "
            r"ceil\(n / 2\) buckets meet n >= 2f \+ 3 = 5 clients, got 8$",
        ),
        (
            "fedavg",
            {"f": 3, "preaggregation": "nnm"},
            3,
            r"^fedavg with nnm pre-aggregation needs n >= f \+ 1 = 4 clients, got 3$",
        ),
        (
            "krum",
            {"f": 1, "preaggregation": "dnc", "filter_fraction": 0.2},
            5,
            r"^krum with dnc pre-aggregation needs n >= 6 clients, so that the n − ⌊0.2·n⌋ "
            r"kept meet n >= 2f \+ 3 = 5 clients, got 5$",
        ),
    ],
)
def test_too_few_clients_for_f(name: str, params: dict[str, object], n: int, message: str) -> None:
    agg = aggregators.get(name, **params)
    assert agg.min_clients == n + 1
    agg(cohort(n + 1))  # the minimum itself is accepted
    with pytest.raises(InvalidCohortError, match=message):
        agg(cohort(n))


@pytest.mark.parametrize("name", aggregators.names())
@pytest.mark.parametrize(
    ("updates", "message"),
    [
        (
            np.zeros(5, np.float32),
            r"must be a 2-D array of shape \(n_clients, d\), got shape \(5,\)",
        ),
        (np.zeros((2, 3, 4), np.float32), r"2-D array .* got shape \(2, 3, 4\)"),
        (np.zeros((0, 5), np.float32), r"empty cohort: there are no client updates"),
        (np.zeros((5, 0), np.float32), r"updates have no coordinates \(d = 0\)"),
        (np.zeros((5, 3), np.int64), r"must be float16, float32 or float64, got dtype int64"),
    ],
)
def test_malformed_cohorts_are_refused(name: str, updates: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidCohortError, match=message):
        aggregators.get(name, **PARAMS.get(name, {}))(updates)


@pytest.mark.parametrize("name", aggregators.names())
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused(name: str, bad: float) -> None:
    updates = cohort(9)
    updates[4, 2] = bad
    with pytest.raises(
        InvalidCohortError, match=r"NaN or Inf; every coordinate must be a finite number"
    ):
        aggregators.get(name, **PARAMS.get(name, {}))(updates)


def test_finite_values_whose_sum_overflows_are_accepted() -> None:
    updates = np.full((9, 3), np.finfo(np.float32).max / 2, dtype=np.float32)
    np.testing.assert_array_equal(aggregators.get("median")(updates), updates[0])


@pytest.mark.parametrize("name", aggregators.names())
@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (
            np.ones(8),
            r"weights must be a 1-D array with one value per client \(9\), got shape \(8,\)",
        ),
        (np.ones((9, 1)), r"one value per client \(9\), got shape \(9, 1\)"),
        (np.r_[np.ones(8), np.nan], r"weights must be finite and >= 0"),
        (np.r_[np.ones(8), -1.0], r"weights must be finite and >= 0"),
    ],
)
def test_bad_weights_are_refused(name: str, weights: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidCohortError, match=message):
        aggregators.get(name, **PARAMS.get(name, {}))(cohort(9), weights)


def test_fedavg_refuses_weights_that_sum_to_zero() -> None:
    with pytest.raises(InvalidCohortError, match=r"positive, finite total, got a total of 0.0"):
        aggregators.get("fedavg")(cohort(3), np.zeros(3))


def test_params_are_the_effective_parameters() -> None:
    assert aggregators.get("krum").params == {"f": 0}
    assert aggregators.get("trimmed-mean", f=1).params == {"f": 1, "beta": 0.1}
    assert aggregators.get("multi-krum", f=2).params == {"f": 2, "m": None}
    assert aggregators.get("geometric-median").params == {
        "f": 0,
        "max_iter": 100,
        "eps": 1e-6,
        "nu": 1e-6,
    }
    assert aggregators.get("centered-clip", tau=2).params == {
        "f": 0,
        "tau": 2.0,
        "iterations": 10,
    }
    agg = aggregators.get("median", f=1, preaggregation="bucketing", seed=5)
    assert agg.name == "median"
    assert agg.params == {"f": 1, "bucket_size": 2, "seed": 5, "preaggregation": "bucketing"}
    assert aggregators.get("fedavg", f=2, preaggregation="nnm").params == {
        "f": 2,
        "preaggregation": "nnm",
    }
    assert aggregators.get("block-dnc", preaggregation="dnc", min_share=0.2).params == {
        "block_size": 64,
        "filter_fraction": 0.2,
        "min_share": 0.2,
        "preaggregation": "dnc",
    }


def test_min_clients_of_each_default() -> None:
    assert {
        name: aggregators.get(name, **PARAMS.get(name, {})).min_clients
        for name in aggregators.names()
    } == {
        "fedavg": 1,
        "krum": 3,
        "multi-krum": 3,
        "median": 1,
        "trimmed-mean": 1,
        "bulyan": 3,
        "geometric-median": 1,
        "centered-clip": 1,
        "block-dnc": 1,
    }
