"""ServerApp of the apps benchmark (``fedwarden bench apps``): the app's own ``server_fn``,
unchanged, with its strategy's results recorded.

:mod:`fedwarden.bench.apps` copies this file into a copy of the user's Flower App as
``fedwarden_parity_server.py``, names it there as the ServerApp and adds two run config keys:
``fedwarden-server-fn`` (``module:attr`` of the app's ``server_fn``) and
``fedwarden-result-path``. The strategy that ``server_fn`` returns runs as it is; its
``aggregate_fit`` and ``aggregate_evaluate`` are wrapped to keep the global model and what
they report. When the run ends, however it ended, the final model (an ``.npz`` of the arrays in
order) and a JSON summary are written next to ``fedwarden-result-path``, atomically.

Imports only Flower and numpy (never fedwarden), like any Flower App.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import Context, parameters_to_ndarrays
from flwr.server import ServerApp, ServerAppComponents

_record: dict[str, Any] = {"rounds": [], "evaluations": [], "arrays": None, "num_rounds": None}


def _app_server_fn(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _recorded(components: ServerAppComponents) -> ServerAppComponents:
    strategy = components.strategy
    if strategy is None:
        raise ValueError("the app's server_fn returned no strategy")
    fit, evaluate = strategy.aggregate_fit, strategy.aggregate_evaluate

    def aggregate_fit(server_round: int, results: Any, failures: Any) -> Any:
        parameters, metrics = fit(server_round, results, failures)
        if parameters is not None:
            _record["arrays"] = parameters_to_ndarrays(parameters)
        _record["rounds"].append(
            {
                "round": server_round,
                "replies": len(results),
                "failures": len(failures),
                "num_examples": sorted(int(r.num_examples) for _, r in results),
                "time": time.time(),
            }
        )
        return parameters, metrics

    def aggregate_evaluate(server_round: int, results: Any, failures: Any) -> Any:
        loss, metrics = evaluate(server_round, results, failures)
        _record["evaluations"].append(
            {
                "round": server_round,
                "replies": len(results),
                "failures": len(failures),
                "loss": None if loss is None else float(loss),
                "metrics": {k: v for k, v in (metrics or {}).items() if _is_number(v)},
            }
        )
        return loss, metrics

    strategy.aggregate_fit = aggregate_fit  # type: ignore[method-assign]
    strategy.aggregate_evaluate = aggregate_evaluate  # type: ignore[method-assign]
    return components


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def server_fn(context: Context) -> ServerAppComponents:
    components = _app_server_fn(str(context.run_config["fedwarden-server-fn"]))(context)
    _record["num_rounds"] = components.config.num_rounds if components.config else None
    return _recorded(components)


app = ServerApp(server_fn=server_fn)


def _write(result_path: Path) -> None:
    arrays = _record["arrays"]
    if arrays is not None:
        model = result_path.with_suffix(".npz")
        tmp = model.with_name(model.stem + ".tmp.npz")
        np.savez(tmp, *arrays)
        os.replace(tmp, model)
    summary = {k: v for k, v in _record.items() if k != "arrays"}
    complete = arrays is not None and len(_record["rounds"]) == _record["num_rounds"]
    summary["status"] = "ok" if complete else "incomplete"
    tmp = result_path.with_name(result_path.name + ".tmp")
    tmp.write_text(json.dumps(summary), encoding="utf-8")
    os.replace(tmp, result_path)


@app.lifespan()
def lifespan(context: Context) -> Iterator[None]:
    started = time.time()
    yield  # the run; Flower runs what follows however it ended
    _record["seconds"] = time.time() - started
    _write(Path(str(context.run_config["fedwarden-result-path"])))
