"""Centered clipping.

Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust Optimization", ICML 2021.

Starting from ``v_0``, each of ``iterations`` steps (default 10) moves by the average of the
updates' differences to ``v``, each clipped to norm ``tau``::

    v ← v + (1/n) Σ_i (x_i − v) · min(1, tau / ‖x_i − v‖)

``tau`` (the clipping radius, > 0) has no default: it must be on the scale of the honest
updates' spread, which only the caller knows (for example a multiple of the clipping norm C).

Starting point: the origin, i.e. "no change to the model". The paper starts from the previous
round's aggregate (with momentum); this aggregator is stateless, and the origin keeps every
iterate a convex combination of the origin and the updates (each step mixes ``v`` and the
``x_i`` with non-negative coefficients summing to 1), a property the DP sensitivity analysis
relies on. The price: each step moves by at most ``tau``, so ``iterations · tau`` must reach the
honest updates for the result to reach them.

Needs ``n >= 2f + 1``. A Byzantine update moves each step by at most ``tau / n``, whatever its
size; honest updates farther than ``tau`` from ``v`` are clipped too. Iterates are combinations
of the updates, so the steps run on coefficients and the centred Gram matrix. Weights are
ignored: a client cannot buy influence by claiming many examples.
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators import _params
from fedwarden.pipeline.aggregators._base import ByzantineRobust, Float64Array
from fedwarden.pipeline.aggregators._cohort import Cohort
from fedwarden.pipeline.aggregators._gram import Geometry


def centered_clipping(geometry: Geometry, *, tau: float, iterations: int) -> Float64Array:
    """Coefficients ``α`` of the final iterate ``v = Σ α_i x_i``, starting from the origin."""
    k = len(geometry.gram)
    alpha = np.zeros(k)
    for _ in range(iterations):
        distance = np.sqrt(geometry.to_combination(alpha))
        scale = tau / np.maximum(distance, tau) / k  # min(1, tau / distance) without 0 / 0
        alpha = (1.0 - scale.sum()) * alpha + scale
    return alpha


class CenteredClip(ByzantineRobust):
    name = "centered-clip"

    def __init__(self, *, tau: object = None, iterations: object = 10, f: object = 0) -> None:
        if tau is None:
            raise ValueError(
                "centered-clip needs tau, the clipping radius (a finite number > 0 on the "
                "scale of the honest updates' spread, e.g. a multiple of the clipping norm)"
            )
        self.tau = _params.real("tau", tau, low=0.0, low_open=True)
        self.iterations = _params.integer("iterations", iterations, minimum=1)
        super().__init__(f=f, tau=self.tau, iterations=self.iterations)

    @property
    def min_clients(self) -> int:
        return 2 * self.f + 1

    @property
    def requirement(self) -> str:
        return f"n >= 2f + 1 = {self.min_clients} clients"

    def aggregate(self, cohort: Cohort) -> Float64Array:
        alpha = centered_clipping(cohort.geometry(), tau=self.tau, iterations=self.iterations)
        return cohort.combine(alpha)
