"""Distances between updates, and from combinations of them, through one centred Gram matrix.

Every distance an aggregator needs (Krum's scores, Bulyan's repeated selection, NNM's neighbours,
the iterates of the geometric median and of centered clipping) is between points of the form
``Σ α_i x_i``. Writing ``x_i = μ + z_i`` with ``μ`` the column mean of the updates, all of them
follow from ``G = Z Zᵀ`` (n × n), ``c = Z μ`` and ``‖μ‖²``, computed in a single float64 pass over
column blocks; afterwards no algorithm touches the ``(n, d)`` data until its final combination.

Why centred: the expansion ``‖x_i‖² + ‖x_j‖² − 2 x_i·x_j`` cancels catastrophically when the
updates share a large offset (float32 with offset 1e4 over 1e6 coordinates loses every digit of
the differences). Subtracting ``μ`` column by column *before* the product keeps the entries of
``G`` on the scale of the spread between updates, which is what the distances measure.

Precision: float64 updates are multiplied in float64. For float32 updates the centre is their
float32 column mean and each column block's product is float32 (one BLAS ``syrk``), the blocks'
products summed in float64. A block is about 4 MiB / 8n columns (``_blocks.block_width``:
10,280 at n = 50). The centre only has to be near the data: any centre gives the same distances,
and ``x − μ`` is then exact in float32 (Sterbenz), so centring adds no error. What remains is one
float32 dot product per block, off by at most ``width · 2⁻²⁴`` of the block's ``Σ |z_i z_j|`` and
typically ``√width · 2⁻²⁴`` (6e-6 at n = 50), on entries of the size of the spread, where one
float32 accumulation over ``d`` uncentred coordinates loses the whole distance. The inputs carry
no more than float32 precision, and the float32 product takes half the time of a float64 one;
the Gram matrix is most of Krum's time (benchmarks/README.md). Updates beyond about 1e19, whose
squares overflow float32, are multiplied again in float64.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.aggregators._blocks import in_halves

Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Geometry:
    """Inner products of ``k`` rows ``y_a = μ + z_a``: ``gram = Z Zᵀ``, ``offset = Z μ``, ‖μ‖²."""

    gram: Float64Array
    offset: Float64Array
    offset_sq: float

    @classmethod
    def of(cls, updates: npt.NDArray[np.floating]) -> Geometry:
        """The geometry of the rows of ``updates``, centred at their column mean."""
        n = updates.shape[0]
        if updates.dtype != np.float32:
            total = _total(updates, np.float64)
        else:
            total = _total(updates, np.float32)
            if not np.isfinite(total).all():
                # The updates are finite (validated), so float32 overflowed: |x| beyond ~1e19.
                total = _total(updates, np.float64)
        return cls(total[:n, :n].copy(), total[:n, n].copy(), float(total[n, n]))

    def mixed(self, mixing: Float64Array) -> Geometry:
        """The geometry of the rows ``mixing @ y``; every row of ``mixing`` must sum to 1.

        Rows that are convex (or affine) combinations keep the same centre ``μ``:
        ``Σ_b M_ab y_b = μ + Σ_b M_ab z_b``.
        """
        return Geometry(mixing @ self.gram @ mixing.T, mixing @ self.offset, self.offset_sq)

    def pairwise(self) -> Float64Array:
        """``k × k`` squared distances ``‖y_a − y_b‖²``, zero on the diagonal."""
        diagonal = np.diag(self.gram)
        distances = diagonal[:, None] + diagonal[None, :] - 2.0 * self.gram
        np.maximum(distances, 0.0, out=distances)  # rounding may leave -1e-17 for duplicates
        np.fill_diagonal(distances, 0.0)
        return distances

    def to_combination(self, alpha: Float64Array) -> Float64Array:
        """Squared distances from ``v = Σ_a α_a y_a`` (any coefficients) to every row ``y_b``.

        ``y_b − v = (z_b − Σ α_a z_a) + (1 − Σ α_a) μ``; the ``μ`` terms vanish for convex
        combinations and keep the origin (``α = 0``) exact for centered clipping.
        """
        spare = 1.0 - float(alpha.sum())
        g_alpha = self.gram @ alpha
        distances = (
            np.diag(self.gram)
            - 2.0 * g_alpha
            + float(alpha @ g_alpha)
            + 2.0 * spare * (self.offset - float(self.offset @ alpha))
            + spare * spare * self.offset_sq
        )
        return np.maximum(distances, 0.0)


def _total(updates: npt.NDArray[np.floating], dtype: type[np.floating]) -> Float64Array:
    n, d = updates.shape
    halves = in_halves(functools.partial(_augmented_gram, updates, dtype), n + 1, d)
    total: Float64Array = functools.reduce(np.add, halves)  # in column order: reproducible bits
    return total


def _augmented_gram(
    updates: npt.NDArray[np.floating], dtype: type[np.floating], blocks: Sequence[slice]
) -> Float64Array:
    """Over ``blocks``, the Gram matrix of the centred rows with the column mean appended,
    centred and multiplied in ``dtype``.

    One product gives ``Z Zᵀ``, ``Z μ`` and ``‖μ‖²`` together (a separate ``Z μ`` pass cost a
    fifth of the whole).
    """
    n = updates.shape[0]
    # Zero rows up to a multiple of 4: OpenBLAS's syrk is faster on those (docs/aggregators.md,
    # Speed, has the measurement and its script).
    rows = -(-(n + 1) // 4) * 4
    total = np.zeros((rows, rows))
    block = np.zeros((rows, 0), dtype=dtype)
    # An overflow in float32 is caught by the caller, which starts again in float64.
    with np.errstate(over="ignore", invalid="ignore"):
        for columns in blocks:
            if block.shape[1] != columns.stop - columns.start:
                block = np.zeros((rows, columns.stop - columns.start), dtype=dtype)
            centred, mean = block[:n], block[n]
            centred[...] = updates[:, columns]
            centred.mean(axis=0, out=mean)
            centred -= mean
            total += block @ block.T
    return total[: n + 1, : n + 1]
