"""One list of aggregation rules: the pipeline's registry is the source, and everything that names
the rules says the same. ``api`` may not import the pipeline (the operator's image has no numpy),
so it keeps the one copy, ``api.common.AggregationRule``, that this test holds to the registry.
"""

from __future__ import annotations

import typing
from typing import Any

import pytest

from fedwarden.api.aggregator_config import AggregatorSettings
from fedwarden.api.common import AggregationRule
from fedwarden.api.crd import crds
from fedwarden.api.training import AggregationSpec, FederatedTraining
from fedwarden.bench.aggregators import AGGREGATORS
from fedwarden.pipeline import aggregators
from fedwarden.resources import aggregator
from fedwarden.resources.names import Owner

RULES = set(aggregators.names())


def _aggregation_schema() -> dict[str, Any]:
    (training,) = [crd for crd in crds() if crd["spec"]["names"]["kind"] == "FederatedTraining"]
    (version,) = training["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]["aggregation"]


def test_the_api_names_the_registrys_rules() -> None:
    assert set(typing.get_args(AggregationRule)) == RULES


def test_the_crd_enum_the_settings_and_the_benchmark_name_the_registrys_rules() -> None:
    assert set(_aggregation_schema()["properties"]["method"]["enum"]) == RULES
    assert AggregatorSettings.model_fields["aggregator"].annotation == AggregationRule | None
    assert AggregationSpec.model_fields["method"].annotation == AggregationRule | None
    assert set(AGGREGATORS) == RULES


def _agg_params(aggregation: dict[str, Any]) -> dict[str, Any]:
    spec = FederatedTraining.model_validate(
        {"spec": {"rounds": 3, "task": {"builtin": "digits-mlp"}, "aggregation": aggregation}}
    ).spec
    owner = Owner("FederatedTraining", "t", "ns", "uid")
    settings = aggregator.aggregator_settings(owner, spec, population=10)
    return dict(settings.agg_params or {})


#: specs that, together, set every field of AggregationSpec
SPECS: list[dict[str, Any]] = [
    # the recommendation's rule and gate, each parameter named (PipelineConfig.recommended)
    {
        "method": "block-dnc",
        "blockSize": 64,
        "filterFraction": 0.2,
        "preaggregation": "dnc",
        "minShare": 0.2,
    },
    {"method": "multi-krum", "f": 2, "m": 5, "preaggregation": "bucketing", "bucketSize": 2},
    {"method": "centered-clip", "tau": 3.0, "preaggregation": "nnm", "f": 1},
    {"method": "trimmed-mean", "beta": 0.1, "preaggregation": "dnc", "filterFraction": 0.1},
]


def test_the_specs_below_set_every_field() -> None:
    fields = {field.alias for field in AggregationSpec.model_fields.values()}
    assert set().union(*SPECS) == fields


@pytest.mark.parametrize(
    "aggregation", SPECS, ids=lambda spec: f"{spec['method']}+{spec['preaggregation']}"
)
def test_every_parameter_of_the_spec_reaches_the_pipeline(aggregation: dict[str, Any]) -> None:
    params = _agg_params(aggregation)
    assert len(params) == len(aggregation) - 1  # all but the method
    aggregators.get(aggregation["method"], **params)  # the registry takes every one of them


def test_parameters_without_a_method_are_refused_by_a_rule_naming_the_method() -> None:
    rules = _aggregation_schema()["x-kubernetes-validations"]
    (rule,) = [r for r in rules if r["fieldPath"] == ".method"]
    for field in ("blockSize", "filterFraction", "minShare", "bucketSize", "f"):
        assert f"has(self.{field})" in rule["rule"]
