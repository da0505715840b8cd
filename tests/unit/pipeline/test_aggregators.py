"""Every aggregator agrees with a brute-force float64 reference on random cohorts.

Cohorts come in four kinds: Gaussian, small integers (ties in every coordinate and between
scores), Gaussian with duplicated rows, and Gaussian with a common offset of 1e4. Sizes start at
the aggregator's minimum (where hypothesis shrinks to), and ``d = 1`` is always possible.
"""

from __future__ import annotations

import multiprocessing
import os
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.pipeline import reference_aggregators as ref

from fedwarden.pipeline import aggregators

EXAMPLES = settings(max_examples=60, deadline=None)
KINDS = ("normal", "grid", "duplicates", "offset")


def make_cohort(n: int, d: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    updates = rng.standard_normal((n, d))
    if kind == "grid":
        updates = rng.integers(-2, 3, size=(n, d)).astype(np.float64)
    elif kind == "duplicates":
        sources = rng.integers(0, n, size=max(1, n // 3))
        targets = rng.integers(0, n, size=sources.size)
        updates[targets] = updates[sources]
    elif kind == "offset":
        updates += 1e4
    return updates.astype(np.float32)


@st.composite
def cohorts(draw: st.DrawFn, min_n: int, kinds: tuple[str, ...] = KINDS) -> np.ndarray:
    n = draw(st.integers(min_n, min_n + 5))
    d = draw(st.integers(1, 6))
    return make_cohort(n, d, draw(st.sampled_from(kinds)), draw(st.integers(0, 2**32 - 1)))


def assert_matches_one(ours: np.ndarray, candidates: list[np.ndarray], updates: np.ndarray) -> None:
    """``ours`` (float32) equals one of the reference outputs up to float32 rounding."""
    assert ours.dtype == updates.dtype
    assert ours.shape == (updates.shape[1],)
    atol = 1e-6 * ref.scale(updates)
    errors = [float(np.max(np.abs(ours - c) - 2e-6 * np.abs(c))) for c in candidates]
    assert candidates
    assert min(errors) <= atol, (ours, candidates)


def assert_matches_coordinatewise(
    ours: np.ndarray, candidates: list[list[list[float]]], updates: np.ndarray
) -> None:
    """For one candidate, every coordinate of ``ours`` equals one of its possible values."""
    assert ours.dtype == updates.dtype
    atol = 1e-6 * ref.scale(updates)

    def fits(possible: list[list[float]]) -> bool:
        return all(
            min(abs(float(o) - v) - 2e-6 * abs(v) for v in values) <= atol
            for o, values in zip(ours, possible, strict=True)
        )

    assert any(fits(possible) for possible in candidates), (ours, candidates)


@EXAMPLES
@given(updates=cohorts(1), weighted=st.booleans(), data=st.data())
def test_fedavg_is_the_weighted_mean(
    updates: np.ndarray, weighted: bool, data: st.DataObject
) -> None:
    n = len(updates)
    weights = None
    if weighted:
        weights = np.array(data.draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n)))
    ours = aggregators.get("fedavg")(updates, weights)
    assert_matches_one(ours, [ref.fedavg(updates, weights)], updates)


@EXAMPLES
@given(f=st.integers(0, 2), data=st.data())
def test_krum_picks_a_best_scored_update(f: int, data: st.DataObject) -> None:
    updates = data.draw(cohorts(2 * f + 3))
    ours = aggregators.get("krum", f=f)(updates)
    tol = ref.score_tolerance(updates)
    assert_matches_one(ours, ref.krum_candidates(updates, f, tol), updates)


@EXAMPLES
@given(f=st.integers(0, 2), data=st.data())
def test_multi_krum_averages_the_m_best_scored(f: int, data: st.DataObject) -> None:
    updates = data.draw(cohorts(2 * f + 3))
    m = data.draw(st.none() | st.integers(1, len(updates) - f))
    ours = aggregators.get("multi-krum", f=f, m=m)(updates)
    tol = ref.score_tolerance(updates)
    assert_matches_one(ours, ref.multi_krum_candidates(updates, f, m, tol), updates)


@EXAMPLES
@given(f=st.integers(0, 3), data=st.data())
def test_median_is_the_coordinate_wise_median(f: int, data: st.DataObject) -> None:
    updates = data.draw(cohorts(2 * f + 1))
    assert_matches_one(aggregators.get("median", f=f)(updates), [ref.median(updates)], updates)


@EXAMPLES
@given(beta=st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.3, 0.45, 0.49]), data=st.data())
def test_trimmed_mean_drops_int_beta_n_per_side(beta: float, data: st.DataObject) -> None:
    agg = aggregators.get("trimmed-mean", beta=beta)
    updates = data.draw(cohorts(1))
    assert_matches_one(agg(updates), [ref.trimmed_mean(updates, beta)], updates)


@EXAMPLES
@given(f=st.integers(0, 2), data=st.data())
def test_trimmed_mean_with_f_at_its_minimum(f: int, data: st.DataObject) -> None:
    beta = data.draw(st.sampled_from([0.1, 0.2, 0.3, 0.45]))
    agg = aggregators.get("trimmed-mean", beta=beta, f=f)
    updates = data.draw(cohorts(agg.min_clients))
    assert int(beta * len(updates)) >= f
    assert_matches_one(agg(updates), [ref.trimmed_mean(updates, beta)], updates)


@EXAMPLES
@given(f=st.integers(0, 2), data=st.data())
def test_bulyan_matches_repeated_krum_then_closest_to_median(f: int, data: st.DataObject) -> None:
    kinds = KINDS if f < 2 else ("normal", "duplicates", "offset")  # keeps the tie search small
    updates = data.draw(cohorts(4 * f + 3, kinds))
    ours = aggregators.get("bulyan", f=f)(updates)
    tol = ref.score_tolerance(updates)
    assert_matches_coordinatewise(ours, ref.bulyan_candidates(updates, f, tol), updates)


@EXAMPLES
@given(updates=cohorts(1), max_iter=st.integers(1, 100))
def test_geometric_median_follows_smoothed_weiszfeld(updates: np.ndarray, max_iter: int) -> None:
    agg = aggregators.get("geometric-median", max_iter=max_iter)
    ours = agg(updates)
    reference = ref.geometric_median(updates, max_iter=max_iter, eps=1e-6, nu=1e-6)
    assert ours.dtype == updates.dtype
    # Same iteration, different rounding: the iterates agree closely, and the objective the
    # geometric median minimises is no worse than the reference's.
    spread = ref.scale(updates - updates.mean(axis=0)) + 1e-6 * ref.scale(updates)
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-4 * spread)
    ours_objective = ref.geometric_median_objective(updates, ours.astype(np.float64))
    reference_objective = ref.geometric_median_objective(updates, reference)
    rounding = len(updates) * 1e-6 * ref.scale(updates)  # the float32 result moved each term
    assert ours_objective <= reference_objective * (1 + 1e-5) + rounding


@EXAMPLES
@given(
    updates=cohorts(1),
    tau=st.sampled_from([0.05, 0.5, 1.0, 3.0, 1e5]),
    iterations=st.integers(1, 20),
)
def test_centered_clip_follows_the_clipping_iteration(
    updates: np.ndarray, tau: float, iterations: int
) -> None:
    ours = aggregators.get("centered-clip", tau=tau, iterations=iterations)(updates)
    assert_matches_one(ours, [ref.centered_clip(updates, tau, iterations)], updates)


def reference_candidates(name: str, params: dict[str, object], updates: np.ndarray) -> list:
    """What ``get(name, **params)`` may return on float64 rows ``updates``."""
    f = int(params.get("f", 0))  # type: ignore[call-overload]
    tol = ref.score_tolerance(updates)
    if name == "fedavg":
        return [ref.fedavg(updates)]
    if name == "krum":
        return ref.krum_candidates(updates, f, tol)
    if name == "multi-krum":
        return ref.multi_krum_candidates(updates, f, None, tol)
    if name == "median":
        return [ref.median(updates)]
    if name == "trimmed-mean":
        return [ref.trimmed_mean(updates, float(params["beta"]))]  # type: ignore[arg-type]
    if name == "bulyan":
        return ref.bulyan_candidates(updates, f, tol)
    if name == "geometric-median":
        return [ref.geometric_median(updates, max_iter=100, eps=1e-6, nu=1e-6)]
    if name == "block-dnc":
        phi = float(params.get("filter_fraction", 0.2))  # type: ignore[arg-type]
        return [ref.block_dnc_possible(updates, int(params["block_size"]), phi)]  # type: ignore[call-overload]
    assert name == "centered-clip"
    return [ref.centered_clip(updates, float(params["tau"]), 10)]  # type: ignore[arg-type]


def check(name: str, ours: np.ndarray, candidates: list, updates: np.ndarray) -> None:
    if name in ("bulyan", "block-dnc"):
        assert_matches_coordinatewise(ours, candidates, updates)
    elif name == "geometric-median":  # iterative: same rule, different rounding
        atol = 1e-5 * ref.scale(updates)
        assert any(np.allclose(ours, c, rtol=1e-5, atol=atol) for c in candidates), (
            ours,
            candidates,
        )
    else:
        assert_matches_one(ours, candidates, updates)


PREAGGREGATION_PARAMS = {
    "fedavg": {},
    "krum": {"f": 1},
    "multi-krum": {"f": 1},
    "median": {"f": 1},
    "trimmed-mean": {"beta": 0.2, "f": 1},
    "bulyan": {"f": 1},
    "geometric-median": {"f": 1},
    "centered-clip": {"f": 1, "tau": 1.0},
    "block-dnc": {"block_size": 2},
}


@pytest.mark.parametrize("name", aggregators.names())
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_nnm_composes_with(name: str, data: st.DataObject) -> None:
    params = dict(PREAGGREGATION_PARAMS[name])
    f = 1
    agg = aggregators.get(name, preaggregation="nnm", **({"f": f} | params))
    updates = data.draw(cohorts(agg.min_clients, ("normal", "duplicates", "offset")))
    mixed = ref.nnm(updates, f)
    candidates = reference_candidates(name, params, mixed)
    check(name, agg(updates), candidates, updates)


@pytest.mark.parametrize("name", aggregators.names())
@settings(max_examples=15, deadline=None)
@given(data=st.data(), bucket_size=st.integers(2, 3), seed=st.integers(0, 2**32 - 1))
def test_bucketing_composes_with(
    name: str, data: st.DataObject, bucket_size: int, seed: int
) -> None:
    params = PREAGGREGATION_PARAMS[name]
    agg = aggregators.get(
        name, preaggregation="bucketing", bucket_size=bucket_size, seed=seed, **params
    )
    updates = data.draw(cohorts(agg.min_clients, ("normal", "duplicates", "offset")))
    # The first call shuffles with the first permutation of default_rng(seed).
    order = np.random.default_rng(seed).permutation(len(updates))
    candidates = reference_candidates(name, params, ref.bucket_means(updates, order, bucket_size))
    check(name, agg(updates), candidates, updates)


@pytest.mark.parametrize("name", aggregators.names())
@settings(max_examples=15, deadline=None)
@given(data=st.data(), filter_fraction=st.sampled_from([0.0, 0.1, 0.2, 0.34, 0.49]))
def test_dnc_composes_with(name: str, data: st.DataObject, filter_fraction: float) -> None:
    params = PREAGGREGATION_PARAMS[name]
    agg = aggregators.get(name, preaggregation="dnc", filter_fraction=filter_fraction, **params)
    updates = data.draw(cohorts(agg.min_clients, ("normal", "duplicates", "offset")))
    candidates = [
        candidate
        for kept in ref.dnc_kept_sets(updates, filter_fraction)
        # block-dnc takes the mixer's filter_fraction too
        for candidate in reference_candidates(
            name, params | {"filter_fraction": filter_fraction}, updates[kept]
        )
    ]
    check(name, agg(updates), candidates, updates)


@EXAMPLES
@given(
    updates=cohorts(1),
    block_size=st.sampled_from([1, 2, 3, 5, 64]),
    filter_fraction=st.sampled_from([0.0, 0.1, 0.2, 0.34, 0.49]),
)
def test_block_dnc_averages_the_rows_each_block_keeps(
    updates: np.ndarray, block_size: int, filter_fraction: float
) -> None:
    agg = aggregators.get("block-dnc", block_size=block_size, filter_fraction=filter_fraction)
    possible = ref.block_dnc_possible(updates, block_size, filter_fraction)
    assert_matches_coordinatewise(agg(updates), [possible], updates)


def test_block_dnc_blocks_stay_whole_across_column_blocks() -> None:
    # 70,001 coordinates span several column blocks of the pass; blocks of 64 must not be cut
    # where a column block ends, and the ragged last block is a block of its own.
    updates = make_cohort(7, 70_001, "normal", seed=12)
    ours = aggregators.get("block-dnc", block_size=64)(updates)
    assert_matches_coordinatewise(ours, [ref.block_dnc_possible(updates, 64, 0.2)], updates)


def test_block_dnc_drops_the_rows_that_stand_out_in_one_block_only() -> None:
    # 20 honest rows; 5 more that agree with them everywhere except a shared push in the
    # coordinates 64-127 (a backdoor's rows of one layer). Over the whole update the 5 are not
    # unusual; in their block they are the top direction, and only that block drops them.
    rng = np.random.default_rng(6)
    honest = rng.standard_normal((20, 4096))
    planted = rng.standard_normal((5, 4096))
    planted[:, 64:128] += 1.5
    updates = np.concatenate([honest[:9], planted, honest[9:]]).astype(np.float32)
    ours = aggregators.get("block-dnc", block_size=64, filter_fraction=0.2)(updates)
    np.testing.assert_allclose(ours[64:128], honest[:, 64:128].mean(axis=0), rtol=1e-5, atol=1e-6)
    whole = aggregators.get("fedavg", preaggregation="dnc", filter_fraction=0.2)(updates)
    assert np.abs(whole[64:128] - honest[:, 64:128].mean(axis=0)).max() > 0.1


def test_dnc_min_share_keeps_every_row_when_no_direction_dominates() -> None:
    rng = np.random.default_rng(8)
    spread = rng.standard_normal((25, 400)).astype(np.float32)  # top direction: about 7 %
    everyone = aggregators.get("fedavg")(spread)
    gated = aggregators.get("fedavg", preaggregation="dnc", min_share=0.2)
    np.testing.assert_array_equal(gated(spread), everyone)
    assert np.abs(aggregators.get("fedavg", preaggregation="dnc")(spread) - everyone).max() > 0
    planted = spread.copy()
    planted[:5, :40] += 4.0  # a shared direction with most of the variance
    kept_mean = aggregators.get("fedavg", preaggregation="dnc", min_share=0.2)(planted)
    np.testing.assert_allclose(kept_mean, spread[5:].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_dnc_drops_the_rows_that_share_a_direction_the_others_lack() -> None:
    # 20 rows spread in every direction, and 5 that add one common component (the signature
    # of a shared goal, such as a backdoor), placed among them.
    rng = np.random.default_rng(4)
    honest = rng.standard_normal((20, 100))
    planted = rng.standard_normal((5, 100))
    planted[:, :10] += 4.0
    updates = np.concatenate([honest[:8], planted, honest[8:]]).astype(np.float32)
    kept_mean = aggregators.get("fedavg", preaggregation="dnc", filter_fraction=0.2)(updates)
    np.testing.assert_allclose(kept_mean, honest.mean(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name", aggregators.names())
def test_result_has_the_input_dtype_and_the_input_is_untouched(name: str, dtype: type) -> None:
    updates = make_cohort(9, 4, "normal", seed=7).astype(dtype)
    before = updates.copy()
    params = {"centered-clip": {"tau": 1.0}, "block-dnc": {"block_size": 3}}.get(name, {})
    out = aggregators.get(name, **params)(updates)
    assert out.dtype == dtype
    assert out.shape == (4,)
    np.testing.assert_array_equal(updates, before)


@pytest.mark.parametrize("name", aggregators.names())
def test_non_contiguous_input_gives_the_same_result(name: str) -> None:
    updates = make_cohort(11, 12, "normal", seed=3)
    params = {"centered-clip": {"tau": 1.0}, "block-dnc": {"block_size": 3}}.get(name, {})
    agg = aggregators.get(name, **params)
    strided = np.asfortranarray(updates)[:, ::2]
    np.testing.assert_array_equal(agg(strided), agg(np.ascontiguousarray(updates[:, ::2])))


def test_results_span_many_column_blocks() -> None:
    # Wider than one block, with a ragged last block: each block must land in its place.
    updates = make_cohort(7, 70_001, "normal", seed=11)
    for name, reference in [
        ("median", ref.median(updates)),
        ("trimmed-mean", ref.trimmed_mean(updates, 0.3)),
        ("fedavg", ref.fedavg(updates)),
    ]:
        params = {"trimmed-mean": {"beta": 0.3}}.get(name, {})
        assert_matches_one(aggregators.get(name, **params)(updates), [reference], updates)
    tol = ref.score_tolerance(updates)
    assert_matches_one(
        aggregators.get("krum", f=1)(updates), ref.krum_candidates(updates, 1, tol), updates
    )


@pytest.mark.parametrize("name", aggregators.names())
def test_two_workers_and_one_give_the_same_bits(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    updates = make_cohort(13, 150_001, "offset", seed=5)
    params = {
        "fedavg": {},
        "trimmed-mean": {"beta": 0.2, "f": 2},
        "centered-clip": {"tau": 1.0},
        "block-dnc": {},
    }
    agg = aggregators.get(name, **params.get(name, {"f": 2}))
    parallel = agg(updates)
    monkeypatch.setattr("fedwarden.pipeline.aggregators._blocks._pool", lambda: None)
    np.testing.assert_array_equal(agg(updates), parallel)


@pytest.fixture(scope="module")
def wide_cohort() -> np.ndarray:
    # 24 × 400k float32 is 38 MB, a float64 copy 77 MB; the blocks of two workers take ~20 MB.
    return make_cohort(24, 400_000, "normal", seed=2)


@pytest.mark.parametrize(
    ("name", "preaggregation"),
    [(name, None) for name in aggregators.names()]
    + [(name, mixer) for name in ("median", "krum") for mixer in ("nnm", "bucketing")],
)
def test_extra_memory_stays_below_the_input(
    name: str, preaggregation: str | None, wide_cohort: np.ndarray
) -> None:
    params = {
        "fedavg": {},
        "trimmed-mean": {"beta": 0.2, "f": 2},
        "centered-clip": {"tau": 1.0},
        "block-dnc": {},
    }
    extra = {} if preaggregation is None else {"preaggregation": preaggregation}
    agg = aggregators.get(name, **(params.get(name, {"f": 2}) | extra))
    tracemalloc.start()
    try:
        agg(wide_cohort)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < wide_cohort.nbytes


def _median_in_child(updates: np.ndarray, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(aggregators.get("median")(updates))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_can_aggregate_after_the_parent_did() -> None:
    updates = make_cohort(9, 150_001, "normal", seed=1)
    expected = aggregators.get("median")(updates)  # the parent's worker threads now exist
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_median_in_child, args=(updates, queue))
    child.start()
    try:
        np.testing.assert_array_equal(queue.get(timeout=60), expected)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
