"""The models parse what users write and refuse what the schema refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fedwarden.api import FederatedTraining, FLClient
from fedwarden.api.common import LabelSelector


def _training(**spec: object) -> FederatedTraining:
    return FederatedTraining.model_validate(
        {
            "metadata": {"name": "t"},
            "spec": {"rounds": 5, "task": {"builtin": "digits-mlp"}, **spec},
        }
    )


def test_defaults_and_camel_case() -> None:
    training = _training(selection={"minClients": 3, "minAvailable": 4})
    assert training.spec.selection.min_clients == 3
    assert training.spec.privacy.mode == "none"
    assert training.spec.certificates.duration == "2160h"
    dumped = training.to_k8s()
    assert dumped["apiVersion"] == "fedwarden.io/v1alpha1"
    assert dumped["spec"]["selection"]["minAvailable"] == 4
    assert "status" not in dumped


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"rounds": 0}, "rounds"),
        ({"aggregation": {"beta": 0.5}}, "beta"),
        ({"aggregation": {"method": "teleport"}}, "method"),
        ({"privacy": {"delta": 0.5}}, "delta"),
        ({"selection": {"fraction": 0}}, "fraction"),
        ({"certificates": {"duration": "3 days"}}, "duration"),
        ({"roundTimeout": 5}, "roundTimeout"),
    ],
)
def test_bad_values_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        _training(**spec)


APP = {"module": "hospital.model:client_fn", "image": "registry.example/hospital:1"}


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"builtin": "digits-mlp", "app": APP}, "exactly one of task.builtin"),
        ({}, "exactly one of task.builtin"),
        ({"modelSeed": 1}, "exactly one of task.builtin"),
        ({"app": {**APP, "module": "hospital.model"}}, "app.module"),
        ({"app": {**APP, "module": "hospital model:fn"}}, "app.module"),
        ({"app": {"module": APP["module"]}}, "app.image"),
        ({"app": APP, "dataSeed": 1}, "task.modelSeed and task.dataSeed seed a built-in task"),
        ({"app": {**APP, "config": {"epochs=2": "1"}}}, "config key 'epochs=2'"),
    ],
)
def test_a_task_is_a_builtin_or_an_app(task: dict[str, object], message: str) -> None:
    # the CEL rules' twins: tests/k8s/test_crd_validation.py has the API server's side
    with pytest.raises(ValidationError, match=message):
        _training(task=task)


def test_an_app_task() -> None:
    config = {"local-epochs": "2", "fraction_fit": "0.5", "model.width": "64"}
    task = _training(task={"app": {**APP, "config": config}}).spec.task
    assert task.builtin is None
    assert task.app is not None
    assert task.app.config == config
    assert _training().spec.task.model_seed is None  # unset: the command's default


def test_client_spec() -> None:
    client = FLClient.model_validate(
        {"spec": {"trainingRef": {"name": "t"}, "issueKey": True, "workload": {"clientIndex": 2}}}
    )
    assert client.spec.workload is not None
    assert client.spec.workload.partition == "iid"
    assert client.spec.workload.image is None  # the training's task chooses it
    with pytest.raises(ValidationError, match="partition"):
        FLClient.model_validate(
            {"spec": {"trainingRef": {"name": "t"}, "workload": {"partition": "random"}}}
        )


def test_label_selector() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"team": "a"},
            "matchExpressions": [{"key": "region", "operator": "In", "values": ["eu"]}],
        }
    )
    assert selector.matches({"team": "a", "region": "eu"})
    assert not selector.matches({"team": "a", "region": "us"})
    assert not selector.matches({"region": "eu"})
