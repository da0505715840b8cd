"""Partitions: coverage, minimum size, skew against alpha, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from fedwarden.sim.datasets import load_dataset
from fedwarden.sim.partition import PARTITIONS, label_skew, partition


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return load_dataset("digits").y_train


@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize("n_clients", [1, 7, 25, 100])
def test_every_sample_exactly_once_and_every_client_some(
    labels: np.ndarray, scheme: str, n_clients: int
) -> None:
    parts = partition(labels, n_clients, scheme=scheme, alpha=0.1, rng=np.random.default_rng(0))
    assert len(parts) == n_clients
    everything = np.concatenate(parts)
    assert len(everything) == len(labels)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(labels)))
    assert min(len(p) for p in parts) >= min(5, len(labels) // n_clients)


def test_dirichlet_skew_grows_as_alpha_shrinks(labels: np.ndarray) -> None:
    def skew(alpha: float) -> float:
        values = [
            label_skew(
                partition(
                    labels, 25, scheme="dirichlet", alpha=alpha, rng=np.random.default_rng(s)
                ),
                labels,
            )
            for s in range(3)
        ]
        return float(np.mean(values))

    skews = [skew(a) for a in (100.0, 1.0, 0.5, 0.1)]
    assert skews == sorted(skews)
    assert skews[0] < 0.15
    assert skews[-1] > 0.6


def test_iid_is_balanced_and_shards_see_few_classes(labels: np.ndarray) -> None:
    iid = partition(labels, 10, scheme="iid", rng=np.random.default_rng(0))
    sizes = [len(p) for p in iid]
    assert max(sizes) - min(sizes) <= 1
    shards = partition(
        labels, 20, scheme="shards", shards_per_client=2, rng=np.random.default_rng(0)
    )
    classes_per_client = [len(np.unique(labels[p])) for p in shards]
    assert max(classes_per_client) <= 4
    assert np.mean(classes_per_client) <= 3


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_deterministic_under_a_seed(labels: np.ndarray, scheme: str) -> None:
    a = partition(labels, 13, scheme=scheme, rng=np.random.default_rng(42))
    b = partition(labels, 13, scheme=scheme, rng=np.random.default_rng(42))
    c = partition(labels, 13, scheme=scheme, rng=np.random.default_rng(43))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_extreme_skew_still_gives_every_client_the_minimum() -> None:
    labels = np.repeat(np.arange(3), [200, 5, 5])
    parts = partition(
        labels, 30, scheme="dirichlet", alpha=0.01, min_samples=5, rng=np.random.default_rng(0)
    )
    assert min(len(p) for p in parts) >= 5
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "zipf"}, "unknown partition"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"scheme": "shards", "shards_per_client": 0}, "shards_per_client"),
    ],
)
def test_bad_arguments(labels: np.ndarray, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        partition(labels, 10, rng=np.random.default_rng(0), **kwargs)  # type: ignore[arg-type]


def test_more_clients_than_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot give each"):
        partition(np.zeros(5, dtype=np.int64), 6, rng=np.random.default_rng(0))
