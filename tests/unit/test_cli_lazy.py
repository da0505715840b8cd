"""`fedwarden`'s lazy subcommands: the help lists them all without importing them, the operator
starts without the training stack, and a missing extra is one line naming it, not a traceback.

The import checks run in fresh interpreters (`python -c`): this process has imported everything
already. A missing package is simulated by a `sys.meta_path` finder that refuses it, which is
what a virtualenv without it does."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fedwarden.cli import MODULE_EXTRAS, OPTIONAL_MODULES, SUBCOMMANDS, main, missing_extra

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def _loaded(name: str) -> click.Command:
    module, _, attribute = SUBCOMMANDS[name].target.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command)
    return command


def test_each_short_help_is_its_commands() -> None:
    for name in SUBCOMMANDS:
        assert SUBCOMMANDS[name].short_help == _loaded(name).get_short_help_str(10**6), name


@pytest.mark.parametrize("width", [60, 80, 120])
def test_help_lists_every_command_as_if_loaded(width: int) -> None:
    eager = click.Group(
        "main", help=main.help, params=main.params, context_settings=main.context_settings
    )
    for name in SUBCOMMANDS:
        eager.add_command(_loaded(name), name)
    lazy = CliRunner().invoke(main, ["--help"], prog_name="fedwarden", terminal_width=width)
    loaded = CliRunner().invoke(eager, ["--help"], prog_name="fedwarden", terminal_width=width)
    assert lazy.exit_code == 0, lazy.output
    assert lazy.output == loaded.output
    assert all(f"  {name} " in lazy.output for name in SUBCOMMANDS)


def _imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    probe = code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return set(run.stdout.splitlines()[-1].split())


TRAINING_STACK = ("numpy", "scipy", "dp_accounting", "grpc", "google.protobuf", "sklearn")


def _training_stack(modules: set[str]) -> list[str]:
    return sorted(
        m
        for m in modules
        if m.startswith("fedwarden.pipeline") or any(m.startswith(t) for t in TRAINING_STACK)
    )


def test_help_imports_no_command_module() -> None:
    modules = _imported_after(
        "from fedwarden.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert not [m for m in modules if m.startswith("fedwarden.commands")]


def test_operator_runs_without_the_training_stack() -> None:
    # everything `fedwarden operator` imports up to kopf's start: its command, the handlers,
    # kopf, the kubernetes client and the metrics server
    modules = _imported_after(
        "import click\n"
        "from fedwarden.cli import main\n"
        "main.get_command(click.Context(main), 'operator')\n"
        "import kopf, kubernetes.client, prometheus_client\n"
        "import fedwarden.controller.handlers"
    )
    assert "fedwarden.controller.handlers" in modules
    assert _training_stack(modules) == []


def _run_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        import sys

        class RefuseModule:  # what a virtualenv without the package does
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == {module!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, RefuseModule())
        from fedwarden.cli import main
        main({list(args)!r}, prog_name="fedwarden")
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("missing", "args", "extra"),
    [
        # imported with the command's module
        ("dp_accounting", ["privacy", "epsilon", "-q", "0.01", "-T", "10", "-s", "1"], "pipeline"),
        ("grpc", ["demo"], "all"),
        # imported when the command runs
        ("sklearn", ["simulate", "--rounds", "1"], "tasks"),
        ("kopf", ["operator"], "operator"),
        ("kubernetes", ["aggregator", "--help"], None),  # the help needs no extra
        (
            "kubernetes",
            ["aggregator", "--rounds", "1", "--kubernetes-status", "ns/t"],
            "aggregator",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    missing: str, args: list[str], extra: str | None
) -> None:
    run = _run_without(missing, *args)
    assert "Traceback" not in run.stderr, run.stderr
    if extra is None:
        assert run.returncode == 0, run.stderr
        return
    assert run.returncode == 1
    assert run.stderr.strip() == (
        f"Error: fedwarden {args[0]} needs the '{extra}' extra (no module named '{missing}'): "
        f"pip install 'fedwarden[{extra}]'"
    )


def test_flwr_names_the_flower_extra_whatever_the_command() -> None:
    error = missing_extra("bench", ModuleNotFoundError("No module named 'flwr'", name="flwr.app"))
    assert error is not None
    assert "'flower' extra" in error.message


@pytest.mark.parametrize("module", ["fedwarden.pipeline.nothing", "_ctypes", "nosuchmodule"])
def test_a_module_no_extra_brings_keeps_its_traceback(module: str) -> None:
    assert missing_extra("simulate", ModuleNotFoundError(module, name=module)) is None


def test_a_command_without_an_extra_keeps_the_traceback() -> None:
    assert missing_extra("pki", ModuleNotFoundError("sklearn", name="sklearn")) is None


def test_every_extra_named_exists() -> None:
    named = {s.extra for s in SUBCOMMANDS.values()} | set(MODULE_EXTRAS.values())
    assert named - {None} <= set(EXTRAS)


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_modules_of_every_extras_package_are_known() -> None:
    # what the extras install beyond the core (not the tools of `dev`), by import name
    tools = {_name(r) for r in EXTRAS["dev"]}
    wanted = {_name(r) for e, rs in EXTRAS.items() if e != "dev" for r in rs} - tools
    wanted.discard("fedwarden")
    modules: dict[str, set[str]] = {}
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            modules.setdefault(distribution.lower().replace("_", "-"), set()).add(module)
    for distribution in wanted:
        assert modules.get(distribution, set()) & (OPTIONAL_MODULES | set(MODULE_EXTRAS)), (
            distribution
        )
