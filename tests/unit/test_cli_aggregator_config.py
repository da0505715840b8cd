"""``fedwarden aggregator --config FILE``: the file gives the options' defaults, flags override
them, unknown keys and bad values are usage errors that name the key; and the
``--kubernetes-status`` options parse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fedwarden.cli import main


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["aggregator", *args])


def test_the_file_gives_defaults_and_flags_override(tmp_path: Path, built: dict[str, Any]) -> None:
    config = tmp_path / "aggregator.json"
    config.write_text(
        json.dumps(
            {
                "rounds": 7,
                "aggregator": "median",
                "agg_params": {"f": 1},
                "dp": "central",
                "target_epsilon": 2.5,
                "free_rider_detection": False,
                "kubernetes_status": "team-a/mnist",
            }
        )
    )
    result = invoke("--config", str(config), "--aggregator", "krum")
    assert result.exit_code == 0, result.output
    assert built["rounds"] == 7  # --rounds is required: the file satisfies it
    assert built["aggregator"] == "krum"  # the flag wins
    assert built["agg_params"] == {"f": 1}
    assert built["dp"] == "central"
    assert built["target_epsilon"] == 2.5
    assert built["free_rider_detection"] is False
    assert built["kubernetes_status"] == ("team-a", "mnist")
    assert built["fraction"] == 1.0  # not in the file: the option's own default

    # the order of the flags does not matter: a flag before --config still wins
    result = invoke("--rounds", "2", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert built["rounds"] == 2
    assert built["aggregator"] == "median"


def test_yaml_and_a_mapping_of_aggregator_parameters(tmp_path: Path, built: dict[str, Any]) -> None:
    config = tmp_path / "aggregator.yaml"
    config.write_text(yaml.safe_dump({"rounds": 3, "agg_params": {"beta": 0.2, "f": 2}}))
    result = invoke("--config", str(config))
    assert result.exit_code == 0, result.output
    assert built["rounds"] == 3
    assert built["agg_params"] == {"beta": 0.2, "f": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"rounds": 2, "round_timeout_s": 3}', "unknown key 'round_timeout_s'"),
        ('{"rounds": 2, "config": "x"}', "unknown key 'config'"),
        # options that are not settings: the operator never sets them
        ('{"rounds": 2, "noise_seed": 1}', "unknown key 'noise_seed'"),
        ("[1, 2]", "must hold an object"),
        ("rounds: [unclosed", "neither JSON nor YAML"),
        ('{"rounds": 0}', "rounds: Input should be greater than or equal to 1"),
        ('{"rounds": 1, "accountant": "gdp"}', "accountant: Input should be 'pld' or 'rdp'"),
        ('{"rounds": 1, "kubernetes_status": "mnist"}', "NAMESPACE/NAME"),
    ],
)
def test_bad_files_are_usage_errors(
    tmp_path: Path, built: dict[str, Any], content: str, message: str
) -> None:
    config = tmp_path / "c.json"
    config.write_text(content)
    result = invoke("--config", str(config))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not built


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("--config", str(tmp_path / "nope.json"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_kubeconfig_needs_kubernetes_status(tmp_path: Path, built: dict[str, Any]) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    result = invoke("--rounds", "1", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 2
    assert "--kubeconfig is for --kubernetes-status" in result.output
    assert not built


def test_a_bad_kubeconfig_is_a_clean_error(tmp_path: Path, runtime_pki_dir: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")  # no context
    result = invoke("--rounds", "1", "--num-parameters", "4", "--pki-dir", str(runtime_pki_dir),
                    "--kubernetes-status", "team-a/mnist",
                    "--kubeconfig", str(kubeconfig))  # fmt: skip
    assert result.exit_code == 1, result.output
    assert str(kubeconfig) in result.output
    assert "Traceback" not in result.output


def test_no_in_cluster_credentials_is_a_clean_error(tmp_path: Path, runtime_pki_dir: Path) -> None:
    result = invoke("--rounds", "1", "--num-parameters", "4", "--pki-dir", str(runtime_pki_dir),
                    "--kubernetes-status", "team-a/mnist",
                    "--service-account-dir", str(tmp_path / "none"))  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "no in-cluster credentials" in result.output


@pytest.fixture
def runtime_pki_dir(tmp_path: Path) -> Path:
    from fedwarden.pki import TrainingPKI, TrainingRef

    pki = TrainingPKI.init(tmp_path / "ca", TrainingRef("team-a", "mnist"))
    pki.issue_server(["localhost"], ["127.0.0.1"], keep_key=True)
    return pki.dir.root
