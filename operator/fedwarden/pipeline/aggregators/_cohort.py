"""The rows an aggregator works on, as a lazy view of the validated client updates.

A cohort's rows are fixed combinations ``mixing @ updates`` of the ``n`` updates: the identity
for a plain call, a subset for Bulyan's second phase, bucket means or nearest-neighbour means
after pre-aggregation. The mixed rows are never materialised: each pass builds one column block
of them at a time, the geometry of the mixed rows follows from the updates' Gram matrix, and the
final model is one combination of the original updates. Memory beyond the input stays
O(n · block width + n²).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.aggregators._blocks import in_halves
from fedwarden.pipeline.aggregators._gram import Geometry

FloatArray = npt.NDArray[np.floating]
Float64Array = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
Rows = slice | IndexArray  # slice(None) for all of them


class _Source:
    """The validated ``(n, d)`` updates and their geometry, computed at most once per call."""

    def __init__(self, updates: FloatArray) -> None:
        self.updates = updates
        self._geometry: Geometry | None = None

    def rows(self, rows: Rows, columns: slice) -> FloatArray:
        """``updates[rows, columns]``, a view when ``rows`` is a slice."""
        # Mixed fancy-and-slice indexing copies only the chosen rows' columns: 4 µs for one row
        # of a 50 × 10,280 block, where np.take on the column view took 93 µs (numpy 2.4).
        return self.updates[rows, columns]

    def geometry(self) -> Geometry:
        if self._geometry is None:
            self._geometry = Geometry.of(self.updates)
        return self._geometry


class Cohort:
    """``k`` rows ``mixing @ updates`` (rows of ``mixing`` sum to 1), with optional weights."""

    def __init__(
        self,
        source: _Source,
        mixing: Float64Array,
        picked: Rows | None,
        weights: Float64Array | None,
    ) -> None:
        self._source = source
        self._mixing = mixing
        # When every row is one update (all of them or a subset), which ones: blocks are then
        # plain copies in the input dtype, which numpy sorts about 4x faster than float64.
        self._picked = picked
        self.weights = weights

    @classmethod
    def of(cls, updates: FloatArray, weights: Float64Array | None) -> Cohort:
        """The cohort of all rows of validated ``updates``."""
        return cls(_Source(updates), np.eye(updates.shape[0]), slice(None), weights)

    @property
    def size(self) -> int:
        """``k``, the number of rows."""
        return int(self._mixing.shape[0])

    @property
    def dim(self) -> int:
        return int(self._source.updates.shape[1])

    @property
    def _block_rows(self) -> int:
        # Blocks are sized for the rows a pass reads: a subset is gathered from, and mixed rows
        # are computed from, blocks of all n updates.
        return max(self.size, int(self._source.updates.shape[0]))

    def select(self, rows: IndexArray) -> Cohort:
        """The sub-cohort of ``rows``, without weights (the rules that select ignore them)."""
        picked = None
        if self._picked is not None:
            picked = np.arange(self._mixing.shape[1])[self._picked][rows]
        return Cohort(self._source, self._mixing[rows], picked, None)

    def mix(self, mixing: Float64Array) -> Cohort:
        """The cohort of rows ``mixing @ self``; rows of ``mixing`` must sum to 1.

        Weights are dropped: both pre-aggregations mix uniformly, as in their papers.
        """
        return Cohort(self._source, mixing @ self._mixing, None, None)

    def geometry(self) -> Geometry:
        """Inner products of this cohort's rows (see :mod:`._gram`)."""
        source = self._source.geometry()
        if self._picked is None:
            return source.mixed(self._mixing)
        if isinstance(self._picked, slice):
            return source
        rows = self._picked
        return Geometry(source.gram[np.ix_(rows, rows)], source.offset[rows], source.offset_sq)

    def per_block(
        self, reduce: Callable[[FloatArray], Float64Array], *, multiple: int = 1
    ) -> Float64Array:
        """A length-``d`` vector: ``reduce`` of each column block of rows, transposed.

        ``reduce`` gets a fresh C-contiguous ``(width, k)`` block (row j holds coordinate j of
        the ``k`` rows; it may change it in place) and returns ``width`` values. Blocks start on
        multiples of ``multiple``, so a rule that works on fixed groups of coordinates never
        sees a group split between two blocks.
        """
        out = np.empty(self.dim)

        def run(blocks: Sequence[slice]) -> None:
            for columns in blocks:
                out[columns] = reduce(self._transposed_block(columns))

        in_halves(run, self._block_rows, self.dim, multiple)
        return out

    def per_sorted_block(self, reduce: Callable[[FloatArray], Float64Array]) -> Float64Array:
        """:meth:`per_block` with each block's rows sorted first.

        The transposed block lets numpy's SIMD sort run along contiguous rows of ``k`` values
        (measured against ``np.partition`` and bottleneck in docs/aggregators.md).
        """

        def sorted_reduce(block: FloatArray) -> Float64Array:
            block.sort(axis=1)
            return reduce(block)

        return self.per_block(sorted_reduce)

    def _transposed_block(self, columns: slice) -> FloatArray:
        if self._picked is not None:
            return np.ascontiguousarray(self._source.rows(self._picked, columns).T)
        # Mixed rows stay float64: rounding them to the input dtype before sorting would be
        # faster but moves ties, e.g. which value is closest to a median.
        block = self._source.updates[:, columns].astype(np.float64)
        return block.T @ self._mixing.T  # (width, k), C-contiguous

    def combine(self, alpha: Float64Array) -> Float64Array:
        """``Σ_a α_a y_a`` as a float64 vector of length ``d``, touching only rows it needs."""
        coefficients = alpha @ self._mixing
        used = np.flatnonzero(coefficients)
        rows = slice(None) if used.size == len(coefficients) else used
        weights = coefficients[used]
        out = np.zeros(self.dim)

        def run(blocks: Sequence[slice]) -> None:
            for columns in blocks:
                block = self._source.rows(rows, columns)
                # einsum's own loop casts to float64 on the fly; BLAS would need a float64 copy.
                np.einsum("i,ij->j", weights, block, out=out[columns], dtype=np.float64)

        if used.size:
            in_halves(run, self._block_rows, self.dim)
        return out
