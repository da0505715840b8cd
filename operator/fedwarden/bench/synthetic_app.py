"""A synthetic app of any size for the runtime benchmarks: ``fedwarden client --app
fedwarden.bench.synthetic_app:client_fn --app-config params=25000000``.

A NumPyClient in Flower's shape (``get_parameters``, ``fit``; ``client_fn(context)`` reading
``partition-id`` and the run config's ``params``) that does no training: ``fit`` returns the
given parameters plus ``0.01 · (b_r + 0.5 · n_{i,r})``, a direction ``b_r`` shared by the round's
cohort and the client's own standard normal noise, both from fixed seeds. The shared part makes
the cohort look like honest clients to the free-rider tests (an update with no common direction
is noise to them); the fresh noise keeps a client from replaying its own update.

The noise is drawn in blocks into the returned array, so ``fit`` holds the given parameters and
the result, nothing of the model's size beyond: at 25M parameters a client's model and update
are 100 MB each, and ten clients share the machine with the aggregator. No Flower import.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
ROW = 1024
BLOCK = 1 << 20
SHARED_SEED = 11
OWN_SEED = 7


def layout(params: int) -> list[tuple[int, ...]]:
    """A weight matrix of rows of 1024 and a bias of the rest (when there is a rest)."""
    rows, rest = divmod(params, ROW)
    shapes: list[tuple[int, ...]] = [(rows, ROW)] if rows else []
    return [*shapes, (rest,)] if rest else shapes


class SyntheticClient:
    """See the module docstring."""

    def __init__(self, params: int, partition_id: int) -> None:
        if params < 1:
            raise ValueError(f"params must be >= 1, got {params}")
        self.params = params
        self.partition_id = partition_id

    def get_parameters(self, config: dict[str, Any]) -> list[F32]:
        return [np.zeros(shape, np.float32) for shape in layout(self.params)]

    def fit(
        self, parameters: list[npt.NDArray[Any]], config: dict[str, Any]
    ) -> tuple[list[F32], int, dict[str, float]]:
        server_round = int(config.get("server_round", 1))
        shared = np.random.default_rng([SHARED_SEED, server_round])
        own = np.random.default_rng([OWN_SEED, self.partition_id, server_round])
        new = [np.array(p, dtype=np.float32) for p in parameters]
        for array in new:
            flat = array.reshape(-1)
            for start in range(0, flat.size, BLOCK):
                block = flat[start : start + BLOCK]
                step = shared.standard_normal(block.size, dtype=np.float32)
                step += np.float32(0.5) * own.standard_normal(block.size, dtype=np.float32)
                block += np.float32(0.01) * step
        return new, 1, {}


def client_fn(context: Any) -> SyntheticClient:
    return SyntheticClient(
        int(context.run_config["params"]), int(context.node_config.get("partition-id", 0))
    )
