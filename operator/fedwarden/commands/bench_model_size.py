"""``fedwarden bench model-size``: a large app (25M parameters by default) through fedwarden's
runtime with 10 clients, round time and the aggregator's peak memory. The logic lives in
:mod:`fedwarden.bench.model_size`; this module parses options and presents results."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from fedwarden.commands._common import console, emit_json, json_option, user_errors


def _pipelines(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from fedwarden.bench.model_size import PIPELINES

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in PIPELINES]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown pipeline {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(PIPELINES)} (comma-separated)"
        )
    return names


@click.command("model-size")
@click.option(
    "--clients", type=click.IntRange(min=1), default=10, show_default=True, help="Clients N."
)
@click.option(
    "--params",
    type=click.IntRange(min=1),
    default=25_000_000,
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
    "--pipelines",
    default="recommended,fedavg",
    show_default=True,
    callback=_pipelines,
    help="Deployments, one per pipeline, comma-separated: recommended, fedavg (the baseline).",
)
@click.option(
    "--in-process/--no-in-process",
    default=True,
    show_default=True,
    help="Also time the pipelines and mean(0) on the N × d matrix in this process (it needs "
    "two such matrices of memory).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    help="Seconds one deployment may take before it is stopped and reported as failed.",
)
@click.option("--keep-logs", is_flag=True, help="Keep every deployment's logs.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the results as JSON to this file (e.g. benchmarks/model-size.json).",
)
@click.option(
    "--markdown", is_flag=True, help="Print the results as markdown (benchmarks/model-size.md)."
)
@json_option
def model_size(
    clients: int,
    params: int,
    rounds: int,
    warmup: int,
    pipelines: tuple[str, ...],
    in_process: bool,
    timeout: float,
    keep_logs: bool,
    output: Path | None,
    markdown: bool,
    as_json: bool,
) -> None:
    """Train an app of --params float32 parameters with --clients clients over the runtime.

    fedwarden's aggregator and N `fedwarden client --app` processes on 127.0.0.1 (mutual TLS,
    signed updates, a checkpoint per round) run a synthetic NumPyClient of d parameters
    (fedwarden.bench.synthetic_app), with the recommended pipeline and with plain FedAvg as
    the baseline. Prints seconds per round, the aggregator's peak resident size (the kernel's
    VmHWM) against the N × d float32 matrix of a round's updates, and, in this process, the
    pipelines' and mean(0)'s time and memory on that matrix. Exits 1 if a deployment fails.
    """
    from fedwarden.bench import model_size as bench_model_size

    if as_json and markdown:
        raise click.UsageError("--json and --markdown both print to stdout: choose one")
    parts = [
        "fedwarden bench model-size",
        f"--clients {clients} --params {params} --rounds {rounds} --warmup {warmup}",
        f"--pipelines {','.join(pipelines)}",
    ]
    if not in_process:
        parts.append("--no-in-process")
    if output is not None:
        parts.append(f"--output {shlex.quote(str(output))}")
    if markdown:
        parts.append("--markdown")
    command = " ".join(parts)
    with user_errors(), console.status("starting") as status:
        result = bench_model_size.run(
            clients=clients,
            params=params,
            rounds=rounds,
            warmup=warmup,
            pipelines=pipelines,
            timeout=timeout,
            keep_logs=keep_logs,
            in_process=in_process,
            on_progress=lambda label: status.update(label),
        )
    payload = result.to_dict()
    payload["command"] = command
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if as_json:
        emit_json(payload)
    elif markdown:
        click.echo(bench_model_size.to_markdown(result, command=command), nl=False)
    _print_table(result)
    if output is not None:
        console.print(f"results written to {output}")
    failed = [side for side in result.runtime.values() if side.status != "ok"]
    for side in failed:
        console.print(f"[red]{side.pipeline} failed:[/] {side.detail.splitlines()[0]}")
    if failed:
        sys.exit(1)


def _print_table(result: Any) -> None:
    table = Table(
        title=f"model size: N = {result.clients}, d = {result.params:,} float32 "
        f"({result.model_mb:,.0f} MiB; N · d · 4 = {result.matrix_mb:,.0f} MiB)",
        caption="s/round = median of the timed rounds; peak RSS = the aggregator's VmHWM",
    )
    for column in ("pipeline", "s/round", "aggregator peak RSS", "÷ N·d·4", "status"):
        table.add_column(column, justify="left" if column in ("pipeline", "status") else "right")
    for name, side in result.runtime.items():
        peak = side.aggregator_peak_rss_mb
        table.add_row(
            name,
            "—" if side.seconds_per_round is None else f"{side.seconds_per_round:.2f}",
            "—" if peak is None else f"{peak:,.0f} MiB",
            "—" if peak is None else f"{peak / result.matrix_mb:.2f}",
            side.status,
        )
    console.print(table)
    for call in result.in_process:
        console.print(
            f"in process: {call.name}: {call.seconds:.3f} s, "
            f"{call.peak_extra_mb:,.0f} MiB above its input"
        )
