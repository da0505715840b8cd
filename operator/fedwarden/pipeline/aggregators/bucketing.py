"""Bucketing, a pre-aggregation for any aggregator.

Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via Bucketing",
ICLR 2022.

The updates are shuffled and split into ``ceil(n / s)`` buckets of ``s = bucket_size`` (default
2; the last bucket may be smaller); the aggregator runs on the bucket means with the same ``f``,
since ``f`` attackers can spoil at most ``f`` buckets. Averaging shrinks the honest spread that
heterogeneity creates. Needs ``ceil(n / s)`` to meet the aggregator's own minimum. The shuffle
comes from ``numpy.random.default_rng(seed)`` when ``seed`` is given (reproducible: the same seed
gives the same sequence of shuffles, one per call) and otherwise from a generator seeded by the OS
CSPRNG, so attackers cannot predict their bucket mates; never numpy's global state. Weights are
dropped: the paper averages buckets uniformly.
"""

from __future__ import annotations

import secrets

import numpy as np

from fedwarden.pipeline.aggregators import _params
from fedwarden.pipeline.aggregators._base import Aggregator
from fedwarden.pipeline.aggregators._cohort import Cohort


class Bucketing:
    name = "bucketing"

    def __init__(self, *, bucket_size: object = 2, seed: object = None) -> None:
        self.bucket_size = _params.integer("bucket_size", bucket_size, minimum=2)
        self.seed = None if seed is None else _params.integer("seed", seed, minimum=0)
        entropy = secrets.randbits(128) if self.seed is None else self.seed
        self._rng = np.random.default_rng(entropy)

    @property
    def params(self) -> dict[str, object]:
        return {"bucket_size": self.bucket_size, "seed": self.seed}

    def min_clients(self, inner: Aggregator) -> int:
        return (inner.min_clients - 1) * self.bucket_size + 1

    def requirement(self, inner: Aggregator) -> str:
        return (
            f"n >= {self.min_clients(inner)} clients, so that its ceil(n / {self.bucket_size}) "
            f"buckets meet {inner.requirement}"
        )

    def mix(self, cohort: Cohort) -> Cohort:
        order = self._rng.permutation(cohort.size)
        buckets = [
            order[start : start + self.bucket_size]
            for start in range(0, cohort.size, self.bucket_size)
        ]
        mixing = np.zeros((len(buckets), cohort.size))
        for row, members in enumerate(buckets):
            mixing[row, members] = 1.0 / len(members)
        return cohort.mix(mixing)
