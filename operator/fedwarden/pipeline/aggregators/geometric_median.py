"""Geometric median by the smoothed Weiszfeld algorithm (RFA).

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning", IEEE Transactions on
Signal Processing 2022 (arXiv:1912.13445).

The geometric median minimises ``Σ_i ‖v − x_i‖``. Starting from the mean, each Weiszfeld step
re-weights the updates by ``1 / max(nu, ‖v − x_i‖)`` and takes their weighted average; ``nu``
(default 1e-6) is RFA's smoothing, which keeps the step defined when ``v`` lands on an update.
It stops after ``max_iter`` steps (default 100) or when a step improves the objective by no more
than ``eps`` (default 1e-6) relative to its value. Needs ``n >= 2f + 1``: the geometric median
has breakdown point 1/2, and ``f`` only states the assumption. Defends against up to ``f`` updates
of any size; does not defend against small coordinated shifts inside the honest spread. Every
iterate is a convex combination of the updates, so the iterations run on the coefficients and the
centred Gram matrix; only the result touches the ``(n, d)`` data. Weights are ignored (RFA weights
by ``num_examples``, which lets a client buy influence); the result always stays inside the convex
hull of the updates.
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators import _params
from fedwarden.pipeline.aggregators._base import ByzantineRobust, Float64Array
from fedwarden.pipeline.aggregators._cohort import Cohort
from fedwarden.pipeline.aggregators._gram import Geometry


def weiszfeld(geometry: Geometry, *, max_iter: int, eps: float, nu: float) -> Float64Array:
    """Coefficients ``α`` (summing to 1) of the smoothed-Weiszfeld geometric median."""
    k = len(geometry.gram)
    alpha = np.full(k, 1.0 / k)
    objective = float(np.sqrt(geometry.to_combination(alpha)).sum())
    for _ in range(max_iter):
        inverse = 1.0 / np.maximum(np.sqrt(geometry.to_combination(alpha)), nu)
        alpha = inverse / inverse.sum()
        previous, objective = objective, float(np.sqrt(geometry.to_combination(alpha)).sum())
        if abs(previous - objective) <= eps * objective:
            break
    return alpha


class GeometricMedian(ByzantineRobust):
    name = "geometric-median"

    def __init__(
        self, *, f: object = 0, max_iter: object = 100, eps: object = 1e-6, nu: object = 1e-6
    ) -> None:
        self.max_iter = _params.integer("max_iter", max_iter, minimum=1)
        self.eps = _params.real("eps", eps, low=0.0)
        self.nu = _params.real("nu", nu, low=0.0, low_open=True)
        super().__init__(f=f, max_iter=self.max_iter, eps=self.eps, nu=self.nu)

    @property
    def min_clients(self) -> int:
        return 2 * self.f + 1

    @property
    def requirement(self) -> str:
        return f"n >= 2f + 1 = {self.min_clients} clients"

    def aggregate(self, cohort: Cohort) -> Float64Array:
        alpha = weiszfeld(cohort.geometry(), max_iter=self.max_iter, eps=self.eps, nu=self.nu)
        return cohort.combine(alpha)
