"""Multi-Krum: the average of the ``m`` updates with the best Krum scores.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", NeurIPS 2017 (Section 5, "Multi-Krum").

Scores are Krum's (:mod:`.krum`); the ``m`` lowest are averaged with equal weight (ties go to
the lowest indices). ``m`` defaults to ``n − f`` at call time and may not exceed it: with ``f``
Byzantine clients, selecting more than ``n − f`` would force some of them in. Needs
``n >= 2f + 3`` (and ``n >= m + f`` when ``m`` is fixed). Same defence and same blind spots as
Krum, with the variance of an average of ``m``. Weights are ignored: Flower's Multi-Krum weights
the selected updates by ``num_examples``, which lets a selected attacker dominate.
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators import _params
from fedwarden.pipeline.aggregators._base import ByzantineRobust, Float64Array
from fedwarden.pipeline.aggregators._cohort import Cohort
from fedwarden.pipeline.aggregators.krum import krum_scores


class MultiKrum(ByzantineRobust):
    name = "multi-krum"

    def __init__(self, *, f: object = 0, m: object = None) -> None:
        self.m = None if m is None else _params.integer("m", m, minimum=1)
        super().__init__(f=f, m=self.m)

    @property
    def min_clients(self) -> int:
        return max(2 * self.f + 3, (self.m or 0) + self.f)

    @property
    def requirement(self) -> str:
        if self.m is None:
            return f"n >= 2f + 3 = {self.min_clients} clients"
        return f"n >= max(2f + 3, m + f) = {self.min_clients} clients"

    def aggregate(self, cohort: Cohort) -> Float64Array:
        n = cohort.size
        m = n - self.f if self.m is None else self.m
        scores = krum_scores(cohort.geometry().pairwise(), n - self.f - 2)
        selected = np.zeros(n)
        selected[np.argsort(scores, kind="stable")[:m]] = 1.0 / m
        return cohort.combine(selected)
