"""``--metrics-address HOST:PORT`` means the same to ``fedwarden operator`` and ``fedwarden
aggregator`` (one parser): ``off`` is no server, port 0 a free port, anything else is refused
with the same message; the operator's aggregator ConfigMap gives one the aggregator reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedwarden.api import FederatedTraining
from fedwarden.cli import main
from fedwarden.commands._common import host_port, host_port_or_off
from fedwarden.resources import aggregator as aggregator_resources
from fedwarden.resources.names import METRICS_PORT, Owner

COMMANDS = ["operator", "aggregator"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0:8081", ("0.0.0.0", 8081)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::]:9090", ("::", 9090)),
        ("localhost:65535", ("localhost", 65535)),
        ("off", None),
        (None, None),
    ],
)
def test_host_port_or_off(value: str | None, expected: tuple[str, int] | None) -> None:
    assert host_port_or_off(None, None, value) == expected  # type: ignore[arg-type]


def test_host_port_brackets_an_ipv6_host() -> None:
    assert host_port(("::", 9090)) == "[::]:9090"
    assert host_port(("0.0.0.0", 0)) == "0.0.0.0:0"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "value", ["8081", "0.0.0.0", ":8081", "0.0.0.0:http", "0.0.0.0:65536", "0.0.0.0:-1", "OFF"]
)
def test_a_malformed_address_is_a_usage_error_of_both_commands(command: str, value: str) -> None:
    result = CliRunner().invoke(main, [command, "--metrics-address", value])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--metrics-address'" in result.output
    assert f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:9090; port 0 picks a free port) or 'off'" in (
        result.output
    )


def test_the_aggregator_has_no_metrics_port_option() -> None:
    result = CliRunner().invoke(main, ["aggregator", "--metrics-port", "9090"])
    assert result.exit_code == 2
    assert "No such option" in result.output
    assert "--metrics-address" in result.output  # click suggests it


def test_the_aggregator_serves_no_metrics_unless_asked(built: dict[str, Any]) -> None:
    result = CliRunner().invoke(main, ["aggregator", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    assert built["metrics_address"] is None


def test_the_jobs_address_reaches_the_aggregator_and_off_overrides_it(
    tmp_path: Path, built: dict[str, Any]
) -> None:
    spec = FederatedTraining.model_validate(
        {"spec": {"rounds": 5, "task": {"builtin": "digits-logreg"}}}
    ).spec
    owner = Owner("FederatedTraining", "mnist", "team-a", "uid-1")
    # an address inside the pod: on the Job's command line (which the test pod runner rewrites),
    # not in the ConfigMap
    config_map = aggregator_resources.config_map(owner, spec, population=3)
    config = tmp_path / aggregator_resources.CONFIG_KEY
    config.write_text(config_map["data"][aggregator_resources.CONFIG_KEY])
    assert "metrics_address" not in json.loads(config.read_text())
    command = aggregator_resources.job(owner, spec, config_hash="h")["spec"]["template"]["spec"][
        "containers"
    ][0]["command"]
    address = command[command.index("--metrics-address") + 1]
    assert address == f"0.0.0.0:{METRICS_PORT}"

    result = CliRunner().invoke(
        main, ["aggregator", "--config", str(config), "--metrics-address", address]
    )
    assert result.exit_code == 0, result.output
    assert built["metrics_address"] == ("0.0.0.0", METRICS_PORT)

    result = CliRunner().invoke(
        main, ["aggregator", "--config", str(config), "--metrics-address", "off"]
    )
    assert result.exit_code == 0, result.output
    assert built["metrics_address"] is None


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["aggregator", "--listen", "8443"], "--listen"),
        (["aggregator", "--listen", "[::]:https"], "--listen"),
    ],
)
def test_listen_uses_the_same_parser(args: list[str], option: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert f"{args[-1]!r} is not HOST:PORT" in result.output
