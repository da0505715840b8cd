"""Sensitivity bounds, checked against the real aggregators by brute force.

For every aggregator (and pre-aggregation) the claimed L2 sensitivity must bound the distance
between the outputs on neighbouring cohorts of updates clipped to C: one client's update
replaced by any point of the C-ball (replace-one), one client added or removed (add-remove,
with FedAvg's fixed denominator), or any two cohorts when rows depend on the whole cohort.
Cohorts and replacements are drawn by hypothesis, with adversarial structure: points at ±C on
the axes, antipodes, duplicates, zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedwarden.pipeline import aggregators
from fedwarden.pipeline.clipping import clip_to_norm
from fedwarden.pipeline.errors import UnsoundPrivacyError
from fedwarden.pipeline.sensitivity import Sensitivity, aggregate_sensitivity

C = 1.5

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("fedavg", {}),
    ("krum", {"f": 1}),
    ("multi-krum", {"f": 1}),
    ("multi-krum", {"f": 1, "m": 2}),
    ("median", {}),
    ("median", {"f": 1}),
    ("trimmed-mean", {"beta": 0.2}),
    ("trimmed-mean", {"beta": 0.3, "f": 1}),
    ("bulyan", {"f": 1}),
    ("bulyan", {"f": 0}),
    ("geometric-median", {"f": 1}),
    ("centered-clip", {"tau": 0.5, "iterations": 5}),
    ("centered-clip", {"tau": 10.0}),
    ("fedavg", {"preaggregation": "nnm", "f": 1}),
    ("median", {"preaggregation": "nnm", "f": 1}),
    ("trimmed-mean", {"beta": 0.2, "preaggregation": "nnm", "f": 1}),
    ("krum", {"preaggregation": "nnm", "f": 1}),
    ("fedavg", {"preaggregation": "bucketing", "bucket_size": 2, "seed": 0}),
    ("median", {"preaggregation": "bucketing", "bucket_size": 3, "seed": 0}),
    ("trimmed-mean", {"beta": 0.2, "preaggregation": "bucketing", "bucket_size": 2, "seed": 0}),
    ("bulyan", {"f": 1, "preaggregation": "bucketing", "bucket_size": 2, "seed": 0}),
    ("geometric-median", {"preaggregation": "bucketing", "bucket_size": 2, "seed": 1}),
    ("trimmed-mean", {"beta": 0.1, "preaggregation": "dnc", "filter_fraction": 0.2}),
    ("centered-clip", {"tau": 0.5, "preaggregation": "dnc", "filter_fraction": 0.3}),
    ("block-dnc", {"block_size": 2}),
    ("block-dnc", {"block_size": 1, "filter_fraction": 0.4}),
    ("block-dnc", {"block_size": 3, "preaggregation": "dnc", "min_share": 0.2}),
]
IDS = [f"{name}{params}" for name, params in CONFIGS]


def _agg(name: str, params: dict[str, Any]) -> aggregators.Aggregator:
    # a fresh instance per call: bucketing with a seed then shuffles both cohorts alike, as
    # replace-one needs (the shuffle does not depend on the data)
    return aggregators.get(name, **params)


def _point(rng: np.random.Generator, d: int, kind: int, others: np.ndarray | None) -> np.ndarray:
    """A point of the C-ball, adversarial more often than not."""
    if kind == 0:  # ± C on an axis
        point = np.zeros(d)
        point[rng.integers(d)] = C * rng.choice([-1.0, 1.0])
        return point
    if kind == 1:  # a random point on the sphere
        u = rng.normal(size=d)
        return C * u / max(np.linalg.norm(u), 1e-12)
    if kind == 2:  # inside the ball
        u = rng.normal(size=d)
        return rng.uniform(0, C) * u / max(np.linalg.norm(u), 1e-12)
    if kind == 3:  # zero (a refused update)
        return np.zeros(d)
    if kind == 4 and others is not None and len(others):  # a duplicate of another row
        return others[rng.integers(len(others))].copy()
    if kind == 5 and others is not None and len(others):  # the antipode of another row at C
        row = others[rng.integers(len(others))]
        norm = np.linalg.norm(row)
        return -C * row / norm if norm > 0 else np.zeros(d)
    return C * np.sign(rng.normal(size=d)) / np.sqrt(d)  # a corner: every coordinate moves


def _cohort(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows: list[np.ndarray] = []
    for _ in range(n):
        rows.append(_point(rng, d, int(rng.integers(7)), np.array(rows) if rows else None))
    clipped, _ = clip_to_norm(np.array(rows, dtype=np.float64), C)
    return clipped


def _clip_row(row: np.ndarray) -> np.ndarray:
    clipped, _ = clip_to_norm(row[None, :], C)
    return clipped[0]


def _tolerance(bound: float) -> float:
    return bound * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 6), d=st.integers(1, 4))
def test_replace_one_bound_holds(
    name: str, params: dict[str, Any], seed: int, extra: int, d: int
) -> None:
    n = _agg(name, params).min_clients + extra
    rng = np.random.default_rng(seed)
    cohort = _cohort(rng, n, d)
    bound = aggregate_sensitivity(name, params, n, C, relation="replace-one")
    assert bound.relation == "replace-one"
    before = _agg(name, params)(cohort)
    worst = 0.0
    for i in rng.choice(n, size=min(n, 3), replace=False):
        others = np.delete(cohort, i, axis=0)
        candidates = [_point(rng, d, kind, others) for kind in range(7)]
        candidates += [C * e for e in np.eye(d)] + [-C * e for e in np.eye(d)]
        for replacement in candidates:
            neighbour = cohort.copy()
            neighbour[i] = _clip_row(replacement)
            after = _agg(name, params)(neighbour)
            worst = max(worst, float(np.linalg.norm(after - before)))
    assert worst <= _tolerance(bound.l2), (worst, bound)


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 6), d=st.integers(1, 4))
def test_add_remove_bound_holds(
    name: str, params: dict[str, Any], seed: int, extra: int, d: int
) -> None:
    m = _agg(name, params).min_clients + extra
    rng = np.random.default_rng(seed)
    cohort = _cohort(rng, m, d)
    fixed_denominator = int(rng.integers(1, 12))
    bound = aggregate_sensitivity(name, params, fixed_denominator, C, relation="add-remove")
    assert bound.relation == "add-remove"
    plain_fedavg = name == "fedavg" and "preaggregation" not in params

    def output(rows: np.ndarray) -> np.ndarray:
        result = _agg(name, params)(rows)
        if plain_fedavg:  # DP-FedAvg: Σ x_i / n with n fixed in advance
            return result.astype(np.float64) * len(rows) / fixed_denominator
        return result

    before = output(cohort)
    for kind in range(7):
        added = _point(rng, d, kind, cohort)
        at = int(rng.integers(m + 1))
        bigger = np.insert(cohort, at, _clip_row(added), axis=0)
        assert np.linalg.norm(output(bigger) - before) <= _tolerance(bound.l2)


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 6), d=st.integers(1, 4))
def test_bounds_for_cohort_dependent_rows_hold_for_any_two_cohorts(
    name: str, params: dict[str, Any], seed: int, extra: int, d: int
) -> None:
    n = _agg(name, params).min_clients + extra
    rng = np.random.default_rng(seed)
    bound = aggregate_sensitivity(
        name, params, n, C, relation="replace-one", rows_depend_on_cohort=True
    )
    first, second = _cohort(rng, n, d), _cohort(rng, n, d)
    distance = np.linalg.norm(_agg(name, params)(first) - _agg(name, params)(second))
    assert distance <= _tolerance(bound.l2)
    if name == "fedavg" and "preaggregation" not in params:
        return
    bound = aggregate_sensitivity(
        name, params, n, C, relation="add-remove", rows_depend_on_cohort=True
    )
    third = _cohort(rng, n + 1, d)
    distance = np.linalg.norm(_agg(name, params)(first) - _agg(name, params)(third))
    assert distance <= _tolerance(bound.l2)


# --- the per-input bounds are attained -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "rows", "index", "expected"),
    [
        ("fedavg", {}, [-C, 0.0, 0.0, 0.0], 0, 2 * C / 4),
        ("trimmed-mean", {"beta": 0.2}, [-C, -C, -C, C, C], 0, 2 * C / 3),
        ("median", {}, [-C, -C, C], 0, 2 * C),
        ("median", {}, [-C, -C, C, C], 0, C),
        ("krum", {"f": 1}, [-C, -C, -C, C, C], 0, 2 * C),
    ],
)
def test_the_bound_is_tight(
    name: str, params: dict[str, Any], rows: list[float], index: int, expected: float
) -> None:
    cohort = np.array(rows)[:, None]
    neighbour = cohort.copy()
    neighbour[index] = C
    moved = float(np.linalg.norm(_agg(name, params)(neighbour) - _agg(name, params)(cohort)))
    bound = aggregate_sensitivity(name, params, len(rows), C, relation="replace-one")
    assert moved == pytest.approx(expected)
    assert bound.l2 == pytest.approx(expected)


# --- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "relation", "expected"),
    [
        ("fedavg", {}, "replace-one", 2 * C / 20),
        ("fedavg", {}, "add-remove", C / 20),
        ("trimmed-mean", {"beta": 0.1}, "replace-one", 2 * C / 16),
        ("trimmed-mean", {"beta": 0.1}, "add-remove", 2 * C / np.sqrt(0.9)),
        ("median", {}, "replace-one", C),  # n = 20 even: the mean of the two middle values
        ("median", {}, "add-remove", 2 * np.sqrt(2) * C),
        ("krum", {"f": 2}, "replace-one", 2 * C),
        ("krum", {"f": 2}, "add-remove", 2 * C),
        ("multi-krum", {"f": 2}, "add-remove", 2 * C),
        ("geometric-median", {}, "add-remove", 2 * C),
        ("centered-clip", {"tau": 1.0}, "add-remove", 2 * C),
        ("bulyan", {"f": 2}, "replace-one", 2 * C * np.sqrt(16 / 12)),
        ("bulyan", {"f": 2}, "add-remove", 2 * C * np.sqrt(7 / 3)),
        ("fedavg", {"preaggregation": "bucketing", "bucket_size": 4}, "replace-one", 2 * C / 4 / 5),
        ("krum", {"f": 2, "preaggregation": "nnm"}, "replace-one", 2 * C),
    ],
)
def test_sensitivity_table(
    name: str, params: dict[str, Any], relation: str, expected: float
) -> None:
    result = aggregate_sensitivity(name, params, 20, C, relation=relation)  # type: ignore[arg-type]
    assert isinstance(result, Sensitivity)
    assert result.l2 == pytest.approx(expected)
    assert result.relation == relation
    assert "without client weights" in result.argument


def test_robust_aggregators_say_how_much_more_noise_they_need() -> None:
    argument = aggregate_sensitivity("median", {}, 101, C, relation="replace-one").argument
    assert "101×" in argument
    assert "does not shrink with n" in argument
    fedavg = aggregate_sensitivity("fedavg", {}, 50, C).argument
    assert "fixed denominator" in fedavg
    assert "McMahan" in fedavg


def test_nnm_and_bucketing_say_how_one_client_spreads() -> None:
    nnm = aggregate_sensitivity(
        "median", {"preaggregation": "nnm", "f": 2}, 20, C, relation="replace-one"
    )
    assert "NNM" in nnm.argument
    bucketing = aggregate_sensitivity(
        "median", {"preaggregation": "bucketing", "bucket_size": 3}, 20, C, relation="replace-one"
    )
    assert "smallest bucket" in bucketing.argument
    assert bucketing.l2 == pytest.approx(2 * C / 2)  # last bucket has 20 − 18 = 2 clients


# --- refusals ----------------------------------------------------------------------------------


def test_fedavg_with_cohort_dependent_rows_under_add_remove_is_refused() -> None:
    with pytest.raises(UnsoundPrivacyError, match="no sensitivity bound"):
        aggregate_sensitivity(
            "fedavg", {}, 20, C, relation="add-remove", rows_depend_on_cohort=True
        )
    assert issubclass(UnsoundPrivacyError, ValueError)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("mean", {}, 10, C), {}, "unknown aggregator 'mean'; choose one of: fedavg, krum"),
        (("median", {"alpha": 1}, 10, C), {}, "unknown parameter 'alpha'"),
        (("bulyan", {"f": 2}, 10, C), {"relation": "replace-one"}, "at least 11 clients"),
        (("median", {}, 0, C), {}, "n must be an integer >= 1"),
        (("median", {}, 10, 0.0), {}, "clip_norm"),
        (("median", {}, 10, C), {"relation": "swap"}, "relation must be one of"),
        (("trimmed-mean", {"beta": 0.7}, 10, C), {}, "beta"),
    ],
)
def test_bad_requests_say_what_is_allowed(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        aggregate_sensitivity(*args, **kwargs)
