"""The model-size benchmark's synthetic app and its in-process measurements (small sizes; the
25M-parameter run is `fedwarden bench model-size`)."""

from __future__ import annotations

import numpy as np

from fedwarden.bench import model_size, synthetic_app
from fedwarden.client import NumPyClientApp, load_app


def test_the_synthetic_app_loads_as_a_numpy_client_of_the_asked_size() -> None:
    app = load_app(
        "fedwarden.bench.synthetic_app:client_fn",
        run_config={"params": 5000},
        node_config={"partition-id": 2, "num-partitions": 4},
    )
    assert isinstance(app, NumPyClientApp)
    assert app.num_parameters == 5000
    assert app.layout.shapes == ((4, 1024), (904,))
    assert app.evaluate(app.initial_parameters()) is None  # no evaluation of its own


def test_updates_share_a_direction_and_differ_per_client_and_round() -> None:
    def update(index: int, round: int) -> np.ndarray:
        client = synthetic_app.SyntheticClient(3000, index)
        zeros = client.get_parameters({})
        new = client.fit(zeros, {"server_round": round})[0]
        return np.concatenate([a.ravel() for a in new])

    a1, b1, a2 = update(0, 1), update(1, 1), update(0, 2)
    assert not np.array_equal(a1, b1)
    assert not np.array_equal(a1, a2)
    cosine = float(a1 @ b1 / np.linalg.norm(a1) / np.linalg.norm(b1))
    assert 0.6 < cosine < 0.95  # 1 / (1 + 0.5²) = 0.8 in expectation


def test_in_process_measurements_and_their_markdown() -> None:
    measured = model_size.measure_in_process(4, 20_000)
    assert [m.name for m in measured] == [
        "updates.mean(0)",
        "Pipeline.run_round (recommended)",
        "Pipeline.run_round (fedavg)",
    ]
    assert all(m.seconds >= 0 and m.peak_extra_mb >= 0 for m in measured)
    result = model_size.ModelSizeResult(
        clients=4,
        params=20_000,
        rounds=1,
        warmup=0,
        matrix_mb=4 * 20_000 * 4 / 2**20,
        model_mb=20_000 * 4 / 2**20,
        runtime={"recommended": model_size.RuntimeResult("recommended", "failed", detail="why")},
        in_process=measured,
        method="m",
        environment=model_size.describe_environment(),
        elapsed_seconds=1.0,
    )
    text = model_size.to_markdown(result, command="fedwarden bench model-size")
    assert "| recommended | failed |" in text
    assert "- recommended: failed: why" in text
    assert "`Pipeline.run_round (fedavg)`" in text


def test_the_command_refuses_an_unknown_pipeline() -> None:
    from click.testing import CliRunner

    from fedwarden.cli import main

    result = CliRunner().invoke(main, ["bench", "model-size", "--pipelines", "krum"])
    assert result.exit_code == 2
    assert "unknown pipeline 'krum'" in result.output
