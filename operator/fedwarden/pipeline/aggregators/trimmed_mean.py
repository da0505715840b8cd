"""Coordinate-wise trimmed mean.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018.

In each coordinate the ``t = int(beta · n)`` smallest and ``t`` largest values are dropped and the
rest averaged (``t`` is rounded down, as in ``scipy.stats.trim_mean`` and Flower). ``beta`` is the
fraction trimmed per side, ``0 <= beta < 0.5`` (default 0.1). ``f`` (default 0) states how many
Byzantine clients to tolerate: a call is refused unless ``t >= f``, because a trimmed mean that
keeps an attacker's value in some coordinate follows it without bound. Defends against up to
``t`` outliers per coordinate and side; like the median, not against small coordinated shifts
(ALIE). Sorted transposed column blocks, summed in float64. Weights are ignored: a client cannot
buy influence by claiming many examples.
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators import _params
from fedwarden.pipeline.aggregators._base import ByzantineRobust, Float64Array, FloatArray
from fedwarden.pipeline.aggregators._cohort import Cohort


def trimmed_count(beta: float, n: int) -> int:
    """How many values are dropped on each side of ``n``."""
    return int(beta * n)


class TrimmedMean(ByzantineRobust):
    name = "trimmed-mean"

    def __init__(self, *, beta: object = 0.1, f: object = 0) -> None:
        self.beta = _params.real("beta", beta, low=0.0, high=0.5)
        super().__init__(f=f, beta=self.beta)
        if self.f > 0 and self.beta == 0.0:
            raise ValueError(f"trimmed-mean with beta=0 trims nothing; f={self.f} needs beta > 0")

    @property
    def min_clients(self) -> int:
        if self.f == 0:
            return 1
        n = max(1, int(self.f / self.beta) - 1)  # then count up past float rounding
        while trimmed_count(self.beta, n) < self.f:
            n += 1
        return n

    @property
    def requirement(self) -> str:
        return (
            f"n >= {self.min_clients} clients, so that it trims int(beta·n) >= f = {self.f} "
            "per side"
        )

    def aggregate(self, cohort: Cohort) -> Float64Array:
        n = cohort.size
        t = trimmed_count(self.beta, n)

        def kept_mean(block: FloatArray) -> Float64Array:
            kept: Float64Array = block[:, t : n - t].sum(axis=1, dtype=np.float64) / (n - 2 * t)
            return kept

        return cohort.per_sorted_block(kept_mean)
