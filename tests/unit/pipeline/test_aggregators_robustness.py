"""What the robust rules promise: precise distances, no influence for sale, pre-aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from tests.unit.pipeline import reference_aggregators as ref

from fedwarden.pipeline import aggregators

ROBUST = {
    "krum": {"f": 2},
    "multi-krum": {"f": 2},
    "median": {"f": 2},
    "trimmed-mean": {"f": 2, "beta": 0.2},
    "bulyan": {"f": 2},
    "geometric-median": {"f": 2},
    "centered-clip": {"f": 2, "tau": 1.0},
}


def naive_float32_krum(updates: np.ndarray, f: int) -> int:
    """Krum as Flower's new API computes it: ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j, uncentred, float32.

    The Gram matrix is accumulated one coordinate at a time, so every operation is a correctly
    rounded float32 product or sum and the result is the same on every machine.
    """
    n, d = updates.shape
    gram = np.zeros((n, n), dtype=np.float32)
    for k in range(d):
        gram += np.outer(updates[:, k], updates[:, k])
    norms = np.diag(gram)
    distances = norms[:, None] + norms[None, :] - np.float32(2) * gram
    np.fill_diagonal(distances, np.inf)
    return int(np.argmin(np.sort(distances, axis=1)[:, : n - f - 2].sum(axis=1)))


def test_krum_ranks_correctly_under_a_large_common_offset() -> None:
    # Six honest updates 1e-2 apart and one attacker 0.3 away in every coordinate, all shifted
    # by 1e4. Squared norms are ~1.6e9, where float32 steps by 128: the uncentred distances
    # (true values ~1e-3 and ~1.4) come out as multiples of 256 and the attacker wins.
    rng = np.random.default_rng(3)
    updates = 1e4 + 1e-2 * rng.standard_normal((7, 16))
    updates[0] += 0.3
    updates = updates.astype(np.float32)
    f = 1

    scores = ref.krum_scores(ref.rows(updates), f)
    best = int(np.argmin(scores))
    assert best != 0
    assert naive_float32_krum(updates, f) == 0  # the attacker: the failure this guards against

    np.testing.assert_array_equal(aggregators.get("krum", f=f)(updates), updates[best])


def test_bulyan_and_multi_krum_exclude_the_attacker_under_a_large_offset() -> None:
    rng = np.random.default_rng(3)
    updates = 1e4 + 1e-2 * rng.standard_normal((11, 16))
    updates[0] += 0.3
    updates = updates.astype(np.float32)
    honest_mean = updates[1:].astype(np.float64).mean(axis=0)
    for name in ("multi-krum", "bulyan"):
        out = aggregators.get(name, f=2)(updates).astype(np.float64)
        assert np.max(np.abs(out - honest_mean)) < 0.05, name


def cohort_with_attacker(n: int = 25, d: int = 20, seed: int = 0) -> np.ndarray:
    """Honest updates around 1, and client 0 far away (it also claims the most examples)."""
    rng = np.random.default_rng(seed)
    updates = 1.0 + 0.1 * rng.standard_normal((n, d))
    updates[0] = -50.0
    return updates.astype(np.float32)


@pytest.mark.parametrize("preaggregation", [None, "nnm", "bucketing"])
@pytest.mark.parametrize("name", ROBUST)
def test_a_client_cannot_buy_influence_with_num_examples(
    name: str, preaggregation: str | None
) -> None:
    updates = cohort_with_attacker()
    extra = {} if preaggregation is None else {"preaggregation": preaggregation}
    if preaggregation == "bucketing":
        extra["seed"] = 0
    honest_claim = np.full(len(updates), 100.0)
    huge_claim = honest_claim.copy()
    huge_claim[0] = 1e9
    tiny_claim = honest_claim.copy()
    tiny_claim[0] = 1.0
    results = []
    for claim in (tiny_claim, huge_claim, None):
        agg = aggregators.get(name, **ROBUST[name], **extra)  # fresh: same seed, same buckets
        results.append(agg(updates, claim))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_fedavg_honours_the_weights() -> None:
    updates = cohort_with_attacker()
    weights = np.full(len(updates), 100.0)
    weights[0] = 1e9
    out = aggregators.get("fedavg")(updates, weights)
    np.testing.assert_allclose(out, ref.fedavg(updates, weights), rtol=1e-6)
    assert np.all(out < -49.0)  # the client that claimed 1e9 examples decides the model
    plain = aggregators.get("fedavg")(updates)
    np.testing.assert_allclose(plain, updates.astype(np.float64).mean(axis=0), rtol=1e-6)


def spread_cohort(n: int, f: int, d: int = 30, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n − f`` honest updates N(1, 0.5²) and ``f`` attackers at −100: updates, honest mean."""
    rng = np.random.default_rng(seed)
    updates = 1.0 + 0.5 * rng.standard_normal((n, d))
    attackers = rng.choice(n, size=f, replace=False)
    updates[attackers] = -100.0
    honest = np.delete(updates, attackers, axis=0)
    return updates.astype(np.float32), honest.mean(axis=0)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("krum", {"f": 3, "preaggregation": "nnm"}),
        ("median", {"f": 3, "preaggregation": "bucketing", "seed": 4}),
        ("trimmed-mean", {"f": 3, "beta": 0.3, "preaggregation": "nnm"}),
        ("geometric-median", {"f": 3, "preaggregation": "bucketing", "seed": 4}),
    ],
)
def test_preaggregation_keeps_far_outliers_out(name: str, params: dict[str, object]) -> None:
    updates, honest_mean = spread_cohort(n=20, f=3)
    out = aggregators.get(name, **params)(updates)
    plain_mean = updates.astype(np.float64).mean(axis=0)
    assert np.linalg.norm(plain_mean - honest_mean) > 50  # what the attackers do to fedavg
    # Within the honest spread: one honest update is ~0.5·√30 ≈ 2.7 from the honest mean.
    assert np.linalg.norm(out - honest_mean) < 2.0


def test_bucketing_with_a_seed_is_reproducible_and_reshuffles_every_call() -> None:
    updates, _ = spread_cohort(n=12, f=0)
    first = aggregators.get("krum", preaggregation="bucketing", seed=11)
    second = aggregators.get("krum", preaggregation="bucketing", seed=11)
    a = [first(updates) for _ in range(5)]
    b = [second(updates) for _ in range(5)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert len({x.tobytes() for x in a}) > 1  # a new shuffle each round


def test_bucketing_without_a_seed_ignores_numpy_global_state() -> None:
    updates, _ = spread_cohort(n=12, f=0)
    pairs = []
    for _ in range(8):
        outputs = []
        for _ in range(2):
            np.random.seed(0)  # noqa: NPY002 (the legacy global state must play no part)
            outputs.append(aggregators.get("krum", preaggregation="bucketing")(updates).tobytes())
        pairs.append(outputs[0] == outputs[1])
    assert not all(pairs)  # each aggregator drew its own shuffle from the OS CSPRNG


@pytest.mark.parametrize("name", ["geometric-median", "centered-clip"])
def test_iterative_results_stay_in_the_hull_of_the_updates_and_the_origin(name: str) -> None:
    # Coordinates of the result lie between the smallest and the largest of the updates and 0.
    updates, _ = spread_cohort(n=9, f=2)
    params = {"tau": 0.7, "iterations": 30} if name == "centered-clip" else {}
    out = aggregators.get(name, **params)(updates)
    low = np.minimum(updates.min(axis=0), 0)
    high = np.maximum(updates.max(axis=0), 0)
    assert np.all(out >= low)
    assert np.all(out <= high)


def test_centered_clip_moves_at_most_tau_per_iteration_from_the_origin() -> None:
    updates, _ = spread_cohort(n=9, f=2)
    for iterations in (1, 3):
        out = aggregators.get("centered-clip", tau=0.5, iterations=iterations)(updates)
        assert np.linalg.norm(out) <= 0.5 * iterations * (1 + 1e-6)


def test_distances_survive_updates_whose_squares_overflow_float32() -> None:
    # |x| ~ 1e25: every square overflows float32 (max 3.4e38); the Gram matrix falls back to
    # float64 products, and Krum still picks the brute-force answer.
    rng = np.random.default_rng(4)
    updates = (1e25 * (1.0 + 1e-2 * rng.standard_normal((7, 16)))).astype(np.float32)
    updates[0] *= -1.0
    f = 1
    best = int(np.argmin(ref.krum_scores(ref.rows(updates), f)))
    assert best != 0
    np.testing.assert_array_equal(aggregators.get("krum", f=f)(updates), updates[best])
    out = aggregators.get("centered-clip", tau=1e24)(updates)
    assert np.isfinite(out).all()
