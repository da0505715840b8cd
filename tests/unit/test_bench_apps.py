"""The apps benchmark's preparation of a Flower App (no deployment is started here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedwarden.bench import apps

QUICKSTART = Path(__file__).parents[2] / "examples" / "apps" / "flower_quickstart"


def test_the_quickstart_is_read_with_its_client_fn_and_server_fn() -> None:
    app = apps.FlowerApp.load(QUICKSTART)
    assert app.client_fn == "flower_quickstart.client_app:client_fn"
    assert app.server_fn == "flower_quickstart.server_app:server_fn"
    assert {"num-server-rounds", "min-clients", "local-epochs"} <= set(app.run_config)


def test_an_app_without_the_keys_the_benchmark_sets_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.flwr.app.components]\nserverapp = "a.server:app"\nclientapp = "a.client:app"\n'
        "[tool.flwr.app.config]\nnum-server-rounds = 3\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="must have min-clients"):
        apps.FlowerApp.load(tmp_path)
    with pytest.raises(ValueError, match="is not a Flower App"):
        apps.FlowerApp.load(tmp_path / "missing")


def test_the_flower_copy_runs_the_apps_server_fn_behind_the_recorder(tmp_path: Path) -> None:
    app = apps.FlowerApp.load(QUICKSTART)
    copy = apps._parity_flower_app(app, tmp_path / "app")
    config = tomllib.loads((copy / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["flwr"]
    assert config["app"]["components"] == {
        "serverapp": f"{apps.PARITY_SERVER_MODULE}:app",
        "clientapp": "flower_quickstart.client_app:app",
    }
    assert {"fedwarden-server-fn", "fedwarden-result-path"} <= set(config["app"]["config"])
    assert (copy / f"{apps.PARITY_SERVER_MODULE}.py").is_file()
    # the app's own code is copied as it is
    original = QUICKSTART / "flower_quickstart" / "client_app.py"
    assert (copy / "flower_quickstart" / "client_app.py").read_bytes() == original.read_bytes()


def test_a_model_is_evaluated_over_every_partition_by_the_apps_evaluate() -> None:
    pytest.importorskip("flwr")
    app = apps.FlowerApp.load(QUICKSTART)
    config = {**app.run_config, "local-epochs": 5}
    zeros = [np.zeros((10, 64)), np.zeros(10)]
    # the zero model predicts class 0 everywhere: the share of zeros in the test sets
    accuracy = apps.evaluate_model(app, zeros, clients=3, run_config=config)
    assert 0.05 < accuracy < 0.15


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--sides", "tensorflow"], "unknown side 'tensorflow'", 2),
        (["--json", "--markdown"], "choose one", 2),
        (["--app-config", "local-epochs"], "--app-config takes KEY=VALUE", 2),
        (["--app-dir", "."], "is not a Flower App", 1),
    ],
)
def test_cli_mistakes_are_one_line_errors(args: list[str], message: str, code: int) -> None:
    from click.testing import CliRunner

    from fedwarden.cli import main

    result = CliRunner().invoke(main, ["bench", "apps", *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
