"""Clipping: the bound ‖x‖ ≤ C holds exactly, and adaptive clipping tracks the γ-quantile."""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedwarden.pipeline import clipping
from fedwarden.pipeline.clipping import (
    AdaptiveClipper,
    Clipper,
    FixedClipper,
    adjusted_noise_multiplier,
    clip_to_norm,
)
from fedwarden.pipeline.dp import noise_generator

# --- clip_to_norm ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_above_c_are_scaled_to_c_and_rows_below_are_untouched(dtype: type) -> None:
    rng = np.random.default_rng(0)
    updates = rng.normal(size=(6, 50)).astype(dtype)
    updates[1] *= 1e-3  # well under C
    updates[4] = 0.0  # the zero update
    norms64 = np.linalg.norm(updates.astype(np.float64), axis=1)
    c = float(np.median(norms64))
    clipped, norms = clip_to_norm(updates, c)
    assert clipped.dtype == dtype
    assert norms.dtype == np.float64
    np.testing.assert_allclose(norms, norms64, rtol=1e-12)
    new = np.linalg.norm(clipped.astype(np.float64), axis=1)
    for i in range(6):
        if norms64[i] <= c:
            assert np.array_equal(clipped[i], updates[i])
        else:
            assert new[i] <= c
            assert new[i] == pytest.approx(c, rel=1e-5)
            cosine = clipped[i].astype(np.float64) @ updates[i] / (new[i] * norms64[i])
            assert cosine == pytest.approx(1.0, abs=1e-6)


def test_the_input_is_not_modified_and_a_copy_is_returned() -> None:
    updates = np.full((3, 4), 10.0, dtype=np.float32)
    before = updates.copy()
    clip_to_norm(updates, 1.0)
    assert np.array_equal(updates, before)
    small, _ = clip_to_norm(before, 1e9)
    assert small is not before
    small[0, 0] = -1
    assert before[0, 0] == 10.0


def test_norms_are_accumulated_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    updates = rng.normal(size=(5, 1001)).astype(np.float32)
    whole, whole_norms = clip_to_norm(updates, 3.0)
    monkeypatch.setattr(clipping, "_BLOCK_ELEMENTS", 37)  # 7 columns per block
    blocked, blocked_norms = clip_to_norm(updates, 3.0)
    np.testing.assert_allclose(blocked_norms, whole_norms, rtol=1e-13)
    np.testing.assert_allclose(blocked, whole, rtol=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    updates=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
        elements=st.floats(-1e4, 1e4, width=32),
    ),
    c=st.floats(1e-3, 1e3),
)
def test_no_clipped_row_is_ever_above_c_even_by_a_rounding_error(
    updates: np.ndarray, c: float
) -> None:
    clipped, norms = clip_to_norm(updates, c)
    assert clipped.shape == updates.shape
    assert np.all(np.linalg.norm(clipped.astype(np.float64), axis=1) <= c)
    np.testing.assert_allclose(norms, np.linalg.norm(updates.astype(np.float64), axis=1))


@pytest.mark.parametrize(
    ("updates", "c", "match"),
    [
        (np.ones(4, np.float32), 1.0, "2-D"),
        (np.ones((2, 2), np.int64), 1.0, "floating"),
        (np.array([[1.0, np.nan]], np.float32), 1.0, "finite"),
        (np.array([[np.inf, 0.0]], np.float32), 1.0, "finite"),
        (np.ones((2, 2), np.float32), 0.0, "clip_norm"),
        (np.ones((2, 2), np.float32), -1.0, "clip_norm"),
        (np.ones((2, 2), np.float32), math.inf, "clip_norm"),
    ],
)
def test_bad_input_is_refused(updates: np.ndarray, c: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        clip_to_norm(updates, c)


# --- clippers ----------------------------------------------------------------------------------


def test_both_clippers_satisfy_the_protocol() -> None:
    assert isinstance(FixedClipper(1.0), Clipper)
    assert isinstance(AdaptiveClipper(1.0), Clipper)


def test_fixed_clipper_never_moves_and_checks_its_checkpoint() -> None:
    clipper = FixedClipper(2.5)
    clipper.update(np.array([100.0, 200.0]))
    assert clipper.clip_norm == 2.5
    state = clipper.state_dict()
    FixedClipper(2.5).load_state_dict(state)
    with pytest.raises(ValueError, match="refusing to mix"):
        FixedClipper(1.0).load_state_dict(state)
    with pytest.raises(ValueError, match="not a fixed"):
        FixedClipper(2.5).load_state_dict(AdaptiveClipper(2.5).state_dict())


def test_c_shrinks_when_more_than_the_target_quantile_is_under_it() -> None:
    clipper = AdaptiveClipper(10.0, target_quantile=0.5, learning_rate=0.2)
    clipper.update(np.array([1.0, 2.0, 3.0, 4.0]))  # all under C: b̄ = 1
    assert clipper.clip_norm == pytest.approx(10.0 * math.exp(-0.2 * 0.5))
    clipper = AdaptiveClipper(0.5, target_quantile=0.5, learning_rate=0.2)
    clipper.update(np.array([1.0, 2.0, 3.0, 4.0]))  # all above C: b̄ = 0
    assert clipper.clip_norm == pytest.approx(0.5 * math.exp(0.2 * 0.5))


def test_the_indicator_uses_the_rounds_own_c_inclusive() -> None:
    # ‖x‖ = C counts as unclipped (the paper's 1[‖x‖ ≤ C]); C is read before the update.
    clipper = AdaptiveClipper(1.0, target_quantile=0.5, learning_rate=1.0)
    c_of_the_round = clipper.clip_norm
    clipper.update(np.array([1.0, 1.0]))
    assert c_of_the_round == 1.0
    assert clipper.last_unclipped_fraction == 1.0
    assert clipper.clip_norm == pytest.approx(math.exp(-0.5))


def test_expected_clients_is_the_denominator_of_the_centred_count() -> None:
    clipper = AdaptiveClipper(5.0, target_quantile=0.5, learning_rate=0.2, expected_clients=10)
    clipper.update(np.array([1.0, 2.0, 3.0, 9.0]))  # 3 of 4 under C
    assert clipper.last_unclipped_fraction == pytest.approx(0.5 + (3 - 2) / 10)


def test_an_empty_round_leaves_c_alone() -> None:
    clipper = AdaptiveClipper(3.0)
    clipper.update(np.array([]))
    assert clipper.clip_norm == 3.0


GRID = np.linspace(0.0, 10.0, 1001)  # a fixed distribution of norms: uniform on [0, 10]
MIDPOINTS = np.linspace(0.05, 9.95, 100)  # the same, coarser and without ties at the quantiles


def _run_ours(gamma: float, c0: float, rounds: int = 400) -> float:
    clipper = AdaptiveClipper(c0, target_quantile=gamma, learning_rate=0.2)
    for _ in range(rounds):
        clipper.update(GRID)
    return clipper.clip_norm


@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("c0", [0.3, 20.0])
def test_fixed_point_is_the_target_quantile_of_the_norms(gamma: float, c0: float) -> None:
    assert _run_ours(gamma, c0) == pytest.approx(10.0 * gamma, abs=0.05)


@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9])
def test_with_count_noise_and_random_cohorts_c_hovers_around_the_quantile(gamma: float) -> None:
    sampler = np.random.default_rng(7)
    clipper = AdaptiveClipper(
        1.0, target_quantile=gamma, learning_rate=0.2, count_noise_std=2.0, rng=noise_generator(3)
    )
    trace = []
    for _ in range(600):
        trace.append(clipper.clip_norm)
        clipper.update(sampler.uniform(0.0, 10.0, size=100))
    assert np.mean(trace[200:]) == pytest.approx(10.0 * gamma, abs=0.4)


def test_count_noise_comes_from_the_given_generator() -> None:
    def trajectory(seed: int) -> list[float]:
        clipper = AdaptiveClipper(1.0, count_noise_std=1.0, rng=noise_generator(seed))
        out = []
        for _ in range(5):
            clipper.update(np.array([0.5, 2.0]))
            out.append(clipper.clip_norm)
        return out

    assert trajectory(1) == trajectory(1)
    assert trajectory(1) != trajectory(2)
    unseeded = AdaptiveClipper(1.0, count_noise_std=1.0)  # CSPRNG-seeded generator by default
    unseeded.update(np.array([0.5, 2.0]))


def test_adaptive_state_restores_c() -> None:
    clipper = AdaptiveClipper(1.0)
    clipper.update(np.array([5.0, 6.0]))
    fresh = AdaptiveClipper(1.0)
    fresh.load_state_dict(clipper.state_dict())
    assert fresh.clip_norm == clipper.clip_norm
    with pytest.raises(ValueError, match="not an adaptive"):
        fresh.load_state_dict(FixedClipper(1.0).state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial_clip_norm": 0.0}, "initial_clip_norm"),
        ({"initial_clip_norm": 1.0, "target_quantile": 0.0}, "target_quantile"),
        ({"initial_clip_norm": 1.0, "target_quantile": 1.0}, "target_quantile"),
        ({"initial_clip_norm": 1.0, "learning_rate": 0.0}, "learning_rate"),
        ({"initial_clip_norm": 1.0, "count_noise_std": -1.0}, "count_noise_std"),
        ({"initial_clip_norm": 1.0, "expected_clients": 0.0}, "expected_clients"),
    ],
)
def test_adaptive_clipper_refuses_bad_parameters(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AdaptiveClipper(**kwargs)  # type: ignore[arg-type]


def test_adaptive_clipper_refuses_bad_norms() -> None:
    with pytest.raises(ValueError, match="finite"):
        AdaptiveClipper(1.0).update(np.array([1.0, np.nan]))


# --- privacy of the clipped count --------------------------------------------------------------


def test_adjusted_noise_multiplier_inverts_the_papers_composition() -> None:
    sigma, sigma_b = 1.0, 5.0
    sigma_delta = adjusted_noise_multiplier(sigma, sigma_b)
    assert sigma_delta == pytest.approx((sigma**-2 - (2 * sigma_b) ** -2) ** -0.5)
    assert (sigma_delta**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(sigma)
    assert sigma_delta > sigma
    replace = adjusted_noise_multiplier(sigma, sigma_b, relation="replace-one")
    assert (replace**-2 + sigma_b**-2) ** -0.5 == pytest.approx(sigma)


def test_update_and_count_queries_together_cost_exactly_sigma() -> None:
    # Two Gaussian queries with multipliers σ_Δ and 2σ_b have the RDP of one with σ.
    from dp_accounting import GaussianDpEvent
    from dp_accounting.rdp import RdpAccountant

    sigma, sigma_b = 1.3, 2.0
    both = RdpAccountant()
    both.compose(GaussianDpEvent(adjusted_noise_multiplier(sigma, sigma_b)))
    both.compose(GaussianDpEvent(2 * sigma_b))
    one = RdpAccountant().compose(GaussianDpEvent(sigma))
    assert both.get_epsilon(1e-5) == pytest.approx(one.get_epsilon(1e-5), rel=1e-9)


@pytest.mark.parametrize(
    ("sigma", "sigma_b", "relation", "match"),
    [
        (1.0, 0.0, "add-remove", "count_noise_std must be > 0"),
        (1.0, 0.5, "add-remove", "must be > 0.5"),
        (1.0, 1.0, "replace-one", "must be > 1"),
        (0.0, 1.0, "add-remove", "noise_multiplier"),
        (1.0, 1.0, "sideways", "relation"),
    ],
)
def test_adjusted_noise_multiplier_refuses_impossible_budgets(
    sigma: float, sigma_b: float, relation: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        adjusted_noise_multiplier(sigma, sigma_b, relation)  # type: ignore[arg-type]


# --- Flower 1.42's server-side adaptive clipping moves C the wrong way -------------------------


@pytest.mark.flower
def test_flowers_update_rule_runs_away_from_the_quantile_where_ours_converges() -> None:
    strategy = pytest.importorskip("flwr.serverapp.strategy.dp_adaptive_clipping")
    dp = pytest.importorskip("flwr.supercore.differential_privacy")
    base = strategy.DifferentialPrivacyAdaptiveBase

    def flower(c0: float, gamma: float, rounds: int = 150) -> float:
        # The state aggregate_train touches, driven through Flower's own functions.
        state = SimpleNamespace(
            clipping_norm=c0,
            target_clipped_quantile=gamma,
            clip_norm_lr=0.2,
            clipped_count_stddev=0.0,
        )
        for _ in range(rounds):
            count = 0
            for norm in MIDPOINTS:
                update = [np.array([norm], dtype=np.float64)]
                count += int(dp.adaptive_clip_inputs_inplace(update, state.clipping_norm))
            fraction = base._noisy_fraction(state, count, len(MIDPOINTS))
            base._geometric_update(state, fraction)
        return float(state.clipping_norm)

    def ours(c0: float, gamma: float, rounds: int = 150) -> float:
        clipper = AdaptiveClipper(c0, target_quantile=gamma, learning_rate=0.2)
        for _ in range(rounds):
            clipper.update(MIDPOINTS)
        return clipper.clip_norm

    # Flower feeds the fraction of *clipped* updates into C·exp(−η(fraction − γ)): below the
    # median most updates are clipped, so C shrinks further; above it, C grows without bound.
    assert flower(4.0, 0.5) < 0.5
    assert flower(6.0, 0.5) > 50.0
    # Its only fixed point is the (1 − γ)-quantile (here 9 for γ = 0.1), and it is unstable.
    assert flower(9.0, 0.1) == 9.0
    assert flower(8.9, 0.1) < 1.0
    assert flower(9.1, 0.1) > 10.0
    # Ours, from the same starts, converges to the γ-quantile.
    for c0 in (4.0, 6.0):
        assert ours(c0, 0.5) == pytest.approx(5.0, abs=0.06)
    for c0 in (8.9, 9.1):
        assert ours(c0, 0.1) == pytest.approx(1.0, abs=0.06)


@pytest.mark.flower
def test_flower_noises_a_round_with_the_next_rounds_c() -> None:
    strategy = pytest.importorskip("flwr.serverapp.strategy.dp_adaptive_clipping")
    source = inspect.getsource(
        strategy.DifferentialPrivacyServerSideAdaptiveClipping.aggregate_train
    )
    # C is updated (for the next round) before the noise, whose std is σ·C, is added.
    assert source.index("self._geometric_update(") < source.index(
        "self._add_noise_to_aggregated_arrays("
    )
