"""Conversion between a model's list of parameter arrays and one flat float32 vector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


def flatten(arrays: Sequence[npt.ArrayLike], dtype: npt.DTypeLike = np.float32) -> FloatArray:
    """Concatenate the arrays, raveled in C order, into one vector of ``dtype``."""
    if len(arrays) == 0:
        return np.zeros(0, dtype=dtype)
    return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])


def unflatten(vector: npt.ArrayLike, shapes: Sequence[tuple[int, ...]]) -> list[FloatArray]:
    """Split ``vector`` back into arrays of ``shapes``; the sizes must add up exactly."""
    flat = np.asarray(vector)
    if flat.ndim != 1:
        raise ValueError(f"unflatten expects a 1-D vector, got shape {flat.shape}")
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if sum(sizes) != flat.size:
        raise ValueError(
            f"vector has {flat.size} values but the shapes {list(shapes)} need {sum(sizes)}"
        )
    out: list[FloatArray] = []
    offset = 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return out
