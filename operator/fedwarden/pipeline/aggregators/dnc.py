"""Divide-and-Conquer (DnC) spectral filtering, a pre-aggregation for any aggregator.

Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks and
Defenses for Federated Learning", NDSS 2021 (Algorithm 2).

The updates are centred at their mean and projected on the top right singular vector ``v`` of the
centred matrix; the ``⌊filter_fraction · n⌋`` updates with the largest squared projection
``((x_i − μ)·v)²`` are dropped and the aggregator runs on the rest. Updates that pursue a common
malicious goal, such as a backdoor, share a direction that honest updates lack; that direction
dominates the centred spectrum even when every malicious update is inside the honest spread in
norm and distance (which is all Krum, the median and the outlier test look at).

Two departures from the paper, neither of which changes what is computed in exact arithmetic:

- The paper projects a random subset of ``b`` coordinates, ``niters`` times, to make the SVD of
  an ``n × d`` matrix affordable. Here the whole update is used once: the squared projections
  are ``λ₁ u₁²`` for the top eigenpair ``(λ₁, u₁)`` of the ``n × n`` centred Gram matrix, which
  the cohort's geometry already holds (:mod:`._gram`), so no ``(n, d)`` pass is added.
- The paper removes ``c · m`` updates (``m`` the assumed attackers, ``c = 1``) and averages the
  rest. ``filter_fraction`` is ``c · m / n``, so that the count follows the cohort size from round
  to round, and any aggregator may take the rest (the paper's mean is ``fedavg``/``trimmed-mean``
  with ``beta=0``).

One addition, off by default: ``min_share`` drops nothing unless the top direction carries at
least that share of the centred cohort's variance (``λ₁ / Σ λ``). The filter assumes that the
attackers' common goal dominates the spectrum; when no direction dominates, the top one is some
honest heterogeneity (label skew) and dropping along it removes honest updates, which is what
inner-product manipulation exploits: its identical vectors sit near the centre and gain weight
as honest ones go (benchmarks/defence-matrix.md measures it).

Ties in the score go to the lower index. Weights are dropped: the aggregators that select ignore
them. Needs the aggregator's minimum after filtering.
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators import _params
from fedwarden.pipeline.aggregators._base import Aggregator, Float64Array
from fedwarden.pipeline.aggregators._cohort import Cohort


def spectral_scores(gram: Float64Array) -> tuple[Float64Array, Float64Array]:
    """Squared projections of the rows, centred at their mean, on their top singular vector, and
    the share of the centred variance along it.

    ``gram`` is any Gram matrix of the rows (centred at any point), or a stack ``(..., k, k)``
    of them: centring at the rows' own mean is ``J G J`` with ``J = I − 11ᵀ/k``, whose top
    eigenpair gives ``(Z v)_i² = λ₁ u₁ᵢ²``; the share is ``λ₁ / Σ λ`` (0 when all rows coincide).
    """
    k = gram.shape[-1]
    centring = np.eye(k) - 1.0 / k
    return centred_spectral_scores(centring @ gram @ centring)


def centred_spectral_scores(centred: Float64Array) -> tuple[Float64Array, Float64Array]:
    """:func:`spectral_scores` of a Gram matrix (or stack) of rows already centred at their mean."""
    eigenvalues, eigenvectors = np.linalg.eigh((centred + np.swapaxes(centred, -1, -2)) / 2.0)
    # rounding may leave -1e-17 for identical rows
    spectrum = np.maximum(eigenvalues, 0.0)
    top = spectrum[..., -1]
    scores: Float64Array = top[..., None] * eigenvectors[..., :, -1] ** 2
    total = spectrum.sum(axis=-1)
    share: Float64Array = np.divide(top, total, out=np.zeros_like(top), where=total > 0)
    return scores, share


def filtered_count(filter_fraction: float, n: int) -> int:
    """How many of ``n`` updates the filter drops."""
    return int(filter_fraction * n)


class DivideAndConquer:
    name = "dnc"

    def __init__(self, *, filter_fraction: object = 0.2, min_share: object = 0.0) -> None:
        self.filter_fraction = _params.real("filter_fraction", filter_fraction, low=0.0, high=0.5)
        self.min_share = _params.real("min_share", min_share, low=0.0, high=1.0)

    @property
    def params(self) -> dict[str, object]:
        return {"filter_fraction": self.filter_fraction, "min_share": self.min_share}

    def min_clients(self, inner: Aggregator) -> int:
        n = inner.min_clients
        while n - filtered_count(self.filter_fraction, n) < inner.min_clients:
            n += 1
        return n

    def requirement(self, inner: Aggregator) -> str:
        return (
            f"n >= {self.min_clients(inner)} clients, so that the n − "
            f"⌊{self.filter_fraction}·n⌋ kept meet {inner.requirement}"
        )

    def mix(self, cohort: Cohort) -> Cohort:
        dropped = filtered_count(self.filter_fraction, cohort.size)
        if dropped == 0:
            return cohort
        scores, share = spectral_scores(cohort.geometry().gram)
        if share < self.min_share:
            return cohort
        kept = np.sort(np.argsort(scores, kind="stable")[: cohort.size - dropped])
        return cohort.select(kept)
