"""``fedwarden bench``: benchmarks side by side with Flower in one run.

The logic lives in :mod:`fedwarden.bench`; this module parses options and presents results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedwarden.bench.aggregators import AGGREGATORS
from fedwarden.commands._common import console, emit_json, json_option, user_errors
from fedwarden.commands.bench_apps import apps
from fedwarden.commands.bench_defences import defences
from fedwarden.commands.bench_model_size import model_size
from fedwarden.commands.bench_privacy import privacy_units
from fedwarden.commands.bench_runtime import runtime


def _int_list(minimum: int) -> Any:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise click.BadParameter("give a comma-separated list of integers, e.g. 10,50,100")
        out = []
        for item in items:
            try:
                number = int(item)
            except ValueError:
                raise click.BadParameter(
                    f"{item!r} is not an integer (give a comma-separated list, e.g. 10,50,100)"
                ) from None
            if number < minimum:
                raise click.BadParameter(f"{number} is too small: each value must be ≥ {minimum}")
            out.append(number)
        return tuple(out)

    return parse


def _name_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    if value.strip().lower() == "all":
        return AGGREGATORS
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in AGGREGATORS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown aggregator {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(AGGREGATORS)} (comma-separated) or 'all'"
        )
    return names


@click.group()
def bench() -> None:
    """Benchmarks of fedwarden side by side with Flower, in one run on the same inputs."""


@bench.command("aggregators")
@click.option(
    "--clients",
    default="10,50,100",
    show_default=True,
    callback=_int_list(3),
    help="Cohort sizes n, comma-separated.",
)
@click.option(
    "--dims",
    default="100000,1000000",
    show_default=True,
    callback=_int_list(1),
    help="Update dimensions d (float32), comma-separated.",
)
@click.option(
    "--aggregators",
    "names",
    default="all",
    show_default=True,
    callback=_name_list,
    help=f"Aggregators to run, comma-separated: {', '.join(AGGREGATORS)}.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Minimum repetitions per case (fast cases run more; the median is reported).",
)
@click.option(
    "--max-seconds-per-case",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Time cap per implementation and case; a call still running then is reported as '> cap'.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the inputs.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the results as JSON to this file (e.g. benchmarks/aggregators.json).",
)
@click.option(
    "--markdown",
    is_flag=True,
    help="Print the results as the markdown that goes into benchmarks/README.md.",
)
@json_option
def aggregators(
    clients: tuple[int, ...],
    dims: tuple[int, ...],
    names: tuple[str, ...],
    repeat: int,
    max_seconds_per_case: float,
    seed: int,
    output: Path | None,
    markdown: bool,
    as_json: bool,
) -> None:
    """Time fedwarden's aggregators against Flower's on the same matrices.

    For every n in --clients and d in --dims, one float32 matrix is drawn (fixed seed, a few
    outliers) and each aggregator is timed: ours, the fastest Flower 1.42 function with the same
    definition, and updates.mean(0) as a memory-bound floor. Prints times, speed-ups, peak extra
    memory, whether outputs agree, and the targets at n=50, d=1M.
    """
    from fedwarden.bench import aggregators as agg_bench

    if as_json and markdown:
        raise click.UsageError("--json and --markdown both print to stdout: choose one")

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
                task = progress.add_task("starting", total=None)

                def on_progress(done: int, total: int, label: str) -> None:
                    if label:
                        progress.update(task, completed=done, total=total, description=label)
                    else:
                        progress.update(task, completed=done, total=total)

                result = agg_bench.run(
                    clients,
                    dims,
                    names,
                    repeat=repeat,
                    max_seconds_per_case=max_seconds_per_case,
                    seed=seed,
                    on_progress=on_progress,
                )
        except agg_bench.FlowerNotInstalledError as exc:
            raise click.ClickException(str(exc)) from exc

    payload = result.to_dict()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    if as_json:
        emit_json(payload)
    elif markdown:
        click.echo(agg_bench.to_markdown(result), nl=False)
    _print_table(result)
    if output is not None:
        console.print(f"results written to {output}")


def _print_table(result: Any) -> None:
    from fedwarden.bench import aggregators as agg_bench

    table = Table(
        title=f"aggregators vs Flower {result.environment.flwr} (seed {result.seed}, "
        f"{result.f_rule.split(' (')[0]})",
        caption="speed-up = Flower / ours; ours/mean = ours / updates.mean(0); "
        "peak MB = extra memory of ours; other CPUs = used by other processes meanwhile",
    )
    right = {
        "n",
        "d",
        "ours",
        "Flower",
        "speed-up",
        "mean(0)",
        "ours/mean",
        "peak MB",
        "other CPUs",
    }
    for column in agg_bench.COLUMNS:
        table.add_column(column, justify="right" if column in right else "left")
    for row in agg_bench.table_rows(result):
        style = "red" if row["target"] == "FAIL" or row["agreement"].startswith("WARN") else None
        table.add_row(*(row[c] for c in agg_bench.COLUMNS), style=style)
    console.print(table)
    for t in result.targets:
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]n/a[/]"}[t.passed]
        console.print(f"target {t.aggregator}: {t.detail}: {mark}")


bench.add_command(runtime)
bench.add_command(apps)
bench.add_command(model_size)
bench.add_command(defences)
bench.add_command(privacy_units)
