"""What every subcommand shares: the console, ``--json`` output and turning user mistakes into
clean errors (a message and a non-zero exit, never a traceback)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)
"""Progress bars and tables go to stderr so that ``--json`` output on stdout stays parseable."""

stdout_console = Console()

json_option: Callable[[F], F] = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout."
)


def emit_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=True, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays reach the JSON encoder from results; make them plain values
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextmanager
def user_errors() -> Iterator[None]:
    """Report a ``ValueError`` (bad parameters, impossible combinations) as a usage error."""
    try:
        yield
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
