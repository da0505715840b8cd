"""Column blocks: every pass over the ``(n, d)`` updates works on ``n × width`` slices.

Beyond the input itself an aggregator then holds O(n · width + n²) values per worker, never a
float64 copy of the whole matrix. The width keeps one float64 block near 4 MiB.

Passes run on two workers, each over a fixed half of the blocks: numpy releases the GIL in every
heavy step (casts, sorts, BLAS), so an idle 2-core machine runs them nearly twice as fast. The
split depends only on ``(n, d)``, never on timing or on the machine, and partial results are
combined in a fixed order, so results are bit-for-bit reproducible; with one CPU the halves run
one after the other and give the same bits.

During a pass BLAS runs on one thread per worker. OpenBLAS otherwise spreads every product above
about 2^18 multiply-adds over all cores, and its threads then wait on each other: on a loaded or
CPU-limited node (a pod with a CPU quota, a shared CI box) each product stalls on a descheduled
thread (several times slower than one thread, in the measurements behind docs/aggregators.md),
and two workers' products would fight over the same cores. The limit is process-wide
(threadpoolctl sets OpenBLAS's thread count); it is taken by the first pass that starts and given
back by the last that ends, so concurrent aggregations in one process share it safely.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

BLOCK_BYTES = 4 * 1024 * 1024
MIN_WIDTH = 512
WORKERS = 2

T = TypeVar("T")


def block_width(n: int, multiple: int = 1) -> int:
    """Columns per block for ``n`` rows of float64, a multiple of ``multiple``."""
    width = max(MIN_WIDTH, BLOCK_BYTES // (8 * max(n, 1)))
    return max(multiple, width // multiple * multiple)


def column_blocks(n: int, d: int, multiple: int = 1) -> list[slice]:
    """Consecutive column slices that cover ``range(d)`` for a matrix of ``n`` rows; every
    block but the last starts and ends on a multiple of ``multiple``."""
    width = block_width(n, multiple)
    return [slice(start, min(start + width, d)) for start in range(0, d, width)]


def in_halves(task: Callable[[Sequence[slice]], T], n: int, d: int, multiple: int = 1) -> list[T]:
    """``task`` over each worker's share of the column blocks; results in column order."""
    blocks = column_blocks(n, d, multiple)
    share = -(-len(blocks) // WORKERS)
    shares = [blocks[start : start + share] for start in range(0, len(blocks), share)]
    pool = _pool()
    with single_threaded_blas():
        if pool is None or len(shares) == 1:
            return [task(part) for part in shares]
        return list(pool.map(task, shares))


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: Any = None  # threadpoolctl's limiter while a pass runs


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while any pass of this process runs (see the module docstring)."""
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = _blas_controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None


@functools.cache
def _blas_controller() -> Any:
    # Finding the loaded BLAS libraries walks the process's shared objects: once per process.
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@functools.cache
def _pool() -> ThreadPoolExecutor | None:
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    if cpus < 2:
        return None
    return ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="fedwarden-aggregate")


# A forked child inherits the pool but not its threads, and would wait on them forever.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.cache_clear)
