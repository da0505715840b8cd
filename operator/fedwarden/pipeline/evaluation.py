"""Federated evaluation: combining the metrics clients report about a global model.

When the aggregator cannot evaluate a model itself (the data never leaves the sites), sampled
clients evaluate the round's global model on their own held-out data and report the metrics in
their signed envelopes. Those numbers are the clients' claims: an attacker can report anything
(Bhagoji et al., "Analyzing Federated Learning through an Adversarial Lens", ICML 2019, and the
evaluation-poisoning discussion of Kairouz et al., "Advances and Open Problems in Federated
Learning", 2021, §5). So they are combined robustly and only ever reported, never used to
judge a client:

- the **median** over the reporting clients, which a minority of liars cannot move past the
  honest range (it is the headline value, ``<metric>``);
- a **mean weighted by example counts capped at the median count** (``<metric>_mean``): closer
  to a pooled estimate than the median when sites differ in size, while a client that claims a
  million examples weighs no more than a typical one;
- ``evaluated_by``: how many clients' reports were combined, and ``evaluated_examples``: the sum
  of their capped counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Evaluation(NamedTuple):
    """An evaluation of a model on held-out data: how many examples, and scalar metrics."""

    num_examples: int
    metrics: dict[str, float]


def combine_client_evaluations(reports: Sequence[Evaluation]) -> dict[str, float]:
    """Combine the clients' reports (see the module docstring).

    A metric is combined over the clients that reported it; reports with no examples or no
    metrics are ignored. Returns ``{}`` when nothing usable was reported.
    """
    usable = [(int(n), dict(m)) for n, m in reports if int(n) > 0 and m]
    if not usable:
        return {}
    counts = np.array([n for n, _ in usable], dtype=np.float64)
    capped = np.minimum(counts, np.median(counts))
    combined: dict[str, float] = {
        "evaluated_by": float(len(usable)),
        "evaluated_examples": float(capped.sum()),
    }
    names = sorted({name for _, metrics in usable for name in metrics})
    for name in names:
        rows = [i for i, (_, metrics) in enumerate(usable) if name in metrics]
        values = np.array([usable[i][1][name] for i in rows], dtype=np.float64)
        weights = capped[rows]
        combined[name] = float(np.median(values))
        combined[f"{name}_mean"] = float(np.average(values, weights=weights))
    return combined
