"""Brute-force float64 references for the aggregators: loops, explicit differences, sorted lists.

Written to be obviously right, not fast. Rules that *select* updates (Krum, Multi-Krum, Bulyan)
return every output that a correct implementation may give: when two scores are equal up to
rounding (``tol``), the tie may fall either way, so the test accepts any of the candidates.
"""

from __future__ import annotations

import itertools

import numpy as np

from fedwarden.pipeline.aggregators._blocks import block_width


def rows(updates: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(row, dtype=np.float64) for row in updates]


def sq_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b)) ** 2


def fedavg(updates: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    xs = rows(updates)
    ws = [1.0] * len(xs) if weights is None else [float(w) for w in weights]
    total = np.zeros_like(xs[0])
    for w, x in zip(ws, xs, strict=True):
        total += w * x
    return total / sum(ws)


def krum_scores(xs: list[np.ndarray], f: int, neighbours: int | None = None) -> list[float]:
    n = len(xs)
    count = n - f - 2 if neighbours is None else neighbours
    scores = []
    for i in range(n):
        distances = sorted(sq_distance(xs[i], xs[j]) for j in range(n) if j != i)
        scores.append(sum(distances[:count]))
    return scores


def _near(value: float, target: float, tol: float) -> bool:
    return abs(value - target) <= tol


def krum_candidates(updates: np.ndarray, f: int, tol: float) -> list[np.ndarray]:
    xs = rows(updates)
    scores = krum_scores(xs, f)
    best = min(scores)
    return [xs[i] for i, s in enumerate(scores) if _near(s, best, tol)]


def multi_krum_candidates(
    updates: np.ndarray, f: int, m: int | None, tol: float
) -> list[np.ndarray]:
    xs = rows(updates)
    m = len(xs) - f if m is None else m
    scores = krum_scores(xs, f)
    boundary = sorted(scores)[m - 1]
    sure = [i for i, s in enumerate(scores) if s < boundary - tol]
    tied = [i for i, s in enumerate(scores) if _near(s, boundary, tol)]
    return [
        sum(xs[i] for i in sure + list(extra)) / m
        for extra in itertools.combinations(tied, m - len(sure))
    ]


def median(updates: np.ndarray) -> np.ndarray:
    return np.median(np.asarray(updates, dtype=np.float64), axis=0)


def trimmed_mean(updates: np.ndarray, beta: float) -> np.ndarray:
    xs = np.asarray(updates, dtype=np.float64)
    n, d = xs.shape
    t = int(beta * n)
    out = np.empty(d)
    for k in range(d):
        column = sorted(xs[:, k])
        out[k] = sum(column[t : n - t]) / (n - 2 * t)
    return out


def _bulyan_selections(xs: list[np.ndarray], f: int, theta: int, tol: float) -> set[frozenset[int]]:
    """Every set of ``theta`` indices that repeated Krum may select, following each near-tie."""
    finished: set[frozenset[int]] = set()
    seen: set[tuple[frozenset[int], frozenset[int]]] = set()

    def walk(chosen: frozenset[int], remaining: frozenset[int]) -> None:
        if (chosen, remaining) in seen:
            return
        seen.add((chosen, remaining))
        if len(chosen) == theta:
            finished.add(chosen)
            return
        order = sorted(remaining)
        scores = krum_scores([xs[i] for i in order], f, max(len(order) - f - 2, 1))
        best = min(scores)
        for i, s in zip(order, scores, strict=True):
            if _near(s, best, tol):
                walk(chosen | {i}, remaining - {i})

    walk(frozenset(), frozenset(range(len(xs))))
    return finished


def closest_to_median_means(values: list[float], keep: int, tol: float) -> list[float]:
    """Means of the ``keep`` values closest to the median, for every way of breaking near-ties.

    Exact ties go to the smaller value; values whose distance is within ``tol`` of the last kept
    distance may be swapped, since rounding (of mixed rows, say) can flip such a tie.
    """
    middle = float(np.median(values))
    ordered = sorted(values, key=lambda v: (abs(v - middle), v))
    boundary = abs(ordered[keep - 1] - middle)
    sure = [v for v in ordered if abs(v - middle) < boundary - tol]
    tied = [v for v in ordered if abs(abs(v - middle) - boundary) <= tol]
    means = {sum(ordered[:keep]) / keep}
    for extra in itertools.combinations(tied, keep - len(sure)):
        means.add((sum(sure) + sum(extra)) / keep)
    return sorted(means)


def bulyan_candidates(updates: np.ndarray, f: int, tol: float) -> list[list[list[float]]]:
    """For each selection repeated Krum may make, the possible values of each coordinate."""
    xs = rows(updates)
    theta = len(xs) - 2 * f
    value_tol = 1e-9 * scale(updates)
    candidates = []
    for selection in _bulyan_selections(xs, f, theta, tol):
        chosen = [xs[i] for i in sorted(selection)]
        candidates.append(
            [
                closest_to_median_means([float(x[k]) for x in chosen], theta - 2 * f, value_tol)
                for k in range(len(chosen[0]))
            ]
        )
    return candidates


def geometric_median_objective(updates: np.ndarray, point: np.ndarray) -> float:
    return sum(float(np.linalg.norm(x - point)) for x in rows(updates))


def geometric_median(updates: np.ndarray, max_iter: int, eps: float, nu: float) -> np.ndarray:
    xs = rows(updates)
    point = sum(xs) / len(xs)
    objective = geometric_median_objective(updates, point)
    for _ in range(max_iter):
        weights = [1.0 / max(nu, float(np.linalg.norm(x - point))) for x in xs]
        point = sum(w * x for w, x in zip(weights, xs, strict=True)) / sum(weights)
        previous, objective = objective, geometric_median_objective(updates, point)
        if abs(previous - objective) <= eps * objective:
            break
    return point


def centered_clip(updates: np.ndarray, tau: float, iterations: int) -> np.ndarray:
    xs = rows(updates)
    v = np.zeros_like(xs[0])
    for _ in range(iterations):
        step = np.zeros_like(v)
        for x in xs:
            distance = float(np.linalg.norm(x - v))
            step += (x - v) * (1.0 if distance <= tau else tau / distance)
        v = v + step / len(xs)
    return v


def nnm(updates: np.ndarray, f: int) -> np.ndarray:
    """Each row replaced by the mean of its n − f nearest rows (itself first, then by index)."""
    xs = rows(updates)
    n = len(xs)
    mixed = []
    for i in range(n):
        nearest = sorted(range(n), key=lambda j: (j != i, sq_distance(xs[i], xs[j]), j))
        mixed.append(sum(xs[j] for j in nearest[: n - f]) / (n - f))
    return np.array(mixed)


def bucket_means(updates: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    xs = rows(updates)
    buckets = [order[i : i + size] for i in range(0, len(xs), size)]
    return np.array([sum(xs[j] for j in bucket) / len(bucket) for bucket in buckets])


def scale(updates: np.ndarray) -> float:
    """A magnitude for absolute tolerances: the largest absolute coordinate (at least 1e-30)."""
    return max(float(np.max(np.abs(updates))), 1e-30) if np.size(updates) else 1.0


def score_tolerance(updates: np.ndarray) -> float:
    """How close two Krum scores must be to count as a tie under the rounding of our products.

    float64 updates are multiplied in float64; float32 updates in float32 per column block,
    summed in float64 (pipeline/aggregators/_gram.py), so a distance may be off by about
    ``block width · 2⁻²⁴`` of the squared spread, and a score by ``n`` of those.
    """
    xs = np.asarray(updates, dtype=np.float64)
    spread = float(((xs - xs.mean(axis=0)) ** 2).sum(axis=1).max())
    if np.asarray(updates).dtype == np.float32:
        width = min(xs.shape[1], block_width(len(xs) + 1))
        relative = 4.0 * width * 2.0**-24
    else:
        relative = 1e-9
    return relative * len(xs) * max(spread, 1e-300)


def dnc_kept_sets(updates: np.ndarray, filter_fraction: float) -> list[list[int]]:
    """Every set of rows DnC may keep: the SVD of the explicitly centred matrix, squared
    projections on the top right singular vector, the ⌊φ·n⌋ largest dropped. Scores equal up to
    rounding at the cut may fall either way; so may every score when the top singular value is
    not unique (then the direction itself is not)."""
    xs = np.array(rows(updates))
    n = len(xs)
    dropped = int(filter_fraction * n)
    if dropped == 0:
        return [list(range(n))]
    centred = xs - xs.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    tol = 1e-7 * max(float(singular[0]) ** 2, 1e-300)
    if len(singular) > 1 and singular[0] ** 2 - singular[1] ** 2 <= tol:
        return [list(kept) for kept in itertools.combinations(range(n), n - dropped)]
    scores = (centred @ vt[0]) ** 2
    order = sorted(range(n), key=lambda i: (scores[i], i))
    last_kept, first_dropped = scores[order[n - dropped - 1]], scores[order[n - dropped]]
    if first_dropped - last_kept > tol:
        return [sorted(order[: n - dropped])]
    sure = [i for i in range(n) if scores[i] < last_kept - tol]
    ambiguous = [i for i in range(n) if last_kept - tol <= scores[i] <= first_dropped + tol]
    need = n - dropped - len(sure)
    return [sorted(sure + list(extra)) for extra in itertools.combinations(ambiguous, need)]


def block_dnc_possible(
    updates: np.ndarray, block_size: int, filter_fraction: float
) -> list[list[float]]:
    """Per coordinate, every value block-wise DnC may give: in each block of ``block_size``
    consecutive coordinates, the mean of a set of rows that DnC may keep for that block alone."""
    xs = np.array(rows(updates))
    possible: list[list[float]] = []
    for start in range(0, xs.shape[1], block_size):
        block = xs[:, start : start + block_size]
        kept_sets = dnc_kept_sets(block, filter_fraction)
        for j in range(block.shape[1]):
            possible.append([sum(block[i, j] for i in kept) / len(kept) for kept in kept_sets])
    return possible
