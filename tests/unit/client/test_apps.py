"""The app interface: users' Flower NumPyClients and fedwarden apps behind one `App`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedwarden.client import (
    App,
    AppError,
    BuiltinTask,
    NumPyClientApp,
    load_app,
    parse_app_config,
)
from fedwarden.pipeline import ParameterLayout

FIXTURES = [Path(__file__).parent / "apps_fixtures"]


def load(spec: str, **kwargs: object) -> App:
    return load_app(spec, search_path=FIXTURES, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def flower() -> None:
    pytest.importorskip("flwr")


@pytest.mark.usefixtures("flower")
@pytest.mark.parametrize("attr", ["instance", "FlowerClient", "factory"])
def test_a_numpy_client_as_instance_class_or_factory(attr: str) -> None:
    app = load(f"flower_style:{attr}")
    assert isinstance(app, NumPyClientApp)
    assert app.layout == ParameterLayout(("0", "1"), ((3, 2), (2,)))
    start = app.initial_parameters()
    update, examples, metrics = app.fit(start, 1)
    np.testing.assert_allclose(update, np.full(8, 0.5, np.float32))
    assert metrics == {"train_loss": 0.25}
    evaluation = app.evaluate(start)
    assert evaluation is not None
    assert evaluation.num_examples == 4
    assert evaluation.metrics["loss"] == 1.5
    assert examples == (12 if attr == "factory" else 10)


@pytest.mark.usefixtures("flower")
def test_a_client_fn_reads_node_and_run_config_and_may_return_to_client() -> None:
    app = load(
        "flower_style:client_fn",
        node_config={"partition-id": 3, "num-partitions": 5},
        run_config=parse_app_config(["local-epochs=2"]),
    )
    update, examples, _ = app.fit(app.initial_parameters(), 1)
    assert examples == 13
    np.testing.assert_allclose(update, np.ones(8, np.float32))
    evaluation = app.evaluate(app.initial_parameters())
    assert evaluation is not None
    assert evaluation.metrics["accuracy"] == pytest.approx(0.78)


@pytest.mark.usefixtures("flower")
def test_a_client_app_is_refused_with_what_to_name_instead() -> None:
    with pytest.raises(AppError, match="ClientApp; point --app at the client_fn"):
        load("flower_style:app")


@pytest.mark.usefixtures("flower")
def test_a_client_without_parameters_or_evaluate_takes_the_aggregators_layout() -> None:
    app = load("flower_style:NoEvaluate")
    assert isinstance(app, NumPyClientApp)
    assert app.num_parameters == 0
    with pytest.raises(AppError, match="no initial model"):
        app.initial_parameters()
    app.adopt_layout(ParameterLayout(("w", "b"), ((2, 2), (3,))))
    update, _, _ = app.fit(np.zeros(7, np.float32), 1)
    np.testing.assert_array_equal(update, np.ones(7, np.float32))
    assert app.evaluate(np.zeros(7, np.float32)) is None


def test_the_builtin_task_is_an_app_of_the_same_interface() -> None:
    app = load(
        "fedwarden.client.tasks:builtin_app",
        run_config={"task": "wine-logreg", "lr": 0.5, "data-seed": 1},
        node_config={"partition-id": 1, "num-partitions": 3},
    )
    assert isinstance(app, BuiltinTask)
    assert isinstance(app, App)
    assert (app.client_index, app.num_clients, app.lr, app.data_seed) == (1, 3, 0.5, 1)
    assert app.layout.names == ("weight", "bias")
    with pytest.raises(AppError, match=r"unknown setting.*learning-rate"):
        load(
            "fedwarden.client.tasks:builtin_app",
            run_config={"task": "wine-logreg", "learning-rate": 1},
        )
    with pytest.raises(AppError, match="unknown task 'wine-cnn'"):
        load("fedwarden.client.tasks:builtin_app", run_config={"task": "wine-cnn"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module:app", "no module named 'no_such_module'"),
        (
            "needs_missing_dependency:app",
            "needs 'fedwarden_no_such_package', which is not installed",
        ),
        ("broken:missing", "broken has no attribute 'missing'"),
        ("broken:not_an_app", "gave a int, which is neither a fedwarden app"),
        (
            "broken:factory_that_raises",
            "factory_that_raises raised FileNotFoundError: data/train.csv",
        ),
        ("broken", "MODULE:ATTR"),
    ],
)
def test_apps_that_do_not_load_say_why_in_one_line(spec: str, message: str) -> None:
    with pytest.raises(AppError, match=message) as raised:
        load(spec)
    assert "\n" not in str(raised.value)


def test_apps_that_misbehave_in_fit_say_why() -> None:
    start = np.zeros(4, np.float32)
    with pytest.raises(AppError, match="fit raised RuntimeError: CUDA out of memory"):
        load("broken:RaisesInFit").fit(start, 1)
    with pytest.raises(AppError, match="1 of 4 values are NaN or infinite"):
        load("broken:ReturnsNaN").fit(start, 1)
    shifty = load("broken:ChangesShapes")
    shifty.fit(start, 1)
    with pytest.raises(
        AppError, match=r"changed the parameter shapes: got 0: 4, the model is 0: 2x2"
    ):
        shifty.fit(start, 2)


def test_a_layout_that_disagrees_with_the_clients_own_is_refused() -> None:
    app = load("broken:Base")
    assert isinstance(app, NumPyClientApp)
    with pytest.raises(AppError, match=r"aggregator's model \(w: 4\) does not match"):
        app.adopt_layout(ParameterLayout(("w",), ((4,),)))


def test_app_config_values_are_typed_as_flower_reads_them() -> None:
    assert parse_app_config(["a=1", "b=0.5", "c=true", "d=x=y", "e="]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "x=y",
        "e": "",
    }
    with pytest.raises(AppError, match="KEY=VALUE"):
        parse_app_config(["novalue"])
