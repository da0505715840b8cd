"""Free riders send the documented vectors."""

from __future__ import annotations

import numpy as np
import pytest

from fedwarden.sim.freeriders import FREE_RIDERS, free_rider_update


@pytest.fixture
def delta() -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.01, size=10_000).astype(np.float32)


def test_kinds() -> None:
    assert FREE_RIDERS == ("zero", "noise", "replay", "replay-noise")


def test_zero(delta: np.ndarray) -> None:
    out = free_rider_update("zero", delta, rng=np.random.default_rng(0))
    assert out.shape == delta.shape
    assert out.dtype == np.float32
    assert not out.any()


def test_noise_matches_the_size_of_the_last_step_and_is_unrelated_to_it(delta: np.ndarray) -> None:
    out = free_rider_update("noise", delta, rng=np.random.default_rng(1))
    assert np.linalg.norm(out) == pytest.approx(np.linalg.norm(delta), rel=0.05)
    cos = out @ delta / (np.linalg.norm(out) * np.linalg.norm(delta))
    assert abs(cos) < 4 / np.sqrt(delta.size)
    fixed = free_rider_update("noise", delta, rng=np.random.default_rng(1), sigma=2.0)
    assert fixed.std() == pytest.approx(2.0, rel=0.05)


def test_replay_is_the_last_global_step(delta: np.ndarray) -> None:
    out = free_rider_update("replay", delta, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out, delta)
    assert out is not delta


def test_replay_noise_is_the_last_step_plus_small_noise(delta: np.ndarray) -> None:
    out = free_rider_update("replay-noise", delta, rng=np.random.default_rng(7), noise_scale=0.1)
    residual = out - delta
    assert np.linalg.norm(residual) == pytest.approx(0.1 * np.linalg.norm(delta), rel=0.05)
    cos = out @ delta / (np.linalg.norm(out) * np.linalg.norm(delta))
    assert 0.99 < cos < 0.999  # close to the replay, but not an exact copy


def test_first_round_without_a_global_step() -> None:
    zero = np.zeros(100, np.float32)
    rng = np.random.default_rng(0)
    assert not free_rider_update("replay", zero, rng=rng).any()
    assert free_rider_update("noise", zero, rng=rng).std() > 0
    assert free_rider_update("replay-noise", zero, rng=rng).std() > 0


def test_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown free-rider kind"):
        free_rider_update("lazy", np.zeros(3), rng=rng)
    with pytest.raises(ValueError, match="vector"):
        free_rider_update("zero", np.zeros((3, 3)), rng=rng)
