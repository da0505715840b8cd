"""The ConfigMap the operator renders from a FederatedTraining runs the pipeline its spec asks
for: read back by ``fedwarden aggregator --config`` and mapped by the same function the command
uses, the pipeline is built (its privacy soundness check included) without an error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from fedwarden.api import FederatedTraining
from fedwarden.api.crd import crds
from fedwarden.commands import aggregator as aggregator_command
from fedwarden.pipeline.round import Pipeline, PipelineConfig
from fedwarden.resources import aggregator
from fedwarden.resources.names import Owner

REPO = Path(__file__).resolve().parents[3]
OWNER = Owner("FederatedTraining", "demo", "team-a", "uid-1")
ENROLLED = 50
# the sensitivity check does not depend on the model's size
DIM = 16


def pipeline_of(manifest: dict[str, Any], tmp_path: Path) -> PipelineConfig:
    """The pipeline the aggregator pod runs for ``manifest``: the ConfigMap as the operator
    renders it, read by the command's ``--config``, built as the command builds it."""
    spec = FederatedTraining.model_validate(manifest).spec
    config_map = aggregator.config_map(OWNER, spec, population=ENROLLED)
    config_file = tmp_path / aggregator.CONFIG_KEY
    config_file.write_text(config_map["data"][aggregator.CONFIG_KEY])
    options = aggregator_command.aggregator.make_context(
        "aggregator", ["--config", str(config_file)]
    ).params
    config = aggregator_command._pipeline_config(options)
    Pipeline(config, dim=DIM, population=options["population"])  # refuses an unsound one
    return config


def example(path: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((REPO / path).read_text())
    return manifest


def test_the_gdpr_example_runs_dp_fedavg(tmp_path: Path) -> None:
    # central DP with no method: the recommendation, without the free-rider tests it cannot run
    config = pipeline_of(example("examples/gdpr/training.yaml"), tmp_path)
    assert config.aggregator == "fedavg"
    assert config.validation.outlier_z is None
    assert not config.free_riders.enabled
    assert config.privacy.mode == "central"
    assert config.privacy.target_epsilon == 1.0


def test_the_gdpr_consortium_runs_record_level_dp_without_noise_at_the_aggregator(
    tmp_path: Path,
) -> None:
    # each site's DP-SGD protects its records; the aggregator keeps the robust pipeline
    config = pipeline_of(example("examples/gdpr/consortium.yaml"), tmp_path)
    assert config.privacy.mode == "record"
    assert config.privacy.target_epsilon == 1.0
    assert config.privacy.noise_multiplier is None
    assert config.aggregator == PipelineConfig.recommended().aggregator


def test_the_demo_example_keeps_its_named_rule_and_the_tests(tmp_path: Path) -> None:
    # central DP with method centered-clip: the robust pipeline that bans the two poisoners
    config = pipeline_of(example("examples/training.yaml"), tmp_path)
    assert config.aggregator == "centered-clip"
    assert config.aggregator_params == {"tau": 0.2}
    assert config.validation.outlier_z == PipelineConfig.recommended().validation.outlier_z
    assert config.free_riders.enabled
    assert config.privacy.mode == "central"
    assert config.privacy.target_epsilon == 10.0


def test_the_free_rider_tests_and_the_clipping_quantile_reach_the_aggregator(
    tmp_path: Path,
) -> None:
    manifest = example("examples/training.yaml")
    manifest["spec"]["freeRiders"]["enabled"] = False
    manifest["spec"]["clipping"]["targetQuantile"] = 0.8
    config = pipeline_of(manifest, tmp_path)
    assert not config.free_riders.enabled
    assert config.clipping.target_quantile == 0.8


def test_the_schema_leaves_the_free_rider_tests_unset() -> None:
    # a default would be stored by the API server, and every training would then ask for the
    # tests explicitly, DP-FedAvg ones included
    training = crds()[0]
    spec = training["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    free_riders = spec["properties"]["freeRiders"]
    assert "default" not in free_riders["properties"]["enabled"]
    assert "enabled" not in free_riders["default"]
    settings = json.loads(
        aggregator.config_map(
            OWNER, FederatedTraining.model_validate(example("examples/gdpr/training.yaml")).spec,
            population=ENROLLED,
        )["data"][aggregator.CONFIG_KEY]
    )  # fmt: skip
    assert "free_rider_detection" not in settings


def test_a_spec_that_asks_for_free_rider_tests_under_dp_fedavg_is_refused() -> None:
    # the aggregator would refuse it at start; the API server's CEL rule says the same
    manifest = example("examples/gdpr/training.yaml")
    manifest["spec"]["freeRiders"] = {"enabled": True}
    with pytest.raises(ValidationError, match=r"freeRiders\.enabled with central privacy needs"):
        FederatedTraining.model_validate(manifest)
    manifest["spec"]["aggregation"] = {"method": "centered-clip", "tau": 0.2}
    FederatedTraining.model_validate(manifest)


def test_the_app_example_runs_its_named_rule_under_central_dp(tmp_path: Path) -> None:
    training, *_clients = yaml.safe_load_all(
        (REPO / "examples/apps/site-image/training.yaml").read_text()
    )
    config = pipeline_of(training, tmp_path)
    assert config.aggregator == "median"
    assert config.privacy.mode == "central"
    assert config.privacy.target_epsilon == 8.0
