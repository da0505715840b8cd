"""Block-wise Divide-and-Conquer: DnC's spectral filter in every block of coordinates.

The filter is DnC's (Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, Algorithm 2; see :mod:`.dnc`),
applied to each block of ``block_size`` consecutive coordinates separately: in block ``b`` the
rows are centred at their mean, projected on the block's own top singular vector, the
``⌊filter_fraction · k⌋`` rows with the largest squared projection are dropped, and the block of
the result is the mean of the rows kept *for that block*. A row can be kept in one block and
dropped in another.

Why blocks: a backdoor lives in a few coordinates (the first-layer weights of the trigger's
inputs, a model's row-major layers keeping each such row contiguous), where the attackers'
updates are large and aligned while honest ones are small. Over the whole update that signal is
drowned by honest heterogeneity (under label skew, honest updates are as unusual as theirs in
every whole-update statistic); inside its block it is the top direction. With blocks of one
coordinate the rule becomes a per-coordinate mean without the values farthest from the mean;
with one block, DnC followed by the mean. How well it holds a data-poisoning backdoor behind a
whole-update DnC that only acts on a dominant direction (``preaggregation="dnc",
min_share=0.2``, the recommendation) is measured in benchmarks/defence-matrix.md.

The blocks are fixed by position (``[0, g)``, ``[g, 2g)``, …; the last may be shorter), not by
the model's layers, which the pipeline does not know. Each block's top eigenpair comes from the
``k × k`` Gram matrix of its centred rows (one batched LAPACK ``eigh`` per column block of the
pass): O(k² · d) multiply-adds and ``d / g`` eigen-decompositions of ``k × k``, which at
``k = 50``, ``d = 10⁶`` and ``g = 64`` is the time of the rule (docs/aggregators.md).

Ties in a block's scores go to the lower index. Weights are ignored: a client cannot buy
influence by claiming many examples. Any cohort of at least one row is accepted
(``filter_fraction < 0.5`` always keeps a row).
"""

from __future__ import annotations

import numpy as np

from fedwarden.pipeline.aggregators import _params
from fedwarden.pipeline.aggregators._base import Aggregator, Float64Array, FloatArray
from fedwarden.pipeline.aggregators._cohort import Cohort
from fedwarden.pipeline.aggregators.dnc import centred_spectral_scores, filtered_count


def kept_block_means(block: FloatArray, block_size: int, filter_fraction: float) -> Float64Array:
    """For a transposed ``(width, k)`` block (row j: coordinate j of the k rows) that starts on
    a multiple of ``block_size``: the mean of the rows kept in each group of ``block_size``
    coordinates, one value per coordinate."""
    width, k = block.shape
    values = block.astype(np.float64)
    out = np.empty(width)
    dropped = filtered_count(filter_fraction, k)
    full = width // block_size * block_size
    for start, stop, groups in ((0, full, full // block_size), (full, width, 1)):
        if stop == start:
            continue
        grouped = values[start:stop].reshape(groups, -1, k)  # (groups, coordinates, rows)
        if dropped == 0:
            out[start:stop] = grouped.mean(axis=2).ravel()
            continue
        # Centre each coordinate at its mean over the rows before the product: a common offset
        # would otherwise cancel catastrophically in the Gram matrix (see _gram.py). The Gram
        # matrix of centred rows is already centred, so J G J is skipped.
        centred = grouped - grouped.mean(axis=2, keepdims=True)
        scores, _ = centred_spectral_scores(np.swapaxes(centred, 1, 2) @ centred)
        order = np.argsort(scores, axis=1, kind="stable")
        keep = np.zeros((groups, k))
        np.put_along_axis(keep, order[:, : k - dropped], 1.0, axis=1)
        out[start:stop] = ((grouped @ keep[:, :, None])[:, :, 0] / (k - dropped)).ravel()
    return out


class BlockDnC(Aggregator):
    name = "block-dnc"

    def __init__(self, *, block_size: object = 64, filter_fraction: object = 0.2) -> None:
        self.block_size = _params.integer("block_size", block_size, minimum=1)
        self.filter_fraction = _params.real("filter_fraction", filter_fraction, low=0.0, high=0.5)
        super().__init__(block_size=self.block_size, filter_fraction=self.filter_fraction)

    @property
    def min_clients(self) -> int:
        return 1

    def aggregate(self, cohort: Cohort) -> Float64Array:
        return cohort.per_block(
            lambda block: kept_block_means(block, self.block_size, self.filter_fraction),
            multiple=self.block_size,
        )
