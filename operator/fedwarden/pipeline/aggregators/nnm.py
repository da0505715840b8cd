"""Nearest-neighbour mixing (NNM), a pre-aggregation for any aggregator.

Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing: A Recipe for Optimal
Byzantine ML under Heterogeneity", AISTATS 2023.

Each update is replaced by the average of its ``n − f`` nearest updates (itself included, and
first among equal distances; other ties go to the lower index); the aggregator then runs on those
``n`` averages. Mixing shrinks the honest updates' spread relative to what ``f`` attackers can
do, which is what lifts Krum, median and the others to optimal rates under heterogeneity.
Neighbours come from the centred Gram matrix. ``f`` is the aggregator's ``f`` (``fedavg`` takes it
only for NNM); ``f = 0`` mixes everything into the mean. Needs ``n >= f + 1`` besides the
aggregator's own minimum. Weights are dropped: the paper mixes uniformly.
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators import _params
from fedwarden.pipeline.aggregators._base import Aggregator
from fedwarden.pipeline.aggregators._cohort import Cohort


class NearestNeighbourMixing:
    name = "nnm"

    def __init__(self, *, f: object = 0) -> None:
        self.f = _params.integer("f", f, minimum=0)

    @property
    def params(self) -> dict[str, object]:
        return {"f": self.f}

    def min_clients(self, inner: Aggregator) -> int:
        return max(inner.min_clients, self.f + 1)

    def requirement(self, inner: Aggregator) -> str:
        if inner.min_clients > self.f:
            return inner.requirement
        return f"n >= f + 1 = {self.f + 1} clients"

    def mix(self, cohort: Cohort) -> Cohort:
        k = cohort.size
        distances = cohort.geometry().pairwise()
        np.fill_diagonal(distances, -1.0)  # a row is its own nearest, even among duplicates
        nearest = np.argsort(distances, axis=1, kind="stable")[:, : k - self.f]
        mixing = np.zeros((k, k))
        np.put_along_axis(mixing, nearest, 1.0 / (k - self.f), axis=1)
        return cohort.mix(mixing)
