"""Checks on what clients sent, before any aggregator looks at it.

A bad cohort is refused with :class:`InvalidCohortError` (a ``ValueError``) that names the problem:
an aggregator never turns NaN, Inf or a shape mistake into a silently wrong model.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.aggregators._blocks import column_blocks
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
    # One summing pass is as cheap as mean(0) and allocates nothing: any NaN or Inf makes the
    # sum non-finite. Only then is the exact (slower) check needed, because finite float16 or
    # float32 values can also overflow their own sum.
    with np.errstate(over="ignore"):
        if np.isfinite(matrix.sum()):
            return
    for columns in column_blocks(*matrix.shape):
        if not np.isfinite(matrix[:, columns]).all():
            raise InvalidCohortError(
                "updates contain NaN or Inf; every coordinate must be a finite number"
            )
