"""Column blocks: every pass over the ``(n, d)`` updates works on ``n × width`` slices.

Beyond the input itself an aggregator then holds O(n · width + n²) values, never a float64 copy
of the whole matrix. The width keeps one float64 block near 4 MiB, which stays in cache on the
machines we measured (docs/aggregators.md); wider blocks were not faster.
"""

from __future__ import annotations

from collections.abc import Iterator

BLOCK_BYTES = 4 * 1024 * 1024
MIN_WIDTH = 512


def block_width(n: int) -> int:
    """Columns per block for ``n`` rows of float64."""
    return max(MIN_WIDTH, BLOCK_BYTES // (8 * max(n, 1)))


def column_blocks(n: int, d: int) -> Iterator[slice]:
    """Consecutive column slices that cover ``range(d)`` for a matrix of ``n`` rows."""
    width = block_width(n)
    for start in range(0, d, width):
        yield slice(start, min(start + width, d))
