"""Each extra of pyproject.toml is enough for what needs it, and the core for what needs no extra.

A virtualenv per extra would take minutes; a fresh interpreter that refuses every module no
package of the extra (or its dependencies, per their installed metadata) provides behaves the
same, in about a second. images/build-venv.sh does the real installs when the images are built.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest

PROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]).lower()


def _distributions(extras: list[str]) -> set[str]:
    """The distributions ``pip install fedwarden[extras]`` installs: the core, the extras (with
    the extras they name) and, recursively, what each requires."""
    wanted = list(PROJECT["dependencies"])
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra not in seen:
            seen.add(extra)
            for requirement in PROJECT["optional-dependencies"][extra]:
                own = re.fullmatch(r"fedwarden\[(.*)\]", requirement)
                if own:
                    pending += own.group(1).split(",")
                else:
                    wanted.append(requirement)
    installed: set[str] = {"fedwarden"}
    names = [_name(r) for r in wanted]
    while names:
        name = names.pop()
        if name in installed:
            continue
        installed.add(name)
        # (not installed: an environment marker, python_version < ..., left it out)
        with contextlib.suppress(PackageNotFoundError):
            names += [_name(r) for r in requires(name) or [] if "extra ==" not in r]
    return installed


def _run_with_only(extras: list[str], code: str) -> subprocess.CompletedProcess[str]:
    present = _distributions(extras)
    refused = sorted(
        module
        for module, distributions in packages_distributions().items()
        if not {_name(d) for d in distributions} & present
    )
    prelude = textwrap.dedent(f"""
        import sys

        class Refuse:  # what a virtualenv without these packages does
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {set(refused)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Refuse())
    """)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _fedwarden(*args: str) -> str:
    return f"from fedwarden.cli import main\nmain({list(args)!r}, prog_name='fedwarden')"


@pytest.mark.parametrize(
    ("extras", "code"),
    [
        ([], _fedwarden("--help")),
        ([], _fedwarden("crds")),
        ([], _fedwarden("pki", "--help")),
        (["pipeline"], _fedwarden("privacy", "epsilon", "-q", "0.01", "-T", "10", "-s", "1")),
        (["tasks"], _fedwarden("simulate", "--rounds", "1")),
        # what each image's command imports (images/build-venv.sh imports the same)
        (
            ["operator"],
            textwrap.dedent("""
            import kopf, kubernetes.client, prometheus_client, fedwarden.controller.handlers
            """)
            + _fedwarden("operator", "--help"),
        ),
        (
            ["aggregator"],
            textwrap.dedent("""
            import fedwarden.aggregator.server, fedwarden.aggregator.kubernetes
            import fedwarden.client.tasks
            """)
            + _fedwarden("aggregator", "--help"),
        ),
        (
            ["client"],
            textwrap.dedent("""
            import fedwarden.client.runtime, fedwarden.client.tasks
            from fedwarden.sim.datasets import DATASETS, load_dataset
            for name in DATASETS:
                load_dataset(name)
            """)
            + _fedwarden("client", "--help"),
        ),
    ],
)
def test_an_extra_is_enough(extras: list[str], code: str) -> None:
    run = _run_with_only(extras, code)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["privacy", "epsilon", "-q", "0.01", "-T", "10", "-s", "1"], "pipeline"),
        (["simulate", "--rounds", "1"], "tasks"),
        (["demo"], "all"),
        (["bench", "aggregators"], "all"),
        (["aggregator", "--tls-dir", ".", "--rounds", "1"], "aggregator"),
        (
            ["client", "--tls-dir", ".", "--server", "127.0.0.1:1", "--task", "digits-logreg"],
            "client",
        ),
        (["operator"], "operator"),
    ],
)
def test_the_core_alone_names_the_extra(args: list[str], extra: str) -> None:
    run = _run_with_only([], _fedwarden(*args))
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 1
    assert re.fullmatch(
        rf"Error: fedwarden {args[0]} needs the '{extra}' extra \(no module named '\w+'\): "
        rf"pip install 'fedwarden\[{extra}\]'\n",
        run.stderr,
    ), run.stderr
