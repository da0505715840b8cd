"""What every subcommand shares: the console, ``--json`` output, ``KEY=VALUE`` options and
turning user mistakes into clean errors (a message and a non-zero exit, never a traceback)."""

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


def key_values(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Any]:
    """Callback of a repeatable ``KEY=VALUE`` option: ``("beta=0.2", "preaggregation=nnm")`` ->
    ``{"beta": 0.2, "preaggregation": "nnm"}``; dashes in keys become underscores."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not raw.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (for example beta=0.2)")
        out[key] = _parse_value(raw.strip())
    return out


def _parse_value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        return raw


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> ``(host, port)``; an IPv6 host in brackets (``[::1]:8443``), returned
    without them. Raises ``ValueError`` for anything else."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def host_port_or_off(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    """Callback of an option saying where a server listens (``--metrics-address`` of
    ``fedwarden operator`` and ``fedwarden aggregator``): ``HOST:PORT`` (an IPv6 host in
    brackets, ``[::]:9090``; port 0 picks a free port) -> ``(host, port)``; ``off`` -> ``None``,
    no server."""
    if value is None or value == "off":
        return None
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{exc} (e.g. 0.0.0.0:9090; port 0 picks a free port) or 'off'"
        ) from exc


def host_port(address: tuple[str, int]) -> str:
    """``(host, port)`` as ``HOST:PORT``, an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


def choose_sides(value: str, sides: tuple[str, ...]) -> tuple[str, ...]:
    """A ``--sides`` value of the bench commands: comma-separated names of ``sides``, or
    ``all``; ``BadParameter`` naming the unknown ones."""
    if value.strip().lower() == "all":
        return sides
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in sides]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown side {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(sides)} (comma-separated) or 'all'"
        )
    return names
