import numpy as np
import pytest

from fedwarden.pipeline.errors import InvalidCohortError
from fedwarden.pipeline.validation import (
    ValidationConfig,
    check_update,
    cohort_outliers,
    robust_z,
    row_norms,
    stack_valid,
)


def _cohort(n: int = 12, d: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    common = rng.normal(size=d)
    return (common + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize(
    ("update", "fragment"),
    [
        (np.full(10, np.nan, np.float32), "non-finite"),
        (np.array([1.0, np.inf] * 5, np.float32), "non-finite"),
        (np.zeros(9, np.float32), "has 9 values, the model has 10"),
        (np.zeros((2, 5), np.float32), "shape (2, 5)"),
        (np.zeros(10, np.int64), "dtype int64"),
        ([0.0] * 10, "not a numpy array"),
        (np.full(10, 1e300), "beyond the float32 range"),
    ],
)
def test_check_update_refuses_malformed_updates_with_a_reason(update, fragment):
    vector, reason = check_update(update, dim=10)
    assert vector is None
    assert fragment in reason


def test_check_update_enforces_the_norm_bound_and_narrows_float64():
    vector, reason = check_update(np.full(4, 3.0), dim=4, max_norm=5.0)
    assert vector is None
    assert "norm 6 exceeds the bound 5" in reason
    vector, reason = check_update(np.full(4, 1.0), dim=4, max_norm=5.0)
    assert reason is None
    assert vector.dtype == np.float32


def test_row_norms_match_numpy_in_float64_across_blocks():
    x = np.random.default_rng(1).normal(size=(3, 70_000)).astype(np.float32)
    np.testing.assert_allclose(row_norms(x), np.linalg.norm(x.astype(np.float64), axis=1))


def test_robust_z_survives_identical_values():
    assert np.all(robust_z(np.ones(7), 0.0) == 0)
    z = robust_z(np.array([1.0, 1.0, 1.0, 1.0, 5.0]), 0.0)
    assert z[-1] > 3.5
    assert np.all(z[:-1] == 0)
    np.testing.assert_allclose(robust_z(np.array([1.0, 1.0, 1.0, 1.0, 5.0]), 0.1)[-1], 40)


def test_robust_z_never_divides_by_less_than_the_floor():
    values = np.array([0.0, 0.01, 0.02, 0.03, 1.0])
    assert robust_z(values, 0.5)[-1] == pytest.approx((1.0 - 0.02) / 0.5)
    assert robust_z(values, 1e-6)[-1] == pytest.approx(0.6745 * 0.98 / 0.01)


def test_five_sites_that_converge_together_do_not_make_an_honest_site_an_outlier():
    # issue 19: four sites within 2 % of each other, one honest site with unlike data at 2.5
    # times their norm; the MAD of five log norms is 0.01, and the site scored 62 > 14
    rng = np.random.default_rng(0)
    direction = rng.normal(size=200)
    direction /= np.linalg.norm(direction)
    norms = [0.30, 0.302, 0.306, 0.298, 0.75]
    cohort = np.stack([n * direction for n in norms]).astype(np.float32)
    config = ValidationConfig(outlier_z=14.0)
    assert cohort_outliers(cohort, config) == {}
    cohort[4] *= 100  # a grossly scaled update is still an outlier
    assert "norm" in cohort_outliers(cohort, config)[4]


def test_from_eight_updates_the_mad_alone_is_the_scale():
    # fedwarden demo: honest updates dominated by DP-SGD noise have nearly equal norms, and a
    # sign flip boosted x10 shows only as 3.3 times their norm
    rng = np.random.default_rng(1)
    honest = rng.normal(size=(7, 500)) * (1 + 0.01 * rng.normal(size=(7, 1)))
    cohort = np.concatenate([honest, 3.3 * rng.normal(size=(2, 500))]).astype(np.float32)
    assert set(cohort_outliers(cohort, ValidationConfig(outlier_z=14.0))) == {7, 8}


def test_scaled_and_displaced_updates_are_outliers_honest_ones_are_not():
    x = _cohort()
    x[3] *= 50  # boosted: norm outlier
    x[7] = -x[7]  # sign flipped: same norm, far from the median
    reasons = cohort_outliers(x, ValidationConfig())
    assert set(reasons) == {3, 7}
    assert "norm" in reasons[3]
    assert "distance" in reasons[7]


def test_cohort_test_is_skipped_below_its_minimum_and_when_disabled():
    x = _cohort(n=4)
    x[0] *= 100
    assert cohort_outliers(x, ValidationConfig()) == {}
    assert cohort_outliers(_cohort(), ValidationConfig(outlier_z=None)) == {}


def test_stack_valid_keeps_valid_rows_and_reports_the_rest():
    x = _cohort(n=4, d=6)
    updates = [x[0], np.full(6, np.nan, np.float32), x[2], np.zeros(5, np.float32)]
    stacked, ids, rejected = stack_valid(updates, ["a", "b", "c", "d"], dim=6, max_norm=None)
    assert ids == ["a", "c"]
    np.testing.assert_array_equal(stacked, x[[0, 2]])
    assert set(rejected) == {"b", "d"}
    assert rejected["b"].startswith("invalid update:")


def test_stack_valid_does_not_copy_a_clean_float32_matrix():
    x = _cohort(n=5, d=8)
    stacked, _, rejected = stack_valid(x, list("abcde"), dim=8, max_norm=None)
    assert rejected == {}
    assert stacked is x


def test_stack_valid_refuses_unpaired_or_duplicate_ids():
    x = _cohort(n=3, d=4)
    with pytest.raises(InvalidCohortError, match="pair up"):
        stack_valid(x, ["a", "b"], dim=4, max_norm=None)
    with pytest.raises(InvalidCohortError, match="unique"):
        stack_valid(x, ["a", "a", "b"], dim=4, max_norm=None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_norm": 0},
        {"outlier_z": -1.0},
        {"min_cohort_for_outliers": 2},
        {"min_log_spread": 0},
        {"floor_spread_below": 4},
    ],
)
def test_absurd_validation_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="must be"):
        ValidationConfig(**kwargs)
