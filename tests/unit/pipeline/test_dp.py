"""DP noise: where it comes from, its distribution, its memory, and local privatisation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fedwarden.pipeline import dp
from fedwarden.pipeline.dp import add_gaussian_noise, noise_generator
from fedwarden.pipeline.local_dp import privatize_locally


def test_unseeded_generators_differ_and_seeded_ones_repeat() -> None:
    assert noise_generator().standard_normal() != noise_generator().standard_normal()
    assert noise_generator(7).standard_normal(5).tolist() == (
        noise_generator(7).standard_normal(5).tolist()
    )


def test_numpys_global_state_is_neither_used_nor_disturbed() -> None:
    # the legacy global state is exactly what this test is about
    np.random.seed(123)  # noqa: NPY002
    expected = np.random.random(3)  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    add_gaussian_noise(np.zeros(1000), 1.0, noise_generator())
    add_gaussian_noise(np.zeros(1000), 1.0, noise_generator(5))
    assert np.array_equal(np.random.random(3), expected)  # noqa: NPY002


@pytest.mark.parametrize("seed", [-1, 1.5, "7", True])
def test_bad_seeds_are_refused(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        noise_generator(seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noise_has_the_requested_std_and_keeps_dtype_and_shape(dtype: type) -> None:
    vector = np.full(200_000, 3.0, dtype=dtype)
    noised = add_gaussian_noise(vector, 0.5, noise_generator(0))
    assert noised.dtype == dtype
    assert noised.shape == vector.shape
    noise = noised.astype(np.float64) - 3.0
    assert abs(noise.mean()) < 0.5 * 5 / np.sqrt(vector.size)
    assert noise.std() == pytest.approx(0.5, rel=0.01)
    assert np.array_equal(vector, np.full(200_000, 3.0, dtype=dtype))  # input untouched


def test_zero_std_returns_an_equal_copy() -> None:
    vector = np.arange(5, dtype=np.float32)
    out = add_gaussian_noise(vector, 0.0, noise_generator(0))
    assert np.array_equal(out, vector)
    assert out is not vector


def test_noise_drawn_in_blocks_is_the_same_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    vector = np.zeros(10_001)
    whole = add_gaussian_noise(vector, 2.0, noise_generator(3))
    monkeypatch.setattr(dp, "_NOISE_BLOCK", 1000)
    blocked = add_gaussian_noise(vector, 2.0, noise_generator(3))
    assert np.array_equal(whole, blocked)


def test_extra_memory_is_the_output_plus_one_block() -> None:
    d = 4_000_000
    vector = np.zeros(d, dtype=np.float32)
    rng = noise_generator(0)
    tracemalloc.start()
    try:
        out = add_gaussian_noise(vector, 1.0, rng)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.nbytes == 4 * d
    # float64 noise for the whole vector alone would be 8·d bytes on top of the output
    assert peak <= out.nbytes + 8 * dp._NOISE_BLOCK + (1 << 20)


@pytest.mark.parametrize(
    ("vector", "std", "match"),
    [
        (np.zeros(3), -1.0, "std"),
        (np.zeros(3), np.nan, "std"),
        (np.zeros(3, dtype=np.int32), 1.0, "floating"),
    ],
)
def test_bad_noise_parameters_are_refused(vector: np.ndarray, std: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        add_gaussian_noise(vector, std, noise_generator(0))


def test_numpys_legacy_random_state_is_not_accepted() -> None:
    with pytest.raises(ValueError, match="Generator"):
        add_gaussian_noise(np.zeros(3), 1.0, np.random.RandomState(0))  # type: ignore[arg-type]


def test_local_privatisation_is_clip_then_noise_with_std_sigma_c() -> None:
    update = np.full(1000, 1.0, dtype=np.float32)  # norm √1000 ≈ 31.6, clipped to C = 2
    out = privatize_locally(update, clip_norm=2.0, noise_multiplier=0.5, rng=noise_generator(9))
    assert out.dtype == np.float32
    noise = add_gaussian_noise(np.zeros(1000), 0.5 * 2.0, noise_generator(9))
    clipped = out.astype(np.float64) - noise
    assert np.linalg.norm(clipped) == pytest.approx(2.0, rel=1e-5)
    np.testing.assert_allclose(clipped, 2.0 / np.sqrt(1000), rtol=1e-4)


def test_local_privatisation_statistics() -> None:
    rng = noise_generator(1)
    update = np.zeros(50_000, dtype=np.float32)
    update[0] = 100.0
    out = privatize_locally(update, clip_norm=1.0, noise_multiplier=2.0, rng=rng)
    assert out[1:].astype(np.float64).std() == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize(
    ("update", "c", "sigma", "match"),
    [
        (np.zeros((2, 2), np.float32), 1.0, 1.0, "1-D"),
        (np.zeros(4, np.float32), 0.0, 1.0, "clip_norm"),
        (np.zeros(4, np.float32), 1.0, 0.0, "noise_multiplier"),
        (np.array([np.nan, 0.0], np.float32), 1.0, 1.0, "finite"),
    ],
)
def test_local_privatisation_refuses_bad_input(
    update: np.ndarray, c: float, sigma: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        privatize_locally(update, c, sigma, noise_generator(0))
