"""Splitting a training set across simulated clients.

Three schemes, each deterministic for a given generator and each assigning every sample to
exactly one client:

- ``iid``: a random permutation cut into near-equal parts.
- ``dirichlet``: label skew after Hsu, Qi and Brown, "Measuring the Effects of Non-Identical
  Data Distribution for Federated Visual Classification" (2019): for every class, the share of
  each client is drawn from ``Dirichlet(alpha, ..., alpha)``. Small ``alpha`` (0.1) gives clients
  that see one or two classes; large ``alpha`` (100) approaches IID. Draws are repeated (as in
  the reference implementation of NIID-Bench, Li et al. 2022) until every client holds at least
  ``min_samples``; if that fails after many attempts, samples are moved from the largest
  clients to the smallest.
- ``shards``: McMahan et al., "Communication-Efficient Learning of Deep Networks from
  Decentralized Data" (AISTATS 2017): sort by label, cut into ``n_clients * shards_per_client``
  shards and give each client ``shards_per_client`` random shards (with 2, most clients see two
  classes).

:func:`label_skew` measures the result: the mean total-variation distance between a client's
label distribution and the global one (0 for perfectly IID, close to 1 when every client holds a
single class).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards")
"""Names accepted by :func:`partition`."""

IndexArray = npt.NDArray[np.intp]

_DIRICHLET_ATTEMPTS = 200


def partition(
    labels: npt.ArrayLike,
    n_clients: int,
    *,
    scheme: str = "iid",
    alpha: float = 0.5,
    shards_per_client: int = 2,
    min_samples: int = 5,
    rng: np.random.Generator,
) -> list[IndexArray]:
    """Indices of the samples of each client, sorted, one array per client.

    Every client receives at least ``min(min_samples, len(labels) // n_clients)`` samples.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if n_clients < 1:
        raise ValueError(f"need at least one client, got {n_clients}")
    if len(y) < n_clients:
        raise ValueError(
            f"{len(y)} training samples cannot give each of {n_clients} clients one sample; "
            "use fewer clients or a larger data set"
        )
    floor = max(1, min(min_samples, len(y) // n_clients))
    if scheme == "iid":
        parts = iid_partition(len(y), n_clients, rng=rng)
    elif scheme == "dirichlet":
        parts = dirichlet_partition(y, n_clients, alpha, min_samples=floor, rng=rng)
    elif scheme == "shards":
        parts = shard_partition(y, n_clients, shards_per_client, rng=rng)
    else:
        raise ValueError(f"unknown partition {scheme!r}; choose one of: {', '.join(PARTITIONS)}")
    return [np.sort(p) for p in parts]


def iid_partition(n_samples: int, n_clients: int, *, rng: np.random.Generator) -> list[IndexArray]:
    """A random permutation of ``range(n_samples)`` cut into ``n_clients`` near-equal parts."""
    return list(np.array_split(rng.permutation(n_samples), n_clients))


def dirichlet_partition(
    labels: npt.NDArray[np.integer],
    n_clients: int,
    alpha: float,
    *,
    min_samples: int,
    rng: np.random.Generator,
) -> list[IndexArray]:
    """Per-class shares from ``Dirichlet(alpha)`` (Hsu et al. 2019), at least ``min_samples`` each.

    As in NIID-Bench's implementation, a client that already holds its fair share
    ``n / n_clients`` gets no more of the following classes, which keeps sizes bounded.
    """
    if not alpha > 0 or not np.isfinite(alpha):
        raise ValueError(f"the Dirichlet concentration alpha must be > 0, got {alpha}")
    n = len(labels)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    parts: list[list[int]] = []
    for _ in range(_DIRICHLET_ATTEMPTS):
        parts = [[] for _ in range(n_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            shares = rng.dirichlet(np.full(n_clients, alpha))
            sizes = np.array([len(p) for p in parts])
            shares = shares * (sizes < n / n_clients)
            total = shares.sum()
            shares = shares / total if total > 0 else np.full(n_clients, 1.0 / n_clients)
            cuts = (np.cumsum(shares) * len(idx)).astype(np.int64)[:-1]
            for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_samples:
            break
    else:
        _repair(parts, min_samples, rng)
    return [np.asarray(p, dtype=np.intp) for p in parts]


def _repair(parts: list[list[int]], min_samples: int, rng: np.random.Generator) -> None:
    """Move random samples from the largest clients to those below ``min_samples``."""
    for small in range(len(parts)):
        while len(parts[small]) < min_samples:
            donor = max(range(len(parts)), key=lambda i: len(parts[i]))
            if len(parts[donor]) <= min_samples:
                raise ValueError("not enough samples to give every client the minimum")
            j = int(rng.integers(len(parts[donor])))
            parts[small].append(parts[donor].pop(j))


def shard_partition(
    labels: npt.NDArray[np.integer],
    n_clients: int,
    shards_per_client: int,
    *,
    rng: np.random.Generator,
) -> list[IndexArray]:
    """Label-sorted shards, ``shards_per_client`` random ones per client (McMahan et al. 2017)."""
    if shards_per_client < 1:
        raise ValueError(f"shards_per_client must be >= 1, got {shards_per_client}")
    n_shards = n_clients * shards_per_client
    if n_shards > len(labels):
        raise ValueError(
            f"{n_clients} clients x {shards_per_client} shards = {n_shards} shards, "
            f"more than the {len(labels)} samples"
        )
    # a random tie-break inside each class so that equal labels are not in file order
    order = np.lexsort((rng.random(len(labels)), labels))
    shards = np.array_split(order, n_shards)
    assignment = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return [np.concatenate([shards[s] for s in row]) for row in assignment]


def label_skew(parts: list[IndexArray], labels: npt.ArrayLike) -> float:
    """Mean total-variation distance between each client's label distribution and the global one."""
    y = np.asarray(labels)
    n_classes = int(y.max()) + 1
    global_dist = np.bincount(y, minlength=n_classes) / len(y)
    distances = []
    for p in parts:
        if len(p) == 0:
            continue
        local = np.bincount(y[p], minlength=n_classes) / len(p)
        distances.append(0.5 * np.abs(local - global_dist).sum())
    return float(np.mean(distances))
