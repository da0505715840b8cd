"""Free riders: clients that want the global model without training (the attack side).

A free rider holds no useful data or does not spend compute on it; it sends something that is
meant to pass for an update. It observes the global model every round, so it knows the last
global step ``Δ_{t-1} = θ_t - θ_{t-1}`` (zero before the first step).

- ``zero``: the zero vector, the most naive free rider (it contributes nothing at all).
- ``noise``: Gaussian noise ``N(0, sigma^2 I)``, the "random weights" free rider of Lin, Du and
  Liu, "Free-riders in Federated Learning: Attacks and Defenses", arXiv:1911.12560 (2019); by
  default ``sigma`` matches the size of the last global step, ``‖Δ‖ / sqrt(d)``, so that the
  update's norm is plausible.
- ``replay``: the last global step replayed as the client's own update, Lin et al.'s "delta
  weights" free rider and the plain free rider of Fraboni, Vidal and Lorenzi, "Free-rider
  Attacks on Model Aggregation in Federated Learning", AISTATS 2021.
- ``replay-noise``: the replay plus Gaussian noise of ``noise_scale * ‖Δ‖ / sqrt(d)`` per
  coordinate, Lin et al.'s "advanced delta weights" and Fraboni et al.'s "disguised" free
  rider, which adds noise so that its update is not an exact copy.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FREE_RIDERS: tuple[str, ...] = ("zero", "noise", "replay", "replay-noise")
"""Kinds accepted by :func:`free_rider_update`."""

_FALLBACK_SIGMA = 1e-3
"""Per-coordinate noise before any global step exists (the first round)."""


def free_rider_update(
    kind: str,
    last_global_delta: npt.ArrayLike,
    *,
    rng: np.random.Generator,
    sigma: float | None = None,
    noise_scale: float = 0.1,
) -> npt.NDArray[np.float32]:
    """The vector a free rider of ``kind`` sends, shape ``(d,)`` like ``last_global_delta``.

    ``sigma`` overrides the standard deviation of the ``noise`` kind; ``noise_scale`` is the
    relative size of the noise of ``replay-noise``.
    """
    delta = np.asarray(last_global_delta, dtype=np.float32)
    if delta.ndim != 1:
        raise ValueError(f"last_global_delta must be a vector, got shape {delta.shape}")
    d = delta.shape[0]
    rms = float(np.linalg.norm(delta.astype(np.float64))) / math.sqrt(d) if d else 0.0
    if kind == "zero":
        return np.zeros(d, dtype=np.float32)
    if kind == "noise":
        s = sigma if sigma is not None else (rms if rms > 0 else _FALLBACK_SIGMA)
        if not s > 0:
            raise ValueError(f"noise sigma must be > 0, got {s}")
        noise: npt.NDArray[np.float32] = rng.normal(0.0, s, size=(d,)).astype(np.float32)
        return noise
    if kind == "replay":
        return delta.copy()
    if kind == "replay-noise":
        if not noise_scale >= 0:
            raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
        s = noise_scale * (rms if rms > 0 else _FALLBACK_SIGMA)
        noisy: npt.NDArray[np.float32] = (delta + rng.normal(0.0, s, size=d)).astype(np.float32)
        return noisy
    raise ValueError(f"unknown free-rider kind {kind!r}; choose one of: {', '.join(FREE_RIDERS)}")
