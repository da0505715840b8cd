"""FedAvg: the average of the updates, weighted by the clients' numbers of examples.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017.

The non-robust baseline, like Flower's: one Byzantine client moves it arbitrarily far, and the
weights are honoured as reported, so a client that claims a huge ``num_examples`` buys as much
influence as it likes. Use it behind validation and clipping, or choose a robust rule.
Without weights it is the plain mean. It accepts any ``n >= 1`` and takes no parameters.
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators._base import Aggregator, Float64Array
from fedwarden.pipeline.aggregators._cohort import Cohort
from fedwarden.pipeline.errors import InvalidCohortError


class FedAvg(Aggregator):
    name = "fedavg"

    def __init__(self) -> None:
        super().__init__()

    @property
    def min_clients(self) -> int:
        return 1

    def aggregate(self, cohort: Cohort) -> Float64Array:
        weights = cohort.weights if cohort.weights is not None else np.ones(cohort.size)
        total = float(weights.sum())
        if not (np.isfinite(total) and total > 0):
            raise InvalidCohortError(
                f"fedavg needs weights with a positive, finite total, got a total of {total}"
            )
        return cohort.combine(weights / total)
