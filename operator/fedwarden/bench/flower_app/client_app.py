"""ClientApp of the round-overhead benchmark: a fixed update, no training.

Runs inside a Flower App (see the package docstring); imports only Flower and numpy.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()

_UPDATES: dict[int, np.ndarray] = {}


def fixed_update(params: int) -> np.ndarray:
    """The update every client returns: ``params`` float32 values of 0.001 (cached)."""
    update = _UPDATES.get(params)
    if update is None:
        update = np.full(params, 0.001, dtype=np.float32)
        _UPDATES[params] = update
    return update


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Answer at once with the fixed update; the received model is not used."""
    params = int(context.run_config["params"])
    content = RecordDict(
        {
            "arrays": ArrayRecord([fixed_update(params)]),
            "metrics": MetricRecord({"num-examples": 1}),
        }
    )
    return Message(content=content, reply_to=msg)
