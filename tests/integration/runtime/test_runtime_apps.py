"""Users' apps over the real channel: a Flower NumPyClient with no model of its own takes the
aggregator's layout, clients evaluate each round's model and the aggregator combines their
claims; an app that fails stops its own client with the reason, and the training goes on."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
from runtime_helpers import TIMEOUT, RuntimePKI, make_aggregator

from fedwarden.aggregator import RoundFinished
from fedwarden.client import FederationClient, NumPyClientApp
from fedwarden.pipeline import ParameterLayout
from fedwarden.pipeline.round import PipelineConfig

LAYOUT = ParameterLayout(("weight", "bias"), ((3, 2), (2,)))
RUN = [sys.executable, "-c", "from fedwarden.cli import main; main()"]
FIXTURES = Path(__file__).parents[2] / "unit" / "client" / "apps_fixtures"


class QuickstartClient:
    """Flower's quickstart shape: no get_parameters (the server has the initial model), a fit
    that returns the new arrays, an evaluate on the site's own held-out data."""

    def __init__(self, site: int, nan_after: int | None = None) -> None:
        self.site = site
        self.nan_after = nan_after
        self.rounds = 0
        self.seen_shapes: list[tuple[int, ...]] = []

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return []

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        self.rounds += 1
        self.seen_shapes = [p.shape for p in parameters]
        new = [p + 0.01 * (1 + 0.1 * self.site) for p in parameters]
        if self.nan_after is not None and self.rounds > self.nan_after:
            new[1][0] = np.nan
        return new, 20 + self.site, {"train_loss": 1.0 / self.rounds}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        # a liar among honest sites: site 3 claims perfect accuracy on a million examples
        if self.site == 3:
            return 0.0, 1_000_000, {"accuracy": 1.0}
        return 0.5, 10, {"accuracy": 0.6 + 0.01 * self.site}


def _run(clients: dict[str, FederationClient]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, clients[n].run()), daemon=True)
        for n in clients
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 4)
    return results


def test_flower_clients_take_the_layout_and_evaluate_each_round(runtime_pki: RuntimePKI) -> None:
    agg, recording = make_aggregator(
        runtime_pki,
        rounds=3,
        min_available=4,
        dim=LAYOUT.size,
        layout=LAYOUT,
        pipeline_config=PipelineConfig.plain_fedavg(),
    )
    apps = {f"site-{i}": QuickstartClient(i) for i in range(4)}
    clients = {
        name: FederationClient(runtime_pki.client_config(name, agg.port), NumPyClientApp(app))
        for name, app in apps.items()
    }
    try:
        results = _run(clients)
        finished = agg.wait(TIMEOUT)
    finally:
        agg.stop()
    assert finished is not None
    assert finished.status == "completed"
    assert {r.status for r in results.values()} == {"done"}
    assert apps["site-0"].seen_shapes == [(3, 2), (2,)]
    rounds = recording.of(RoundFinished)
    assert [r.round for r in rounds] == [1, 2, 3]
    for record in rounds:
        metrics = record.metrics
        assert metrics["evaluated_by"] == 4
        assert metrics["evaluated_round"] == record.round - 1
        # the median holds the honest range (0.60-0.62) against the liar's 1.0, and the
        # liar's million examples weigh no more than the median count in the mean
        assert 0.60 <= metrics["accuracy"] <= 0.62
        assert metrics["accuracy_mean"] < 0.72
    # plain FedAvg weighs each site's step by its 20 + site examples, three rounds long
    steps = 0.01 * np.array([1.0, 1.1, 1.2, 1.3])
    expected = 3 * np.average(steps, weights=[20, 21, 22, 23])
    np.testing.assert_allclose(agg.model, np.full(LAYOUT.size, expected), rtol=1e-5)


def test_an_app_that_returns_nan_stops_its_own_client_only(runtime_pki: RuntimePKI) -> None:
    agg, recording = make_aggregator(
        runtime_pki,
        rounds=3,
        min_available=3,
        dim=LAYOUT.size,
        layout=LAYOUT,
        pipeline_config=PipelineConfig.plain_fedavg(),
        round_timeout=20.0,
    )
    apps = {f"site-{i}": QuickstartClient(i, nan_after=1 if i == 2 else None) for i in range(3)}
    clients = {
        name: FederationClient(runtime_pki.client_config(name, agg.port), NumPyClientApp(app))
        for name, app in apps.items()
    }
    try:
        results = _run(clients)
        agg.wait(TIMEOUT * 2)
    finally:
        agg.stop()
    broken = results["site-2"]
    assert (broken.status, broken.reason, broken.exit_code) == ("failed", "app-error", 1)
    assert "1 of 8 values are NaN or infinite" in broken.message
    assert [r.status for r in broken.rounds] == ["accepted"]
    assert results["site-0"].status == "done"
    assert [r.round for r in recording.of(RoundFinished)] == [1, 2, 3]
    assert all(np.isfinite(agg.model))


def test_client_processes_name_a_broken_app_in_one_line(runtime_pki: RuntimePKI) -> None:
    agg, _ = make_aggregator(runtime_pki, rounds=1, min_available=1, dim=4)
    tls = runtime_pki.client("site-0").root
    try:
        for app, expected in (
            ("no_such_module:client_fn", "no module named 'no_such_module'"),
            ("broken:not_an_app", "neither a fedwarden app"),
            ("broken:RaisesInFit", "fit raised RuntimeError: CUDA out of memory"),
        ):
            done = subprocess.run(
                [*RUN, "client", "--tls-dir", str(tls), "--server", f"127.0.0.1:{agg.port}",
                 "--app", app, "--json", "--give-up-after", "30"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False,
                cwd=FIXTURES,
            )  # fmt: skip
            stderr = done.stderr.decode()
            assert done.returncode == 1, stderr[-2000:]
            assert expected in stderr + done.stdout.decode()
            assert "Traceback" not in stderr
            if app == "broken:RaisesInFit":
                assert json.loads(done.stdout)["reason"] == "app-error"
        assert agg.wait(0) is None  # the aggregator is unaffected, still waiting for a round
    finally:
        agg.stop()
