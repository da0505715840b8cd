"""Local differential privacy: what a client does to its update before sending it.

Clip, then noise: this module sits above :mod:`.clipping` and :mod:`.dp` because the adaptive
clipper draws its count noise from :mod:`.dp`; with local DP inside :mod:`.dp`, the two modules
imported each other.
"""

from __future__ import annotations

import math

import numpy as np

from fedwarden.pipeline.clipping import clip_to_norm
from fedwarden.pipeline.dp import FloatArray, add_gaussian_noise


def privatize_locally(
    update: FloatArray, clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> FloatArray:
    """Local DP, what a client does before sending: clip to C, then add ``N(0, (σC)²)``.

    The result, in ``update``'s dtype, is safe to send to an untrusted aggregator. Replacing the
    client's data moves the clipped update by at most 2C against noise σC, so one report is a
    Gaussian mechanism with noise multiplier σ/2 under replace-one.

    Raises:
        ValueError: ``update`` is not a finite 1-D floating vector, ``clip_norm`` not > 0 or
            ``noise_multiplier`` not > 0.
    """
    vector = np.asarray(update)
    if vector.ndim != 1:
        raise ValueError(f"update must be a 1-D vector, got shape {vector.shape}")
    sigma = float(noise_multiplier)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}")
    clipped, _ = clip_to_norm(vector[None, :], clip_norm)
    return add_gaussian_noise(clipped[0], sigma * float(clip_norm), rng)
