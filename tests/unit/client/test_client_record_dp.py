"""A site under announced record-level DP: its app's ε goes into the envelope, or nothing does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedwarden.client import AppError, ClientConfig, FederationClient
from fedwarden.client.tasks import BuiltinTask
from fedwarden.pipeline.errors import PrivacyBudgetExhaustedError
from fedwarden.wire import pb


def site(announced: dict[str, object]) -> FederationClient:
    config = ClientConfig(server="127.0.0.1:1", cert=Path("c"), key=Path("k"), ca=Path("a"))
    client = FederationClient(config, BuiltinTask("wine-logreg"))
    client._join = pb.JoinReply(task_json=json.dumps(announced))
    return client


RECORD = {"record_dp": {"target_epsilon": 1.0, "delta": 1e-5, "rounds": 5}}


def test_the_apps_epsilon_and_budget_go_into_the_envelope() -> None:
    client = site(RECORD)
    assert client._site_privacy({"epsilon": 0.4}, 1) == (0.4, False)
    assert client._site_privacy({"epsilon": 1.0, "budget_spent": 1.0}, 5) == (1.0, True)


def test_an_update_past_the_budget_is_never_sent() -> None:
    with pytest.raises(PrivacyBudgetExhaustedError, match="the update is not sent"):
        site(RECORD)._site_privacy({"epsilon": 1.2}, 6)


def test_an_app_that_reports_no_epsilon_cannot_take_part() -> None:
    with pytest.raises(AppError, match="report the ε it has spent"):
        site(RECORD)._site_privacy({"train_accuracy": 0.9}, 1)


def test_without_record_level_dp_nothing_is_reported() -> None:
    assert site({})._site_privacy({"epsilon": 0.4}, 1) is None


def test_the_builtin_app_takes_its_dp_sgd_settings_from_run_config() -> None:
    from fedwarden.client.apps import AppContext
    from fedwarden.client.tasks import builtin_app

    run_config = {"task": "wine-logreg", "lr": 0.1, "dp-epsilon": 1, "dp-rounds": 3}
    node_config = {"partition-id": 0, "num-partitions": 2}
    app = builtin_app(AppContext(node_config=node_config, run_config=run_config))
    assert app.name == "wine-logreg"
    assert app.site_dp is not None
    fit = app.fit(app.initial_parameters(), 1)
    assert 0 < fit.metrics["epsilon"] < 1.0
    assert fit.metrics["budget_spent"] == 0.0
    assert "train_accuracy" not in fit.metrics  # nothing computed on the private data leaves
    plain = builtin_app(AppContext(run_config={"task": "wine-logreg"}))
    assert plain.site_dp is None
