"""The built-in tasks, backoff and settings."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from fedwarden.client import (
    TASKS,
    Backoff,
    BuiltinTask,
    ClientConfig,
    ClientResult,
    PartitionSpec,
    Task,
    split_task_name,
)


def test_task_names() -> None:
    assert "digits-logreg" in TASKS
    assert split_task_name("breast-cancer-mlp") == ("breast-cancer", "mlp")
    with pytest.raises(ValueError, match="unknown task 'digits-cnn'"):
        split_task_name("digits-cnn")


def test_partition_specs() -> None:
    assert PartitionSpec.parse("dirichlet:0.3") == PartitionSpec("dirichlet", alpha=0.3)
    assert PartitionSpec.parse("shards:3").shards_per_client == 3
    assert PartitionSpec.parse("iid") == PartitionSpec()
    for bad in ("dirichlet:-1", "shards:x", "iid:2", "random"):
        with pytest.raises(ValueError, match="partition"):
            PartitionSpec.parse(bad)


def test_clients_train_on_disjoint_shards_of_one_split() -> None:
    shards = [
        BuiltinTask("digits-logreg", partition="dirichlet:0.5", client_index=i, num_clients=5)
        for i in range(5)
    ]
    whole = BuiltinTask("digits-logreg")
    assert sum(t.num_examples for t in shards) == whole.num_examples
    assert isinstance(shards[0], Task)
    params = whole.initial_parameters()
    update, n, metrics = shards[3].fit(params, 1)
    assert update.dtype == np.float32
    assert update.shape == (whole.num_parameters,)
    assert n == shards[3].num_examples
    assert "train_accuracy" in metrics
    evaluated = whole.evaluate(params)
    assert evaluated is not None
    assert evaluated.num_examples == len(whole.dataset.y_test)
    assert 0.0 <= evaluated.metrics["accuracy"] <= 1.0
    held_out = [shard.evaluate(params) for shard in shards]
    assert sum(e.num_examples for e in held_out if e is not None) == evaluated.num_examples
    with pytest.raises(ValueError, match=r"outside 0\.\.4"):
        BuiltinTask("digits-logreg", client_index=5, num_clients=5)


def test_backoff_doubles_with_jitter_up_to_a_cap() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    waits = [backoff.next() for _ in range(6)]
    for wait, ceiling in zip(waits, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert ceiling / 2 <= wait <= ceiling
    backoff.reset()
    assert backoff.next() <= 0.5


def test_client_config_and_result(tmp_path: Path) -> None:
    files = {"cert": tmp_path / "c", "key": tmp_path / "k", "ca": tmp_path / "a"}
    with pytest.raises(ValueError, match="host:port"):
        ClientConfig(server="localhost", **files)
    with pytest.raises(ValueError, match="both a clip norm and a noise multiplier"):
        ClientConfig(server="127.0.0.1:1", local_dp_clip=1.0, **files)
    assert ClientResult("a", "refused", "revoked", "").exit_code == 3
    assert ClientResult("a", "unreachable", "unreachable", "").exit_code == 4
    assert ClientResult("a", "done", "completed", "").to_dict()["exit_code"] == 0
