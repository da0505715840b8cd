"""Flower NumPyClients written the way Flower's documentation writes them (needs flwr)."""

from __future__ import annotations

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context

SHAPES = [(3, 2), (2,)]


class FlowerClient(NumPyClient):
    def __init__(self, partition_id: int = 0, local_epochs: int = 1) -> None:
        self.partition_id = partition_id
        self.local_epochs = local_epochs

    def get_parameters(self, config):
        return [np.zeros(s, np.float32) for s in SHAPES]

    def fit(self, parameters, config):
        step = 0.5 * self.local_epochs
        return [p + step for p in parameters], 10 + self.partition_id, {"train_loss": 0.25}

    def evaluate(self, parameters, config):
        return 1.5, 4, {"accuracy": 0.75 + 0.01 * self.partition_id}


class NoEvaluate(NumPyClient):
    """The quickstart shape without evaluate, and without get_parameters: the server gives the
    initial model."""

    def fit(self, parameters, config):
        return [p + 1 for p in parameters], 3, {}


def client_fn(context: Context):
    partition_id = context.node_config["partition-id"]
    local_epochs = context.run_config["local-epochs"]
    return FlowerClient(partition_id, local_epochs).to_client()


app = ClientApp(client_fn=client_fn)
instance = FlowerClient()


def factory():
    return FlowerClient(partition_id=2)
