"""FedwardenStrategy under Flower's own FedTrimmedAvg example configuration.

Flower's example: fraction 0.3 of 10 available nodes, at least 5 per round, trim 10%, norm
clipping 1.0. The Grid here runs the nodes' train functions in-process (Flower's transport is
not what is under test); the strategy code paths are Flower's own (``Strategy.start``).
"""

from collections.abc import Callable, Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedTrimmedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedwarden.flower.strategy import FedwardenStrategy
from fedwarden.pipeline.round import ClippingConfig, PipelineConfig, PrivacyConfig
from fedwarden.sim.datasets import load_dataset
from fedwarden.sim.models import evaluate, local_sgd, make_model
from fedwarden.sim.partition import partition

Node = Callable[[Message], Message]
NODES = 10
POISONERS = {1, 2}


class LocalGrid(Grid):
    """Delivers each message to an in-process node function and returns its reply."""

    def __init__(self, nodes: dict[int, Node]) -> None:
        self.nodes = nodes

    def set_run(self, run):  # pragma: no cover - not used by Strategy.start
        self._run = run

    @property
    def run(self):  # pragma: no cover
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages):  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout=None) -> Iterable[Message]:
        return [self.nodes[m.metadata.dst_node_id](m) for m in messages]


@pytest.fixture(scope="module", autouse=True)
def serverapp_identity():
    """Flower's messages take their run and node ids from the running ServerApp's identity."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture(scope="module")
def federation():
    data = load_dataset("digits", seed=0)
    model = make_model("logreg", data.n_features, data.n_classes)
    shards = partition(data.y_train, NODES, scheme="iid", rng=np.random.default_rng(0))

    def node(index: int) -> Node:
        x, y = data.x_train[shards[index]], data.y_train[shards[index]]
        rng = np.random.default_rng(100 + index)

        def train(message: Message) -> Message:
            params = message.content["arrays"].to_numpy_ndarrays()[0]
            if message.metadata.message_type.startswith("evaluate"):
                return Message(
                    RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=message
                )
            trained = local_sgd(model, params, x, y, epochs=1, lr=0.1, batch_size=16, rng=rng)
            if index in POISONERS:  # boosted, sign-flipped update that claims a huge data set
                trained = params - 50.0 * (trained - params)
            examples = 10**9 if index in POISONERS else len(y)
            reply = RecordDict(
                {
                    "arrays": ArrayRecord({"0": Array(trained.astype(np.float32))}),
                    "metrics": MetricRecord({"num-examples": examples}),
                }
            )
            return Message(reply, reply_to=message)

        return train

    grid = LocalGrid({i: node(i) for i in range(NODES)})
    initial = ArrayRecord({"0": Array(model.init(np.random.default_rng(1)))})

    def accuracy(arrays: ArrayRecord) -> float:
        return evaluate(model, arrays.to_numpy_ndarrays()[0], data.x_test, data.y_test)[0]

    return grid, initial, accuracy


FLOWER_EXAMPLE = {
    "fraction_train": 0.3,
    "min_train_nodes": 5,
    "min_available_nodes": 10,
    "fraction_evaluate": 0.0,
}


def test_fedwarden_strategy_holds_where_fedtrimmedavg_does_not(federation):
    grid, initial, accuracy = federation
    flower = FedTrimmedAvg(beta=0.1, **FLOWER_EXAMPLE)
    flower_result = flower.start(grid=grid, initial_arrays=initial, num_rounds=8)
    ours = FedwardenStrategy(
        PipelineConfig(
            aggregator="trimmed-mean",
            aggregator_params={"beta": 0.1},
            clipping=ClippingConfig(mode="fixed", clip_norm=1.0),
        ),
        seed=0,
        **FLOWER_EXAMPLE,
    )
    our_result = ours.start(grid=grid, initial_arrays=initial, num_rounds=8)
    ours_accuracy = accuracy(our_result.arrays)
    assert ours_accuracy > 0.8
    assert ours_accuracy > accuracy(flower_result.arrays) + 0.3
    poisoners = {str(i) for i in POISONERS}
    sampled_poisoners = {c for r in ours.history for c in (*r.accepted, *r.rejected)} & poisoners
    assert sampled_poisoners, "the poisoners were sampled"
    # refused when the cohort statistics expose them; clipped to 1.0 when two of five hide it
    assert any(c in r.rejected for r in ours.history for c in poisoners)


def test_banned_nodes_are_no_longer_sampled(federation):
    grid, initial, _ = federation
    ours = FedwardenStrategy(seed=0, **(FLOWER_EXAMPLE | {"fraction_train": 1.0}))
    ours.start(grid=grid, initial_arrays=initial, num_rounds=4)
    assert ours.pipeline is not None
    assert ours.pipeline.banned == {str(i) for i in POISONERS}
    last_round_clients = set(ours.history[-1].accepted) | set(ours.history[-1].rejected)
    assert not last_round_clients & ours.pipeline.banned


def test_a_malformed_reply_is_refused_alone(federation):
    grid, initial, _ = federation
    nodes = dict(grid.nodes)

    def wrong_shape(message: Message) -> Message:
        reply = RecordDict(
            {
                "arrays": ArrayRecord({"0": Array(np.zeros(3, np.float32))}),
                "metrics": MetricRecord({"num-examples": 5}),
            }
        )
        return Message(reply, reply_to=message)

    nodes[9] = wrong_shape
    ours = FedwardenStrategy(seed=0, **(FLOWER_EXAMPLE | {"fraction_train": 1.0}))
    ours.start(grid=LocalGrid(nodes), initial_arrays=initial, num_rounds=1)
    assert "has 3 values, the model has 650" in ours.history[0].rejected["9"]
    assert len(ours.history[0].accepted) >= 6


def test_record_level_dp_takes_each_nodes_epsilon_from_its_train_metrics(federation):
    grid, initial, _ = federation
    nodes = dict(grid.nodes)

    def reporting(index: int, epsilon: float | None) -> Node:
        def train(message: Message) -> Message:
            reply = grid.nodes[index](message)
            if epsilon is not None and not message.metadata.message_type.startswith("evaluate"):
                reply.content["metrics"]["epsilon"] = epsilon
            return reply

        return train

    for index in range(NODES):
        nodes[index] = reporting(index, None if index == 0 else 0.1 * (index % 5))
    nodes[9] = reporting(9, 1.5)  # past the budget
    record = PipelineConfig.recommended(PrivacyConfig(mode="record", target_epsilon=1.0))
    ours = FedwardenStrategy(record, seed=0, **(FLOWER_EXAMPLE | {"fraction_train": 1.0}))
    ours.start(grid=LocalGrid(nodes), initial_arrays=initial, num_rounds=1)
    rejected = ours.history[0].rejected
    assert "no record-level epsilon" in rejected["0"]
    assert "over budget" in rejected["9"]
    assert ours.pipeline is not None
    assert ours.pipeline.epsilon == pytest.approx(0.4)  # the largest accepted report
