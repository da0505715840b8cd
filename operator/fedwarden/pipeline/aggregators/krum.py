"""Krum: the update closest to its ``n − f − 2`` nearest neighbours.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", NeurIPS 2017.

Each update is scored by the sum of squared distances to its ``n − f − 2`` nearest other updates;
the one with the lowest score is the result (ties go to the lowest index). Needs
``n >= 2f + 3``. Defends against up to ``f`` Byzantine updates that try to drag the average
away; does not defend against attacks that stay inside the honest spread (ALIE, inner-product
manipulation), and, returning a single update, it throws away the variance reduction of
averaging. Distances come from the centred float64 Gram matrix (:mod:`._gram`), so a large
common offset does not scramble the ranking. Weights are ignored: a client cannot buy influence
by claiming many examples.
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators._base import ByzantineRobust, Float64Array
from fedwarden.pipeline.aggregators._cohort import Cohort


def krum_scores(distances: Float64Array, neighbours: int) -> Float64Array:
    """For each row, the sum of its ``neighbours`` smallest squared distances to the others."""
    others = distances + np.diag(np.full(len(distances), np.inf))
    nearest = np.partition(others, neighbours - 1, axis=1)[:, :neighbours]
    scores: Float64Array = nearest.sum(axis=1)
    return scores


class Krum(ByzantineRobust):
    name = "krum"

    def __init__(self, *, f: object = 0) -> None:
        super().__init__(f=f)

    @property
    def min_clients(self) -> int:
        return 2 * self.f + 3

    @property
    def requirement(self) -> str:
        return f"n >= 2f + 3 = {self.min_clients} clients"

    def aggregate(self, cohort: Cohort) -> Float64Array:
        scores = krum_scores(cohort.geometry().pairwise(), cohort.size - self.f - 2)
        chosen = np.zeros(cohort.size)
        chosen[np.argmin(scores)] = 1.0
        return cohort.combine(chosen)
