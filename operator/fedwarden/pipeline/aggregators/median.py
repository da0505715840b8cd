"""Coordinate-wise median.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018.

Each coordinate of the result is the median of that coordinate over the ``n`` updates (the mean
of the two middle values when ``n`` is even). Needs ``n >= 2f + 1`` (an honest majority in every
coordinate). Defends against any ``f < n / 2`` outliers per coordinate; does not defend against
attacks that shift every coordinate a little inside the honest spread (ALIE), and its statistical
error grows with heterogeneity. Computed by sorting transposed column blocks (:mod:`._cohort`).
Weights are ignored: a client cannot buy influence by claiming many examples.
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators._base import ByzantineRobust, Float64Array, FloatArray
from fedwarden.pipeline.aggregators._cohort import Cohort


def sorted_medians(block: FloatArray) -> Float64Array:
    """The median of each row of ``block``, whose rows are sorted, in float64."""
    k = block.shape[1]
    upper = block[:, k // 2].astype(np.float64)
    if k % 2:
        return upper
    return (block[:, k // 2 - 1].astype(np.float64) + upper) / 2.0


class Median(ByzantineRobust):
    name = "median"

    def __init__(self, *, f: object = 0) -> None:
        super().__init__(f=f)

    @property
    def min_clients(self) -> int:
        return 2 * self.f + 1

    @property
    def requirement(self) -> str:
        return f"n >= 2f + 1 = {self.min_clients} clients"

    def aggregate(self, cohort: Cohort) -> Float64Array:
        return cohort.per_sorted_block(sorted_medians)
