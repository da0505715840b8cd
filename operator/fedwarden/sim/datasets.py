"""Offline data sets for the simulation.

Every data set here is available without a network connection:

- ``digits``, ``breast-cancer``, ``wine``: shipped inside the scikit-learn wheel
  (:func:`sklearn.datasets.load_digits` and friends read files from the installed package).
- ``mnist1d``: generated locally by the ``mnist1d`` package (Greydanus, "Scaling down deep
  learning", 2020) with :func:`mnist1d.data.make_dataset`. Its download helper is never called.
  Generating the default 5,000 samples takes a few seconds, so the raw arrays are cached in
  the process.

:func:`load_dataset` returns a :class:`Dataset`: a seeded, stratified train/test split whose
features are standardised with the training set's mean and standard deviation.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

DATASETS: tuple[str, ...] = ("digits", "breast-cancer", "wine", "mnist1d")
"""Names accepted by :func:`load_dataset`."""

MNIST1D_DEFAULT_SAMPLES = 5000

_A = TypeVar("_A", bound=npt.NDArray[Any])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set split into train and test parts.

    Features are float32 and standardised (training mean 0, standard deviation 1 per feature;
    a feature that is constant in the training set is only centred). Labels are int64 in
    ``range(n_classes)``. The arrays are read-only so that a data set can be shared by many
    simulations in one process.
    """

    name: str
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
            f"n_classes={self.n_classes})"
        )


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
    n_samples: int | None = None,
) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) and split it with ``seed``.

    ``n_samples`` is only meaningful for ``mnist1d``, which can generate as many samples as
    asked (default 5,000); a large simulated population needs more than the default.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n_samples is not None and name != "mnist1d":
        raise ValueError(f"n_samples can only be set for mnist1d, not for {name!r}")
    if n_samples is not None and n_samples < 100:
        raise ValueError(f"n_samples must be at least 100, got {n_samples}")
    x, y = _raw(name, n_samples if n_samples is not None else MNIST1D_DEFAULT_SAMPLES)
    n_classes = int(y.max()) + 1
    train_idx, test_idx = _stratified_split(y, test_fraction, np.random.default_rng(seed))
    x_train, x_test = x[train_idx], x[test_idx]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std < 1e-12] = 1.0
    return Dataset(
        name=name,
        x_train=_frozen(((x_train - mean) / std).astype(np.float32)),
        y_train=_frozen(y[train_idx]),
        x_test=_frozen(((x_test - mean) / std).astype(np.float32)),
        y_test=_frozen(y[test_idx]),
        n_classes=n_classes,
    )


def _frozen(a: _A) -> _A:
    a.setflags(write=False)
    return a


def _stratified_split(
    y: npt.NDArray[np.int64], test_fraction: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    train: list[npt.NDArray[np.intp]] = []
    test: list[npt.NDArray[np.intp]] = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = round(len(idx) * test_fraction)
        n_test = min(max(n_test, 1), len(idx) - 1) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


@functools.lru_cache(maxsize=8)
def _raw(name: str, mnist1d_samples: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """The unsplit, unscaled arrays; cached per process (they are read-only)."""
    if name == "mnist1d":
        x, y = _generate_mnist1d(mnist1d_samples)
    else:
        from sklearn import datasets as skd

        loader = {
            "digits": skd.load_digits,
            "breast-cancer": skd.load_breast_cancer,
            "wine": skd.load_wine,
        }[name]
        bunch = loader()
        x = np.asarray(bunch.data, dtype=np.float64)
        y = np.asarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _generate_mnist1d(n_samples: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Generate MNIST-1D locally (never downloads).

    ``mnist1d.data.make_dataset`` reseeds Python's and numpy's global generators; their states
    are saved and restored so that loading a data set leaves no trace on the caller.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n_samples
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (saved to undo mnist1d's global reseeding)
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float64)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return x, y
