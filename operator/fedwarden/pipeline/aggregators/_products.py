"""Matrix products that stay on the calling thread, whatever the node's load.

OpenBLAS runs a product on all cores once it exceeds about 2^18 multiply-adds, and its threads
then wait on each other. On a shared or CPU-limited node (a pod with a CPU quota, our 2-core CI)
every such product stalls on a descheduled thread: the Gram matrix of 50 × 1e6 updates took
1-2.6 s that way against 0.2 s on one thread (docs/aggregators.md). Products below the threshold
run on the calling thread, so these helpers cut the long dimension into slices of about that size
and multiply them as one stacked batch, which numpy hands to BLAS slice by slice. For cohorts of
more than about 64 clients each useful product is far above the threshold, and large enough for
OpenBLAS's threads to pay off; those go to BLAS whole.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
Float64Array = npt.NDArray[np.float64]

SINGLE_THREAD_PRODUCT = 2**18
#: The longest float32 dot product accumulated in float32 before the float64 sum (see _gram).
FLOAT32_SLICE = 128
_MIN_SLICE = 16


def _slice_width(others: int, length: int) -> int:
    return min(max(SINGLE_THREAD_PRODUCT // max(others, 1), _MIN_SLICE), length)


def gram(block: FloatArray) -> Float64Array:
    """``block @ block.T`` for an ``(n, width)`` block, summed over its slices in float64.

    Each slice's product is in the block's dtype; float32 slices are kept short (see
    :mod:`._gram` for the error bound).
    """
    n, width = block.shape
    step = _slice_width(n * n, width)
    if block.dtype == np.float32:
        step = min(step, FLOAT32_SLICE)
    if step < n:
        # Beyond n ≈ 64 every useful slice exceeds the threshold; the stacked n × n results would
        # also outgrow the block. One product, big enough to pay for OpenBLAS's threads.
        return np.asarray(block @ block.T, dtype=np.float64)
    whole = width - width % step
    slices = block[:, :whole].reshape(n, whole // step, step).transpose(1, 0, 2)
    out: Float64Array = (slices @ slices.transpose(0, 2, 1)).sum(axis=0, dtype=np.float64)
    rest = block[:, whole:]
    out += rest @ rest.T
    return out


def transposed_product(block: Float64Array, mixing: Float64Array) -> Float64Array:
    """``(mixing @ block).T`` as a C-contiguous ``(width, k)`` array, for ``(n, width)`` blocks."""
    n, width = block.shape
    k = mixing.shape[0]
    step = _slice_width(n * k, width)
    whole = width - width % step
    out = np.empty((width, k))
    stacked = block.T[:whole].reshape(whole // step, step, n)
    np.matmul(stacked, mixing.T, out=out[:whole].reshape(whole // step, step, k))
    out[whole:] = block.T[whole:] @ mixing.T
    return out
