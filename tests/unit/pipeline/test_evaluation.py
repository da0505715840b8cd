"""Federated evaluation: clients' claims combined by a median and a capped-count mean."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedwarden.pipeline.evaluation import Evaluation, combine_client_evaluations

reports = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10**6),
        st.dictionaries(
            st.sampled_from(["accuracy", "loss", "f1"]),
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
            max_size=3,
        ),
    ),
    max_size=12,
)


@given(reports)
def test_matches_a_brute_force_reference(raw: list[tuple[int, dict[str, float]]]) -> None:
    combined = combine_client_evaluations([Evaluation(n, m) for n, m in raw])
    usable = [(n, m) for n, m in raw if n > 0 and m]
    if not usable:
        assert combined == {}
        return
    cap = statistics.median([n for n, _ in usable])
    assert combined["evaluated_by"] == len(usable)
    assert combined["evaluated_examples"] == pytest.approx(sum(min(n, cap) for n, _ in usable))
    for name in {k for _, m in usable for k in m}:
        values = [m[name] for _, m in usable if name in m]
        weights = [min(n, cap) for n, m in usable if name in m]
        assert combined[name] == pytest.approx(statistics.median(values))
        expected = sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)
        assert combined[f"{name}_mean"] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_a_minority_of_liars_moves_neither_the_median_nor_the_mean_far() -> None:
    honest = [Evaluation(100, {"accuracy": a}) for a in np.linspace(0.80, 0.84, 7)]
    liars = [Evaluation(10**9, {"accuracy": 0.0}) for _ in range(3)]
    combined = combine_client_evaluations(honest + liars)
    assert 0.80 <= combined["accuracy"] <= 0.84
    # capped at the median count, the liars weigh 3 of 10, not 3 billion of 3 billion + 700
    assert combined["accuracy_mean"] == pytest.approx(0.7 * 0.82, abs=1e-9)
