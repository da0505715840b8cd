"""Offline data sets: shapes, standardisation, determinism, no download."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fedwarden.sim.datasets import DATASETS, load_dataset

SHAPES = {
    "digits": (1797, 64, 10),
    "breast-cancer": (569, 30, 2),
    "wine": (178, 13, 3),
    "mnist1d": (5000, 40, 10),
}


@pytest.mark.parametrize("name", DATASETS)
def test_loads_offline_with_the_right_shapes(name: str) -> None:
    n, features, classes = SHAPES[name]
    ds = load_dataset(name, seed=0)
    assert ds.name == name
    assert ds.n_classes == classes
    assert ds.n_features == features
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == n
    assert ds.x_train.shape[1] == ds.x_test.shape[1] == features
    assert ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64
    assert set(np.unique(ds.y_train)) == set(range(classes))
    assert set(np.unique(ds.y_test)) == set(range(classes))
    assert abs(len(ds.y_test) / n - 0.25) < 0.02
    # standardised with the training statistics
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-4)
    std = ds.x_train.std(axis=0)
    assert np.all((np.abs(std - 1.0) < 1e-3) | (std < 1e-6))


def test_split_is_deterministic_under_a_seed_and_differs_across_seeds() -> None:
    a, b, c = (load_dataset("wine", seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)


def test_arrays_are_read_only_so_runs_can_share_them() -> None:
    ds = load_dataset("digits")
    with pytest.raises(ValueError, match="read-only"):
        ds.x_train[0, 0] = 1.0


def test_mnist1d_is_generated_locally_and_leaves_global_random_state_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mnist1d.data

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download, raising=False)
    # mnist1d reseeds the legacy global generators; the loader must undo that
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    expected_np, expected_py = np.random.random(), random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    ds = load_dataset("mnist1d", n_samples=500)
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 500
    assert np.random.random() == expected_np  # noqa: NPY002
    assert random.random() == expected_py


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "cifar"}, "unknown data set"),
        ({"name": "digits", "test_fraction": 1.5}, "test_fraction"),
        ({"name": "digits", "n_samples": 1000}, "only be set for mnist1d"),
        ({"name": "mnist1d", "n_samples": 10}, "at least 100"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(**kwargs)  # type: ignore[arg-type]
