"""The PyTorch model of task.py as a fedwarden app: what ``--app`` names.

``fedwarden client --app pytorch_digits.client_app:client_fn`` (and the aggregator, for the
initial model) calls :func:`client_fn` with a Flower-style context: ``node_config`` carries
``partition-id`` and ``num-partitions`` (``--client-index``, ``--num-clients``), ``run_config``
the ``--app-config KEY=VALUE`` settings.

The app speaks flat float32 vectors, cut into tensors by its :attr:`DigitsApp.layout`, whose
names are the ``state_dict``'s: the trained model fedwarden writes out loads straight into
:class:`~pytorch_digits.task.Net` with ``load_state_dict``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from fedwarden.client import Evaluation, FitResult
from fedwarden.pipeline import ParameterLayout
from pytorch_digits.task import Net, get_weights, load_data, set_weights, test, train

F32 = npt.NDArray[np.float32]


class DigitsApp:
    """One site's model and data.

    Args:
        partition_id, num_partitions: this site's share of the data (task.load_data).
        local_epochs, lr, batch_size: the local training of each round.
        data_seed: the train/test split and the shares; the same at every site.
        model_seed: the initial model (only the aggregator's is used).
        shuffle_seed: the order of the training batches; ``None``: random.
    """

    def __init__(
        self,
        partition_id: int,
        num_partitions: int,
        *,
        local_epochs: int = 2,
        lr: float = 0.05,
        batch_size: int = 32,
        data_seed: int = 0,
        model_seed: int = 0,
        shuffle_seed: int | None = None,
    ) -> None:
        torch.manual_seed(model_seed)
        self.net = Net()
        self.layout = ParameterLayout.of_named(get_weights(self.net))
        self._initial = self.layout.join(get_weights(self.net))
        self.trainloader, self.testloader = load_data(
            partition_id,
            num_partitions,
            batch_size=batch_size,
            data_seed=data_seed,
            shuffle_seed=shuffle_seed,
        )
        self.local_epochs = local_epochs
        self.lr = lr

    @property
    def num_parameters(self) -> int:
        return self.layout.size

    def initial_parameters(self) -> F32:
        return self._initial.copy()

    def load(self, parameters: F32) -> None:
        """Put a flat parameter vector into the PyTorch model."""
        set_weights(self.net, self.layout.split(parameters))

    def fit(self, global_params: F32, round: int) -> FitResult:
        """Train from the global model; the update is the new weights minus the global ones."""
        self.load(global_params)
        loss = train(self.net, self.trainloader, epochs=self.local_epochs, lr=self.lr)
        update = self.layout.join(get_weights(self.net)) - global_params
        return FitResult(update, len(self.trainloader.dataset), {"train_loss": loss})

    def evaluate(self, parameters: F32) -> Evaluation | None:
        """Loss and accuracy on this site's held-out images; ``None`` when it has none."""
        self.load(parameters)
        loss, accuracy, examples = test(self.net, self.testloader)
        if not examples:
            return None
        return Evaluation(examples, {"accuracy": accuracy, "loss": loss})


SETTINGS: dict[str, tuple[str, type]] = {
    "local-epochs": ("local_epochs", int),
    "lr": ("lr", float),
    "batch-size": ("batch_size", int),
    "data-seed": ("data_seed", int),
    "model-seed": ("model_seed", int),
    "shuffle-seed": ("shuffle_seed", int),
}
"""``run_config`` key -> (:class:`DigitsApp` argument, type)."""


def client_fn(context: Any) -> DigitsApp:
    """The app for one site, from its context (see the module docstring)."""
    node, run = context.node_config, context.run_config
    unknown = set(run) - set(SETTINGS)
    if unknown:
        raise ValueError(
            f"unknown --app-config key(s) {', '.join(sorted(unknown))}; "
            f"the app takes {', '.join(SETTINGS)}"
        )
    settings = {SETTINGS[key][0]: SETTINGS[key][1](value) for key, value in run.items()}
    return DigitsApp(
        int(node.get("partition-id", 0)), int(node.get("num-partitions", 1)), **settings
    )
