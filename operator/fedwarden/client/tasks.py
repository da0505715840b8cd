"""The built-in tasks: fedwarden's own apps, on the simulation's data sets and models.

A built-in task is ``<dataset>-<model>`` with a data set of :data:`fedwarden.sim.datasets.DATASETS`
(``digits``, ``breast-cancer``, ``wine``, ``mnist1d``) and a model of
:data:`fedwarden.sim.models.MODELS` (``logreg``, ``mlp``), e.g. ``digits-logreg``. It is an
:class:`~fedwarden.client.apps.App` like any user's app, loaded the same way: ``--task NAME`` is
``--app fedwarden.client.tasks:builtin_app --app-config task=NAME``.

A client given ``--partition dirichlet:0.5 --client-index 3 --num-clients 10`` trains on shard 3
of the training set split the same way by every client, and evaluates on shard 3 of the test set
(its own held-out data); the split and the partition are seeded by ``data_seed``, which every
party of a training must share. The aggregator's view (no client index) is the whole training
set, the initial model (seeded by ``model_seed``) and the whole test set.

Record-level DP: with ``dp-epsilon`` (and ``dp-rounds``, ``dp-delta``, ``dp-clip-norm``) in its
run_config the task trains with DP-SGD under its own accountant
(:class:`~fedwarden.sim.site_dp.SiteDPSGD`): σ is calibrated so that ``dp-rounds`` rounds spend
``dp-epsilon`` at ``dp-delta``, every fit reports ``epsilon`` and ``budget_spent`` in its metrics,
and a round that would exceed the budget is refused
(:class:`~fedwarden.pipeline.errors.PrivacyBudgetExhaustedError`) before it trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedwarden.client.apps import AppError, FitResult
from fedwarden.pipeline import ParameterLayout
from fedwarden.pipeline.dp import noise_generator
from fedwarden.pipeline.evaluation import Evaluation
from fedwarden.sim.datasets import DATASETS, Dataset, load_dataset
from fedwarden.sim.models import MODELS, Model, evaluate, local_sgd, make_model
from fedwarden.sim.partition import PARTITIONS, partition
from fedwarden.sim.site_dp import SiteDPSGD

F32 = npt.NDArray[np.float32]

TASKS: tuple[str, ...] = tuple(f"{d}-{m}" for d in DATASETS for m in MODELS)
"""The built-in task names."""


def split_task_name(name: str) -> tuple[str, str]:
    """``"digits-logreg"`` -> ``("digits", "logreg")``; ``ValueError`` naming the choices."""
    for model in MODELS:
        suffix = f"-{model}"
        if name.endswith(suffix) and name[: -len(suffix)] in DATASETS:
            return name[: -len(suffix)], model
    raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")


@dataclass(frozen=True)
class PartitionSpec:
    """A partition scheme and its parameter, parsed from ``iid``, ``dirichlet:0.5``,
    ``shards:2``."""

    scheme: str = "iid"
    alpha: float = 0.5
    shards_per_client: int = 2

    @classmethod
    def parse(cls, text: str) -> PartitionSpec:
        scheme, _, param = text.partition(":")
        if scheme not in PARTITIONS:
            raise ValueError(
                f"unknown partition {text!r}; use iid, dirichlet:<alpha> or shards:<n>"
            )
        try:
            if scheme == "dirichlet":
                alpha = float(param) if param else 0.5
                if not alpha > 0:
                    raise ValueError
                return cls(scheme, alpha=alpha)
            if scheme == "shards":
                shards = int(param) if param else 2
                if shards < 1:
                    raise ValueError
                return cls(scheme, shards_per_client=shards)
        except ValueError:
            raise ValueError(
                f"bad partition parameter in {text!r}: dirichlet takes alpha > 0, shards an "
                "integer >= 1"
            ) from None
        if param:
            raise ValueError(f"the iid partition takes no parameter, got {text!r}")
        return cls(scheme)


class BuiltinTask:
    """A built-in task of the simulation (see the module docstring).

    Args:
        name: ``<dataset>-<model>``.
        partition: how the training set is split across ``num_clients`` clients.
        client_index: this client's shard; ``None``: the whole training set (the aggregator's
            view, for the initial model and evaluation).
        num_clients: how many shards.
        data_seed: seeds the train/test split and the partition; shared by the whole training.
        local_epochs, lr, batch_size: local SGD.
        hidden: hidden units of ``mlp``.
        seed: seeds the client's SGD order; ``None`` draws from the OS.
        model_seed: seeds the initial model (every aggregator restart makes the same one).
        dp_epsilon: record-level DP: this site's budget ε; ``None`` trains without DP.
        dp_delta: δ of the site's guarantee.
        dp_rounds: rounds the budget must last (needed with ``dp_epsilon``).
        dp_clip_norm: C of DP-SGD, the bound on each example's gradient.
    """

    def __init__(
        self,
        name: str,
        *,
        partition: str | PartitionSpec = "iid",
        client_index: int | None = None,
        num_clients: int = 1,
        data_seed: int = 0,
        local_epochs: int = 1,
        lr: float = 0.1,
        batch_size: int = 16,
        hidden: int = 32,
        seed: int | None = None,
        model_seed: int = 0,
        dataset: Dataset | None = None,
        dp_epsilon: float | None = None,
        dp_delta: float = 1e-5,
        dp_rounds: int | None = None,
        dp_clip_norm: float = 1.0,
    ) -> None:
        self.name = name
        self.dataset_name, self.model_name = split_task_name(name)
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        if client_index is not None and not 0 <= client_index < num_clients:
            raise ValueError(
                f"client index {client_index} is outside 0..{num_clients - 1} "
                f"(--num-clients {num_clients})"
            )
        if local_epochs < 1 or batch_size < 1 or not lr > 0:
            raise ValueError("local_epochs and batch_size must be >= 1 and lr > 0")
        self.partition = (
            partition if isinstance(partition, PartitionSpec) else PartitionSpec.parse(partition)
        )
        self.client_index = client_index
        self.num_clients = num_clients
        self.data_seed = data_seed
        self.local_epochs, self.lr, self.batch_size = local_epochs, lr, batch_size
        self.dataset = (
            dataset if dataset is not None else load_dataset(self.dataset_name, seed=data_seed)
        )
        self.model: Model = make_model(
            self.model_name, self.dataset.n_features, self.dataset.n_classes, hidden=hidden
        )
        if client_index is None:
            self.x, self.y = self.dataset.x_train, self.dataset.y_train
        else:
            parts = partition_indices(self.dataset.y_train, num_clients, self.partition, data_seed)
            idx = parts[client_index]
            self.x, self.y = self.dataset.x_train[idx], self.dataset.y_train[idx]
        self.x_test, self.y_test = self.dataset.x_test, self.dataset.y_test
        if client_index is not None:
            held_out = partition_indices(
                self.dataset.y_test, num_clients, PartitionSpec(), data_seed
            )[client_index]
            self.x_test, self.y_test = self.x_test[held_out], self.y_test[held_out]
        self.model_seed = model_seed
        self._rng = np.random.default_rng(seed)
        self.site_dp: SiteDPSGD | None = None
        if dp_epsilon is not None:
            if dp_rounds is None:
                raise ValueError("dp-epsilon needs dp-rounds, the rounds the budget must last")
            self.site_dp = SiteDPSGD(
                target_epsilon=float(dp_epsilon),
                delta=float(dp_delta),
                rounds=int(dp_rounds),
                num_examples=len(self.y),
                batch_size=batch_size,
                local_epochs=local_epochs,
                clip_norm=float(dp_clip_norm),
            )
            # the DP-SGD noise must not be predictable: from the OS CSPRNG, whatever `seed` is
            self._dp_rng = noise_generator(None)

    @property
    def num_parameters(self) -> int:
        return int(self.model.dim)

    @property
    def num_examples(self) -> int:
        return len(self.y)

    @property
    def layout(self) -> ParameterLayout:
        return self.model.layout

    def initial_parameters(self) -> F32:
        """The initial global model (seeded by ``model_seed``)."""
        return self.model.init(np.random.default_rng(self.model_seed)).astype(np.float32)

    def fit(self, global_params: F32, round: int) -> FitResult:
        params = np.asarray(global_params, dtype=np.float32)
        if self.site_dp is not None:
            new = self.site_dp.train(
                self.model, params, self.x, self.y, lr=self.lr, rng=self._dp_rng
            )
            # only what DP-SGD released: train metrics on the private data would leak
            update = (new - params).astype(np.float32)
            privacy = {
                "epsilon": self.site_dp.epsilon,
                "budget_spent": float(self.site_dp.budget_spent),
            }
            return FitResult(update, len(self.y), privacy)
        new = local_sgd(
            self.model,
            params,
            self.x,
            self.y,
            epochs=self.local_epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            rng=self._rng,
        )
        accuracy, loss = evaluate(self.model, new, self.x, self.y)
        update = (new - params).astype(np.float32)
        return FitResult(update, len(self.y), {"train_accuracy": accuracy, "train_loss": loss})

    def evaluate(self, parameters: F32) -> Evaluation | None:
        """Accuracy and loss on the held-out data: this client's shard of the test set, or
        the whole test set for the aggregator's view; ``None`` for a shard left empty."""
        if not len(self.y_test):
            return None
        accuracy, loss = evaluate(self.model, parameters, self.x_test, self.y_test)
        return Evaluation(len(self.y_test), {"accuracy": float(accuracy), "loss": float(loss)})


def partition_indices(
    labels: npt.ArrayLike, num_clients: int, spec: PartitionSpec, data_seed: int
) -> list[npt.NDArray[np.intp]]:
    """The partition every party of a training computes alike from ``data_seed``."""
    return partition(
        labels,
        num_clients,
        scheme=spec.scheme,
        alpha=spec.alpha,
        shards_per_client=spec.shards_per_client,
        rng=np.random.default_rng([data_seed, 1]),
    )


def builtin_app(context: Any) -> BuiltinTask:
    """A built-in task as a ``client_fn(context)``: what ``--task`` loads.

    ``run_config``: ``task`` (required), ``partition``, ``data-seed``, ``model-seed``,
    ``local-epochs``, ``lr``, ``batch-size``, ``hidden``, ``seed``, and for record-level DP
    ``dp-epsilon``, ``dp-delta``, ``dp-rounds``, ``dp-clip-norm``; ``node_config``:
    ``partition-id`` (absent: the aggregator's view) and ``num-partitions``.
    """
    run: dict[str, Any] = dict(context.run_config)
    node: dict[str, Any] = dict(context.node_config)
    name = run.pop("task", None)
    if not isinstance(name, str):
        raise AppError("the built-in app needs run_config task=<dataset>-<model>")
    options = {key.replace("-", "_"): value for key, value in run.items()}
    unknown = set(options) - _BUILTIN_OPTIONS
    if unknown:
        raise AppError(
            "unknown setting(s) of the built-in task: "
            + ", ".join(sorted(k.replace("_", "-") for k in unknown))
            + "; it takes "
            + ", ".join(sorted(k.replace("_", "-") for k in _BUILTIN_OPTIONS))
        )
    for real in ("lr", "dp_epsilon", "dp_delta", "dp_clip_norm"):
        if real in options:
            options[real] = float(options[real])
    if "partition" in options:
        options["partition"] = str(options["partition"])
    index = node.get("partition-id")
    try:
        return BuiltinTask(
            name,
            client_index=None if index is None else int(index),
            num_clients=int(node.get("num-partitions", 1)),
            **options,
        )
    except (TypeError, ValueError) as exc:
        raise AppError(str(exc)) from exc


_BUILTIN_OPTIONS = frozenset(
    {
        "partition",
        "data_seed",
        "model_seed",
        "local_epochs",
        "lr",
        "batch_size",
        "hidden",
        "seed",
        "dp_epsilon",
        "dp_delta",
        "dp_rounds",
        "dp_clip_norm",
    }
)
