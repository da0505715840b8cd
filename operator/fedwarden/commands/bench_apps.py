"""``fedwarden bench apps``: a Flower app trained by Flower's runtime and by fedwarden's, the
final models' accuracy side by side. The logic lives in :mod:`fedwarden.bench.apps`; this
module parses options and presents results."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from fedwarden.commands._common import (
    choose_sides,
    console,
    emit_json,
    json_option,
    user_errors,
)


def _sides(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from fedwarden.bench.apps import SIDES

    return choose_sides(value, SIDES)


@click.command("apps")
@click.option(
    "--app-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("examples/apps/flower_quickstart"),
    show_default=True,
    help="A Flower App directory (pyproject.toml with [tool.flwr.app]).",
)
@click.option(
    "--client-fn",
    metavar="MODULE:ATTR",
    default=None,
    help="The app's client_fn [default: client_fn of its clientapp's module].",
)
@click.option(
    "--server-fn",
    metavar="MODULE:ATTR",
    default=None,
    help="The app's server_fn [default: server_fn of its serverapp's module].",
)
@click.option(
    "--clients",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Clients; client i holds partition i.",
)
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True, help="Rounds.")
@click.option(
    "--app-config",
    metavar="KEY=VALUE",
    multiple=True,
    help="Run config values for both runtimes (repeat).",
)
@click.option(
    "--sides",
    default="all",
    show_default=True,
    callback=_sides,
    help="What to run, comma-separated: flower, fedwarden-fedavg, fedwarden-recommended.",
)
@click.option(
    "--metric",
    default="accuracy",
    show_default=True,
    help="The metric of the app's evaluate that is compared.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=1800.0,
    show_default=True,
    help="Seconds one run may take before it is stopped and reported as failed.",
)
@click.option("--keep-logs", is_flag=True, help="Keep every run's logs (failed ones always).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the results as JSON to this file (e.g. benchmarks/apps.json).",
)
@click.option(
    "--markdown", is_flag=True, help="Print the results as markdown (benchmarks/apps.md)."
)
@json_option
def apps(
    app_dir: Path,
    client_fn: str | None,
    server_fn: str | None,
    clients: int,
    rounds: int,
    app_config: tuple[str, ...],
    sides: tuple[str, ...],
    metric: str,
    timeout: float,
    keep_logs: bool,
    output: Path | None,
    markdown: bool,
    as_json: bool,
) -> None:
    """Train a Flower app, unchanged, under Flower's runtime and under fedwarden's.

    The same app, clients, rounds and partitions (client i holds node_config partition-id i
    of num-partitions N): a Flower 1.42 deployment (flower-superlink, N flower-supernode,
    flwr run with the app's own server_fn), then fedwarden's aggregator and N `fedwarden client
    --app` processes over mutual TLS with signed updates, with plain FedAvg and with the
    recommended pipeline. Both final models are evaluated by the same code (the app's evaluate
    on every partition's held-out data). Exits 1 if a fedwarden run fails or fedwarden's
    FedAvg lands more than 0.02 from Flower's accuracy.

    The app's run config must have num-server-rounds and min-clients; both are set here.
    """
    from fedwarden.bench import apps as bench_apps
    from fedwarden.bench._runtime_flower import FlowerNotInstalledError
    from fedwarden.client import AppError, parse_app_config

    if as_json and markdown:
        raise click.UsageError("--json and --markdown both print to stdout: choose one")
    try:
        overrides = parse_app_config(app_config)
    except AppError as exc:
        raise click.BadParameter(str(exc), param_hint="--app-config") from exc
    command = _command_line(
        app_dir, client_fn, server_fn, clients, rounds, app_config, sides, metric, output, markdown
    )
    with user_errors():
        app = bench_apps.FlowerApp.load(app_dir, client_fn=client_fn, server_fn=server_fn)
        try:
            with console.status("starting") as status:
                result = bench_apps.run(
                    app,
                    clients=clients,
                    rounds=rounds,
                    app_config=overrides,
                    sides=sides,
                    metric=metric,
                    timeout=timeout,
                    keep_logs=keep_logs,
                    on_progress=lambda label: status.update(label),
                )
        except FlowerNotInstalledError as exc:
            raise click.ClickException(str(exc)) from exc

    payload = result.to_dict()
    payload["command"] = command
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if as_json:
        emit_json(payload)
    elif markdown:
        click.echo(bench_apps.to_markdown(result, command=command), nl=False)
    _print_table(result)
    if output is not None:
        console.print(f"results written to {output}")
    ours_failed = False
    for side in result.sides.values():
        if side.status == "failed":
            console.print(f"[red]{side.side} failed:[/] {side.detail.splitlines()[0]}")
            ours_failed = ours_failed or side.side != bench_apps.FLOWER
    if ours_failed or result.passed is False:
        sys.exit(1)


def _command_line(
    app_dir: Path,
    client_fn: str | None,
    server_fn: str | None,
    clients: int,
    rounds: int,
    app_config: tuple[str, ...],
    sides: tuple[str, ...],
    metric: str,
    output: Path | None,
    markdown: bool,
) -> str:
    """The command that reproduces this run, written next to its results."""
    from fedwarden.bench.apps import SIDES

    parts = ["fedwarden bench apps", f"--app-dir {shlex.quote(str(app_dir))}"]
    if client_fn:
        parts.append(f"--client-fn {client_fn}")
    if server_fn:
        parts.append(f"--server-fn {server_fn}")
    parts += [f"--clients {clients}", f"--rounds {rounds}"]
    parts += [f"--app-config {shlex.quote(item)}" for item in app_config]
    if tuple(sides) != SIDES:
        parts.append(f"--sides {','.join(sides)}")
    if metric != "accuracy":
        parts.append(f"--metric {shlex.quote(metric)}")
    if output is not None:
        parts.append(f"--output {shlex.quote(str(output))}")
    if markdown:
        parts.append("--markdown")
    return " ".join(parts)


def _print_table(result: Any) -> None:
    table = Table(
        title=f"{result.client_fn}: {result.clients} clients, {result.rounds} rounds "
        f"(flwr {result.environment.flwr})",
        caption=f"final {result.metric} of each run's last global model, evaluated by the "
        f"same code; target |fedwarden (fedavg) − Flower| ≤ {result.tolerance:g}",
    )
    for column in ("runtime", f"final {result.metric}", "|Δ| to Flower", "seconds", "status"):
        table.add_column(column, justify="left" if column in ("runtime", "status") else "right")
    deltas = {
        "fedwarden-fedavg": result.difference,
        "fedwarden-recommended": result.difference_recommended,
    }
    for name, side in result.sides.items():
        delta = deltas.get(name)
        table.add_row(
            name,
            "—" if side.accuracy is None else f"{side.accuracy:.4f}",
            "—" if delta is None else f"{delta:.4f}",
            "—" if side.seconds is None else f"{side.seconds:.0f}",
            side.status,
        )
    console.print(table)
    mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]n/a[/]"}
    console.print(f"parity (fedavg against Flower): {mark[result.passed]}")
