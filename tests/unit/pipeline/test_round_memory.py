"""A round does not copy the cohort's matrix when nothing is refused: at 25M parameters and 10
clients that matrix is 1 GB, and the aggregator already holds it (benchmarks/model-size.md)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from fedwarden.pipeline.round import Pipeline, PipelineConfig


def test_plain_fedavg_works_on_the_cohort_without_a_copy() -> None:
    n, d = 16, 500_000
    rng = np.random.default_rng(0)
    updates = rng.standard_normal((n, d), dtype=np.float32)
    pipeline = Pipeline(PipelineConfig.plain_fedavg(), dim=d, population=n)
    ids = [f"client-{i}" for i in range(n)]
    tracemalloc.start()
    result = pipeline.run_round(updates, ids)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.accepted == ids
    # the float64 aggregate, the state kept for the next round and the per-row checks are a
    # few vectors of d values (about 36·d bytes); a copy of the matrix alone is n·d·4 = 64·d
    assert peak < updates.nbytes
