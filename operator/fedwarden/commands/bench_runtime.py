"""``fedwarden bench runtime``: a round's overhead, fedwarden's runtime against a Flower
deployment. The logic lives in :mod:`fedwarden.bench.runtime`; this module parses options and
presents results."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedwarden.commands._common import (
    choose_sides,
    console,
    emit_json,
    json_option,
    user_errors,
)


def _clients(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter("give a comma-separated list of integers, e.g. 10,50")
    out = []
    for item in items:
        try:
            number = int(item)
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is not an integer (give a comma-separated list, e.g. 10,50)"
            ) from None
        if number < 1:
            raise click.BadParameter(f"{number} is too small: each value must be ≥ 1")
        out.append(number)
    return tuple(out)


def _sides(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from fedwarden.bench.runtime import SIDES

    return choose_sides(value, SIDES)


@click.command("runtime")
@click.option(
    "--clients",
    default="10,50",
    show_default=True,
    callback=_clients,
    help="Numbers of clients N, comma-separated; each runs as its own deployment.",
)
@click.option(
    "--params",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Model size d (float32 values).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Timed rounds per deployment (the median is reported).",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Untimed rounds before the timed ones.",
)
@click.option(
    "--sides",
    default="all",
    show_default=True,
    callback=_sides,
    help="What to run, comma-separated: flower, fedwarden-fedavg, fedwarden-recommended.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=1800.0,
    show_default=True,
    help="Seconds one deployment may take (start, rounds, stop) before it is stopped "
    "and reported as failed.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Longest pause before each deployment, ended early once the machine is quiet "
    "(at most one runnable task per CPU); 0: none.",
)
@click.option(
    "--keep-logs",
    is_flag=True,
    help="Keep every deployment's logs (failed ones are always kept); their directory is in "
    "the JSON.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the results as JSON to this file (e.g. benchmarks/runtime.json).",
)
@click.option(
    "--markdown",
    is_flag=True,
    help="Print the results as the markdown section that goes into benchmarks/README.md.",
)
@json_option
def runtime(
    clients: tuple[int, ...],
    params: int,
    rounds: int,
    warmup: int,
    sides: tuple[str, ...],
    timeout: float,
    settle: float,
    keep_logs: bool,
    output: Path | None,
    markdown: bool,
    as_json: bool,
) -> None:
    """Time one federated round without training: fedwarden's runtime against Flower's.

    For every N in --clients, three deployments on 127.0.0.1, one after the other: Flower 1.42
    (flower-superlink, N flower-supernode processes, a FedAvg ServerApp submitted with flwr
    run), then fedwarden's aggregator and N clients over mutual TLS with signed updates, with
    the fedavg pipeline and with the recommended one. Clients return a ready float32 update of
    --params values. Prints seconds per round (median of --rounds after --warmup), the ratio
    fedwarden/Flower and the target (< 0.1). Exits 1 if a fedwarden deployment fails or the
    target is missed; a failed Flower deployment is reported (with its cause) as a result.

    Needs the Flower extra (pip install 'fedwarden[flower]') for the Flower side.
    """
    from fedwarden.bench import runtime as rt

    if as_json and markdown:
        raise click.UsageError("--json and --markdown both print to stdout: choose one")

    command = _command_line(
        clients, params, rounds, warmup, sides, timeout, settle, output, markdown, as_json
    )
    with user_errors():
        try:
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as progress:
                task = progress.add_task("starting", total=len(clients) * len(sides))

                def on_progress(done: int, total: int, label: str) -> None:
                    progress.update(task, completed=done, total=total, description=label)

                result = rt.run(
                    clients,
                    params=params,
                    rounds=rounds,
                    warmup=warmup,
                    sides=sides,
                    timeout=timeout,
                    keep_logs=keep_logs,
                    on_progress=on_progress,
                    settle=settle,
                )
        except rt.FlowerNotInstalledError as exc:
            raise click.ClickException(str(exc)) from exc

    payload = result.to_dict()
    payload["command"] = command
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    if as_json:
        emit_json(payload)
    elif markdown:
        click.echo(rt.to_markdown(result, command=command), nl=False)
    _print_table(result)
    if output is not None:
        console.print(f"results written to {output}")
    failed = [
        side for case in result.cases for side in case.sides.values() if side.status == "failed"
    ]
    for side in failed:
        console.print(f"[red]{side.side} N={side.clients} failed:[/] {side.detail.splitlines()[0]}")
    ours_failed = any(side.side != rt.FLOWER for side in failed)
    if ours_failed or any(case.passed is False for case in result.cases):
        sys.exit(1)


def _command_line(
    clients: tuple[int, ...],
    params: int,
    rounds: int,
    warmup: int,
    sides: tuple[str, ...],
    timeout: float,
    settle: float,
    output: Path | None,
    markdown: bool,
    as_json: bool,
) -> str:
    """The command that reproduces this run, written next to its results."""
    from fedwarden.bench.runtime import SIDES

    parts = [
        "fedwarden bench runtime",
        f"--clients {','.join(map(str, clients))}",
        f"--params {params}",
        f"--rounds {rounds}",
        f"--warmup {warmup}",
    ]
    if tuple(sides) != SIDES:
        parts.append(f"--sides {','.join(sides)}")
    if timeout != 1800.0:
        parts.append(f"--timeout {timeout:g}")
    if settle != 30.0:
        parts.append(f"--settle {settle:g}")
    if output is not None:
        parts.append(f"--output {shlex.quote(str(output))}")
    if markdown:
        parts.append("--markdown")
    if as_json:
        parts.append("--json")
    return " ".join(parts)


def _print_table(result: Any) -> None:
    from fedwarden.bench import runtime as rt

    env = result.environment
    table = Table(
        title=f"round overhead, d = {result.params:,} float32, {result.rounds} timed rounds "
        f"after {result.warmup} warm-up (flwr {env.flwr}, {env.cpus_usable or env.cpu_count} "
        "CPUs)",
        caption="s/round = median over timed rounds; ratio = fedwarden (fedavg) / Flower",
    )
    for column in rt.COLUMNS:
        table.add_column(column, justify="right")
    for row in rt.table_rows(result):
        style = "red" if row[rt.COLUMNS[-1]] == "FAIL" else None
        table.add_row(*(row[c] for c in rt.COLUMNS), style=style)
    console.print(table)
    mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]n/a[/]"}
    for case in result.cases:
        console.print(f"target at N={case.clients}: {result.target}: {mark[case.passed]}")
