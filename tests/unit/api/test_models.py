"""The models parse what users write and refuse what the schema refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fedwarden.api import FederatedTraining, FLClient
from fedwarden.api.common import LabelSelector


def _training(**spec: object) -> FederatedTraining:
    return FederatedTraining.model_validate(
        {"metadata": {"name": "t"}, "spec": {"rounds": 5, "task": {"name": "digits-mlp"}, **spec}}
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


def test_client_spec() -> None:
    client = FLClient.model_validate(
        {"spec": {"trainingRef": {"name": "t"}, "issueKey": True, "workload": {"clientIndex": 2}}}
    )
    assert client.spec.workload is not None
    assert client.spec.workload.partition == "iid"
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
