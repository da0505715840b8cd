"""Bulyan: Krum selection, then a coordinate-wise trimmed mean around the median.

El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in Byzantium",
ICML 2018.

1. Select ``θ = n − 2f`` updates by repeated Krum: score the remaining updates, move the best to
   the selection, repeat. Each step scores the remaining set ``R`` with
   ``max(|R| − f − 2, 1)`` neighbours; the paper's ``|R| − f − 2`` reaches zero or below in the
   last steps (``|R|`` ends at ``2f + 1``), and one neighbour is the smallest meaningful score
   (Flower clamps the same way). Ties go to the lowest index.
2. In each coordinate, average the ``β = θ − 2f`` selected values closest to their median; ties in
   distance go to the smaller value, so the result does not depend on row order.

Needs ``n >= 4f + 3``. Defends against up to ``f`` Byzantine updates both in norm (Krum) and per
coordinate (the trimmed average), which closes the single-coordinate attacks on Krum; it does not
defend against attacks inside the honest spread (ALIE). The selection reuses one centred Gram
matrix (rows and columns are dropped, nothing is recomputed); the second phase sorts transposed
column blocks of the ``θ`` selected rows. Weights are ignored: a client cannot buy influence by
claiming many examples.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.aggregators._base import ByzantineRobust, Float64Array, FloatArray
from fedwarden.pipeline.aggregators._cohort import Cohort
from fedwarden.pipeline.aggregators.krum import krum_scores
from fedwarden.pipeline.aggregators.median import sorted_medians


def repeated_krum(distances: Float64Array, f: int, count: int) -> npt.NDArray[np.intp]:
    """Indices of ``count`` rows chosen one at a time by Krum over the rows not yet chosen."""
    remaining = list(range(len(distances)))
    chosen: list[int] = []
    for _ in range(count):
        among = distances[np.ix_(remaining, remaining)]
        scores = krum_scores(among, max(len(remaining) - f - 2, 1))
        chosen.append(remaining.pop(int(np.argmin(scores))))
    return np.asarray(chosen, dtype=np.intp)


def closest_to_median_means(block: FloatArray, keep: int) -> Float64Array:
    """Per row of ``block`` (rows sorted), the mean of the ``keep`` values closest to the median.

    The kept values are a window ``[s, s + keep)`` of the sorted row, and it holds the value
    nearest the median, one of the middle one or two: so only the ``2 · keep`` positions around
    the middle are read (Bulyan keeps ``θ − 2f`` of ``θ``, often a small share). Sliding the
    window right from ``s`` swaps ``x[s]`` for ``x[s + keep]``, which pays while ``x[s]`` is
    strictly farther from the median (on a tie the smaller value stays); that comparison is
    monotone in ``s``, so the window starts after the prefix of positions where it holds.
    Positions below ``k − keep`` are kept past that prefix, positions from ``keep`` on only
    within it, everything between always.
    """
    median = sorted_medians(block)[:, None]
    middle = block.shape[1] // 2
    around = block[:, max(middle - keep, 0) : middle + keep]
    k = around.shape[1]
    slack = k - keep
    slides = median - around[:, :slack] > around[:, keep:] - median
    kept = np.ones(around.shape, dtype=around.dtype)
    kept[:, :slack] = ~slides
    kept[:, keep:] *= slides  # where both ranges overlap (keep < slack), both conditions hold
    # A row-wise dot with the 0/1 mask: one float64 pass, 2x faster than gathering the window.
    means: Float64Array = np.einsum("ij,ij->i", kept, around, dtype=np.float64) / keep
    return means


class Bulyan(ByzantineRobust):
    name = "bulyan"

    def __init__(self, *, f: object = 0) -> None:
        super().__init__(f=f)

    @property
    def min_clients(self) -> int:
        return 4 * self.f + 3

    @property
    def requirement(self) -> str:
        return f"n >= 4f + 3 = {self.min_clients} clients"

    def aggregate(self, cohort: Cohort) -> Float64Array:
        theta = cohort.size - 2 * self.f
        selected = cohort.select(repeated_krum(cohort.geometry().pairwise(), self.f, theta))
        return selected.per_sorted_block(
            functools.partial(closest_to_median_means, keep=theta - 2 * self.f)
        )
