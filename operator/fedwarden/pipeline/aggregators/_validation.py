"""Checks on what clients sent, before any aggregator looks at it.

A bad cohort is refused with :class:`InvalidCohortError` (a ``ValueError``) that names the problem:
an aggregator never turns NaN, Inf or a shape mistake into a silently wrong model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.aggregators._blocks import in_halves
from fedwarden.pipeline.errors import InvalidCohortError

FloatArray = npt.NDArray[np.floating]
Float64Array = npt.NDArray[np.float64]

ACCEPTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def updates_matrix(updates: npt.ArrayLike) -> FloatArray:
    """``updates`` as a validated ``(n, d)`` floating-point array, not copied."""
    matrix = np.asarray(updates)
    if matrix.ndim != 2:
        raise InvalidCohortError(
            f"updates must be a 2-D array of shape (n_clients, d), got shape {matrix.shape}"
        )
    if matrix.dtype not in ACCEPTED_DTYPES:
        raise InvalidCohortError(
            f"updates must be float16, float32 or float64, got dtype {matrix.dtype}"
        )
    n, d = matrix.shape
    if n == 0:
        raise InvalidCohortError("empty cohort: there are no client updates to aggregate")
    if d == 0:
        raise InvalidCohortError("updates have no coordinates (d = 0): nothing to aggregate")
    _require_finite(matrix)
    return matrix


def client_weights(weights: npt.ArrayLike | None, n: int) -> Float64Array | None:
    """The clients' sample weights as float64, or None; one finite, non-negative value per row."""
    if weights is None:
        return None
    vector = np.asarray(weights, dtype=np.float64)
    if vector.shape != (n,):
        raise InvalidCohortError(
            f"weights must be a 1-D array with one value per client ({n}), got shape {vector.shape}"
        )
    if not (np.isfinite(vector).all() and (vector >= 0).all()):
        raise InvalidCohortError(
            "weights must be finite and >= 0 (a number of examples per client)"
        )
    return vector


def _require_finite(matrix: FloatArray) -> None:
    # One summing pass per half is as cheap as mean(0) and allocates nothing: any NaN or Inf
    # makes a sum non-finite. Only then is the exact check needed, because finite float16 or
    # float32 values can also overflow their own sum.
    def all_finite(blocks: Sequence[slice]) -> bool:
        with np.errstate(over="ignore"):
            if all(np.isfinite(matrix[:, columns].sum()) for columns in blocks):
                return True
        return all(np.isfinite(matrix[:, columns]).all() for columns in blocks)

    if not all(in_halves(all_finite, *matrix.shape)):
        raise InvalidCohortError(
            "updates contain NaN or Inf; every coordinate must be a finite number"
        )
