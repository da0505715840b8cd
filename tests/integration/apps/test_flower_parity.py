"""The Flower quickstart app, unchanged, trains under fedwarden (mutual TLS, signed updates) to
within 2 points of the accuracy it reaches under Flower's own runtime, same rounds and data
split (issue 12, "What must be shown 2").

Both runs are deterministic: the app's data split is seeded, its training (L-BFGS) has no
randomness, and every round waits for every client in both runtimes, so the result does not
depend on how the machine schedules the processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedwarden.bench import apps

pytest.importorskip("flwr")
pytest.importorskip("sklearn")

QUICKSTART = Path(__file__).parents[3] / "examples" / "apps" / "flower_quickstart"


@pytest.mark.slow
@pytest.mark.flower
def test_the_quickstart_reaches_flowers_accuracy_under_fedwarden() -> None:
    app = apps.FlowerApp.load(QUICKSTART)
    result = apps.run(
        app,
        clients=3,
        rounds=3,
        sides=(apps.FLOWER, apps.FEDWARDEN_FEDAVG),
        timeout=1800.0,
    )
    flower, fedwarden = result.sides[apps.FLOWER], result.sides[apps.FEDWARDEN_FEDAVG]
    assert flower.status == "ok", flower.detail
    assert fedwarden.status == "ok", fedwarden.detail
    assert flower.accuracy is not None
    assert flower.accuracy > 0.8  # it learned: chance is 0.1
    assert result.difference is not None
    assert result.difference <= apps.TOLERANCE
    assert result.passed
    # fedwarden's clients reported their own evaluations over the signed channel
    last = fedwarden.reported["rounds"][-1]
    assert last["aggregated"] == 3
    assert last["metrics"]["evaluated_by"] == 3
