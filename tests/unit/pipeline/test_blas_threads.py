"""Aggregation passes run BLAS on one thread per worker and give the thread count back after."""

from __future__ import annotations

import threading

import numpy as np
from threadpoolctl import threadpool_info

from fedwarden.pipeline import aggregators
from fedwarden.pipeline.aggregators._blocks import in_halves


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_a_pass_runs_blas_on_one_thread_and_restores_the_count() -> None:
    before = blas_threads()
    assert before
    seen: list[list[int]] = []
    in_halves(lambda blocks: seen.append(blas_threads()), 10, 100_000)
    assert seen
    assert all(threads == [1] * len(before) for threads in seen)
    assert blas_threads() == before


def test_concurrent_aggregations_leave_the_count_as_they_found_it() -> None:
    before = blas_threads()
    updates = np.random.default_rng(0).standard_normal((20, 200_000)).astype(np.float32)
    errors: list[BaseException] = []

    def aggregate() -> None:
        try:
            for name, params in (("krum", {}), ("median", {}), ("centered-clip", {"tau": 1.0})):
                aggregators.get(name, **params)(updates)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=aggregate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert blas_threads() == before
