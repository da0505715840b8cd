"""Validation of client updates before they reach aggregation.

Two stages. :func:`check_update` looks at one update alone: a 1-D float array of the model's
dimension, every value finite, and (optionally) an L2 norm below an absolute bound. It is what
stops a corrupt, malformed or absurdly scaled update. :func:`cohort_outliers` then scores each
update against the cohort with robust z-scores (the "modified z-score" of Iglewicz and Hoaglin,
1993: 0.6745·(x − median)/MAD) of the logarithms of two statistics: the update's norm, and its
distance to the coordinate-wise median of the cohort. Logarithms, because honest norms spread
multiplicatively (a client with ten times the data takes ten times the local steps): on a log
scale a ×50 boosted update still stands far out, a large honest client does not. Both use the
median and MAD, which a minority of attackers cannot drag, so a poisoned update cannot hide by
making the cohort look noisy. Only large values are outliers: a small norm is not an attack on
the model (free-riding is judged separately).

In a cohort of fewer than ``floor_spread_below`` (8) valid updates the scale is never taken
below ``min_log_spread`` (0.3). There the MAD is the median of two or three deviations; as a
consortium's sites converge their update norms shrink together, the MAD collapses, and the
persistent difference between sites with unlike data (honest norms and distances up to 31 times
the cohort median in 3- to 10-site trainings of the built-in tasks) becomes a huge score. With
the floor, at z = 14 an update is an outlier only above e^(14 · 0.3) ≈ 67 times the median: a
grossly scaled or random update. From 8 updates on the MAD alone is the scale, as before: a
floor would hide a sign-flipped update boosted ×10 among honest updates dominated by DP-SGD
noise (``fedwarden demo``: 3.3 times their norm, which is all that shows, since noise hides
its direction).

Updates crafted to stay inside the honest spread (e.g. "A Little Is Enough") pass validation by
design; they are the robust aggregator's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline import aggregators
from fedwarden.pipeline.errors import InvalidCohortError

_MAD_TO_SIGMA = 0.6745
_BLOCK = 1 << 16


@dataclass(frozen=True)
class ValidationConfig:
    """Settings of update validation.

    Attributes:
        max_norm: reject an update whose L2 norm exceeds this (``None``: no absolute bound).
            Set it well above the honest norms: it is a sanity bound, not the clipping norm.
        outlier_z: reject an update whose modified z-score of norm or of distance to the cohort
            median exceeds this (``None``: no cohort test). 3.5 is Iglewicz and Hoaglin's advice.
        min_cohort_for_outliers: below this many valid updates, the cohort statistics are too
            noisy to judge anyone, and the cohort test is skipped.
        min_log_spread: the least scale (σ of the logarithms) the test uses for norms and
            distances in a cohort of fewer than ``floor_spread_below`` valid updates: honest
            sites differ persistently, and a few of them can agree closely enough for the MAD to
            vanish.
        floor_spread_below: from this many valid updates on, the MAD alone is the scale.
    """

    max_norm: float | None = None
    outlier_z: float | None = 3.5
    min_cohort_for_outliers: int = 5
    min_log_spread: float = 0.3
    floor_spread_below: int = 8

    def __post_init__(self) -> None:
        if self.max_norm is not None and not self.max_norm > 0:
            raise ValueError(f"max_norm must be > 0 or None, got {self.max_norm}")
        if self.outlier_z is not None and not self.outlier_z > 0:
            raise ValueError(f"outlier_z must be > 0 or None, got {self.outlier_z}")
        if self.min_cohort_for_outliers < 3:
            raise ValueError(
                f"min_cohort_for_outliers must be >= 3, got {self.min_cohort_for_outliers}"
            )
        if not self.min_log_spread > 0:
            raise ValueError(f"min_log_spread must be > 0, got {self.min_log_spread}")
        if self.floor_spread_below < self.min_cohort_for_outliers:
            raise ValueError(
                f"floor_spread_below must be >= min_cohort_for_outliers "
                f"({self.min_cohort_for_outliers}), got {self.floor_spread_below}"
            )


def check_update(
    update: object, dim: int, max_norm: float | None = None
) -> tuple[npt.NDArray[np.float32] | None, str | None]:
    """Check one update on its own; return ``(vector, None)`` or ``(None, reason)``.

    The vector comes back as float32 (float64 input is narrowed after the finiteness check, so
    a value that overflows float32 is refused rather than turned into ``inf``).
    """
    if not isinstance(update, np.ndarray):
        return None, f"update is a {type(update).__name__}, not a numpy array"
    if update.dtype.kind != "f":
        return None, f"update has dtype {update.dtype}, expected a floating-point dtype"
    if update.ndim != 1:
        return None, f"update has shape {update.shape}, expected a flat vector of length {dim}"
    if update.shape[0] != dim:
        return None, f"update has {update.shape[0]} values, the model has {dim}"
    if not np.isfinite(update).all():
        bad = int(np.count_nonzero(~np.isfinite(update)))
        return None, f"update has {bad} non-finite values (NaN or Inf)"
    if update.dtype != np.float32:
        if np.abs(update).max(initial=0.0) > np.finfo(np.float32).max:
            return None, "update has values beyond the float32 range"
        update = update.astype(np.float32)
    if max_norm is not None:
        norm = float(np.sqrt(np.dot(update.astype(np.float64), update.astype(np.float64))))
        if norm > max_norm:
            return None, f"update norm {norm:.4g} exceeds the bound {max_norm:.4g}"
    return update, None


def row_norms(updates: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """L2 norms of the rows, accumulated in float64 one column block at a time."""
    sq = np.zeros(updates.shape[0], dtype=np.float64)
    for start in range(0, updates.shape[1], _BLOCK):
        block = updates[:, start : start + _BLOCK].astype(np.float64)
        sq += np.einsum("ij,ij->i", block, block)
    return np.sqrt(sq)


def distances_to(
    updates: npt.NDArray[np.floating], point: npt.NDArray[np.floating]
) -> npt.NDArray[np.float64]:
    """L2 distance of every row to ``point``, accumulated in float64 by column blocks."""
    sq = np.zeros(updates.shape[0], dtype=np.float64)
    for start in range(0, updates.shape[1], _BLOCK):
        diff = updates[:, start : start + _BLOCK].astype(np.float64)
        diff -= point[start : start + _BLOCK]
        sq += np.einsum("ij,ij->i", diff, diff)
    return np.sqrt(sq)


def robust_z(values: npt.NDArray[np.float64], min_scale: float) -> npt.NDArray[np.float64]:
    """Modified z-scores, (x − median) / σ with σ = MAD / 0.6745 raised to ``min_scale``.

    When σ is still zero (half or more of the values identical, no floor), it falls back to
    1.2533 times the mean absolute deviation (σ for a normal); only when every value is equal
    are all scores 0.
    """
    median = np.median(values)
    deviations = values - median
    sigma = max(float(np.median(np.abs(deviations))) / _MAD_TO_SIGMA, min_scale)
    if sigma <= np.finfo(np.float64).tiny:
        sigma = 1.253314 * float(np.mean(np.abs(deviations)))
        if sigma <= np.finfo(np.float64).tiny:
            return np.zeros_like(values)
    scores: npt.NDArray[np.float64] = deviations / sigma
    return scores


def cohort_outliers(updates: npt.NDArray[np.floating], config: ValidationConfig) -> dict[int, str]:
    """Indices of statistical outliers in the cohort, with the reason for each."""
    n = updates.shape[0]
    if config.outlier_z is None or n < config.min_cohort_for_outliers:
        return {}
    if updates.ndim != 2:
        raise InvalidCohortError(f"cohort must be a 2-D (n, d) array, got shape {updates.shape}")
    norms = row_norms(updates)
    median = aggregators.get("median")(updates).astype(np.float64)
    spread = distances_to(updates, median)
    tiny = np.finfo(np.float64).tiny
    floor = config.min_log_spread if n < config.floor_spread_below else 0.0
    z_norm = robust_z(np.log(norms + tiny), floor)
    z_spread = robust_z(np.log(spread + tiny), floor)
    reasons: dict[int, str] = {}
    for i in range(n):
        if z_norm[i] > config.outlier_z:
            reasons[i] = (
                f"statistical outlier: norm {norms[i]:.4g} has robust z-score {z_norm[i]:.1f} "
                f"> {config.outlier_z} (cohort median norm {np.median(norms):.4g})"
            )
        elif z_spread[i] > config.outlier_z:
            reasons[i] = (
                f"statistical outlier: distance {spread[i]:.4g} to the cohort median has robust "
                f"z-score {z_spread[i]:.1f} > {config.outlier_z}"
            )
    return reasons


def stack_valid(
    updates: Sequence[object] | npt.NDArray[np.floating],
    client_ids: Sequence[str],
    dim: int,
    max_norm: float | None,
) -> tuple[npt.NDArray[np.float32], list[str], dict[str, str]]:
    """Check every update alone; return the valid ones stacked, their ids, and the rejections.

    A float32 ``(n, dim)`` matrix is checked row by row in place and copied only when a row has
    to be dropped, so a large cohort is not duplicated on the common path.
    """
    if len(updates) != len(client_ids):
        raise InvalidCohortError(
            f"{len(updates)} updates but {len(client_ids)} client ids; they must pair up"
        )
    if len(set(client_ids)) != len(client_ids):
        raise InvalidCohortError("client ids must be unique within a round")
    rows: list[npt.NDArray[np.float32]] = []
    ids: list[str] = []
    rejected: dict[str, str] = {}
    for client, update in zip(client_ids, updates, strict=True):
        vector, reason = check_update(update, dim, max_norm)
        if vector is None:
            rejected[client] = f"invalid update: {reason}"
        else:
            rows.append(vector)
            ids.append(client)
    if isinstance(updates, np.ndarray) and updates.dtype == np.float32 and not rejected:
        return updates, ids, rejected
    stacked = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return stacked, ids, rejected
