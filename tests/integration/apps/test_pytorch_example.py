"""The PyTorch example (examples/apps/pytorch_digits) trained end to end over mTLS.

Five sites, each a :class:`~fedwarden.client.FederationClient` running the app as ``fedwarden
client --app pytorch_digits.client_app:client_fn`` loads it, against an aggregator with the
pipeline of ``fedwarden aggregator --dp central --target-epsilon 200`` (fedwarden's recommended
defences under central DP: per-update validation, adaptive clipping, DP-FedAvg) and federated
evaluation. The model the aggregator reports on is then loaded back into the PyTorch ``Net``
and must give the same numbers on the same data.

ε = 200 is what five sites can afford for this model to learn (docs/apps.md, "A PyTorch app",
has the measurements); the noise is seeded, so the run is reproducible.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.integration.runtime.runtime_helpers import TIMEOUT, RuntimePKI

from fedwarden.aggregator import Aggregator, AggregatorConfig, RecordingReporter, RoundFinished
from fedwarden.client import App, AppError, Evaluation, FederationClient, FitResult, load_app
from fedwarden.commands._pipeline_options import pipeline_config
from fedwarden.pipeline.evaluation import combine_client_evaluations
from fedwarden.pipeline.round import Pipeline
from fedwarden.wire import tensor_digest

torch = pytest.importorskip(
    "torch", reason="the PyTorch example needs torch (make install-torch installs it)"
)
EXAMPLES = Path(__file__).parents[3] / "examples" / "apps"
# the example's own modules, as `--app` imports them (from the directory the command runs in)
sys.path.insert(0, str(EXAMPLES))
from pytorch_digits import task  # noqa: E402

APP = "pytorch_digits.client_app:client_fn"
SITES = 5
ROUNDS = 10
TARGET_EPSILON = 200.0
ACCURACY_FLOOR = 0.75  # the seeded run reports 0.90, and its final model has 0.90; chance: 0.10

# the aggregator's options, as `fedwarden aggregator` takes them (docs/apps.md's command)
AGGREGATOR_OPTIONS: dict[str, Any] = {
    "defence": "recommended",
    "aggregator": None,
    "agg_params": {},
    "clipping": None,
    "clip_norm": None,
    "clip_quantile": None,
    "free_rider_detection": None,
    "strikes_to_ban": None,
    "dp": "central",
    "target_epsilon": TARGET_EPSILON,
    "delta": 1e-5,
    "noise_multiplier": None,
    "accountant": "pld",
}


class ModelsSeen:
    """An app that keeps, by digest, every global model it was asked to evaluate."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.models: dict[str, np.ndarray] = {}

    @property
    def layout(self) -> Any:
        return self.app.layout

    @property
    def num_parameters(self) -> int:
        return self.app.num_parameters

    def initial_parameters(self) -> np.ndarray:
        return self.app.initial_parameters()

    def fit(self, global_params: np.ndarray, round: int) -> FitResult:
        return self.app.fit(global_params, round)

    def evaluate(self, parameters: np.ndarray) -> Evaluation | None:
        self.models[tensor_digest(parameters).hex()] = np.array(parameters, copy=True)
        return self.app.evaluate(parameters)


def _load(partition_id: int, num_partitions: int) -> Any:
    return load_app(
        APP,
        run_config={"shuffle-seed": partition_id},
        node_config={"partition-id": partition_id, "num-partitions": num_partitions},
        search_path=[EXAMPLES],
    )


def _into_pytorch(parameters: np.ndarray, layout: Any) -> Any:
    """A fresh ``Net`` with the flat parameters, through their ``state_dict`` names."""
    net = task.Net()
    task.set_weights(net, layout.split(parameters))
    return net


@pytest.mark.slow
def test_the_pytorch_example_trains_with_dp_and_its_reported_accuracy_reproduces(
    tmp_path: Path,
) -> None:
    torch.set_num_threads(1)  # five sites share two cores with the aggregator
    pki = RuntimePKI.create(tmp_path)
    server_app = _load(0, 1)
    initial = server_app.initial_parameters()
    pipeline = Pipeline(
        pipeline_config(AGGREGATOR_OPTIONS, rounds=ROUNDS, sample_rate=1.0, sampling="poisson"),
        dim=int(initial.size),
        population=SITES,
        seed=0,
    )
    recording = RecordingReporter()
    agg = Aggregator(
        AggregatorConfig(
            rounds=ROUNDS,
            fraction=1.0,
            min_available=SITES,
            sampling="poisson",
            seed=0,
            round_timeout=120.0,
            stall_timeout=15.0,
            poll_timeout=1.0,
            finish_grace=3.0,
        ),
        pipeline,
        initial,
        tls=pki.tls(),
        reporter=recording,
        evaluator=None,  # federated evaluation: the sites evaluate on their held-out images
        layout=server_app.layout,
    )
    agg.start(timeout=TIMEOUT)
    sites = {f"site-{i}": ModelsSeen(_load(i, SITES)) for i in range(SITES)}
    clients = {
        name: FederationClient(pki.client_config(name, agg.port), app)
        for name, app in sites.items()
    }
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, clients[n].run()), daemon=True)
        for n in clients
    ]
    try:
        for t in threads:
            t.start()
        finished = agg.wait(TIMEOUT * ROUNDS)
        for t in threads:
            t.join(TIMEOUT)
    finally:
        agg.stop()
    assert finished is not None
    assert finished.status == "completed", finished.message
    assert {r.status for r in results.values()} == {"done"}
    assert 0 < finished.epsilon <= TARGET_EPSILON

    rounds = recording.of(RoundFinished)
    assert [r.round for r in rounds] == list(range(1, ROUNDS + 1))
    for record in rounds:
        assert record.metrics["noise_std"] > 0
        assert record.metrics["evaluated_by"] == len(record.accepted) == SITES
        assert record.metrics["evaluated_round"] == record.round - 1

    # the last report is the sites' evaluation of the model after the round before it: that
    # model (identified by the aggregator's digest), loaded into the PyTorch Net, gives the
    # same per-site numbers, which combine into the same reported accuracy
    last = rounds[-1]
    evaluated_digest = rounds[-2].model_digest
    evaluated = sites["site-0"].models[evaluated_digest]
    net = _into_pytorch(evaluated, server_app.layout)
    reports = []
    for name in last.accepted:
        _train, held_out = task.load_data(int(name.removeprefix("site-")), SITES)
        loss, accuracy, examples = task.test(net, held_out)
        reports.append(Evaluation(examples, {"accuracy": accuracy, "loss": loss}))
    reproduced = combine_client_evaluations(reports)
    for metric in ("accuracy", "accuracy_mean", "loss", "evaluated_examples"):
        assert reproduced[metric] == pytest.approx(last.metrics[metric], rel=1e-6), metric
    assert last.metrics["accuracy"] >= ACCURACY_FLOOR

    # the final model, the one a user takes away, is above the floor on the whole test set
    assert tensor_digest(agg.model).hex() == last.model_digest
    _train, whole_test_set = task.load_data(0, 1)
    _loss, accuracy, _examples = task.test(
        _into_pytorch(agg.model, server_app.layout), whole_test_set
    )
    assert accuracy >= ACCURACY_FLOOR


def test_the_app_names_its_tensors_as_the_state_dict_does() -> None:
    app = _load(2, SITES)
    net = task.Net()
    assert list(app.layout.names) == list(net.state_dict())
    assert app.num_parameters == sum(p.numel() for p in net.parameters()) == 1898
    # what the aggregator starts from is the same model at every site and every restart
    np.testing.assert_array_equal(app.initial_parameters(), _load(0, 1).initial_parameters())


def test_a_mistyped_setting_is_named() -> None:
    with pytest.raises(AppError, match=r"unknown --app-config key\(s\) local-epoch;"):
        load_app(APP, run_config={"local-epoch": 3}, search_path=[EXAMPLES])
