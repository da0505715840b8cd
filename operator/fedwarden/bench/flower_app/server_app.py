"""ServerApp of the round-overhead benchmark: Flower's FedAvg, timed per round.

Runs inside a Flower App (see the package docstring); imports only Flower and numpy. Run
config keys: ``params`` (d), ``nodes`` (N, every one sampled each round), ``rounds`` (timed),
``warmup`` (untimed rounds first), ``timeout`` (seconds Flower waits for replies per round) and
``result-path`` (where the JSON result goes).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


class TimedFedAvg(FedAvg):
    """``FedAvg`` that records, per round, the wall time from configuring the round (sampling,
    building the messages) to the aggregated model (all replies pulled and averaged)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.started: dict[int, float] = {}
        self.rounds: list[dict[str, Any]] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.started[server_round] = time.perf_counter()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        seconds = time.perf_counter() - self.started[server_round]
        errors = sum(1 for reply in replies if reply.has_error())
        self.rounds.append(
            {
                "round": server_round,
                "seconds": seconds,
                "replies": len(replies) - errors,
                "errors": errors,
                "aggregated": arrays is not None,
            }
        )
        return arrays, metrics


def _write(path: str, payload: dict[str, Any]) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, target)


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    result_path = str(config["result-path"])
    started = time.perf_counter()
    try:
        nodes = int(config["nodes"])
        params = int(config["params"])
        warmup = int(config["warmup"])
        rounds = int(config["rounds"])
        strategy = TimedFedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=nodes,
            min_available_nodes=nodes,
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord([np.zeros(params, dtype=np.float32)]),
            num_rounds=warmup + rounds,
            timeout=float(config["timeout"]),
        )
        final = result.arrays.to_numpy_ndarrays()
        _write(
            result_path,
            {
                "status": "ok",
                "rounds": strategy.rounds,
                "warmup": warmup,
                "strategy_seconds": time.perf_counter() - started,
                "final_shape": [list(a.shape) for a in final],
                "final_first": float(final[0].ravel()[0]) if final else None,
            },
        )
    except Exception:  # the harness reports it; Flower would only log it
        _write(
            result_path,
            {
                "status": "error",
                "error": traceback.format_exc(),
                "strategy_seconds": time.perf_counter() - started,
            },
        )
        raise
