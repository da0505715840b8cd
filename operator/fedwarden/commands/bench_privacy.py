"""``fedwarden bench privacy-units``: no DP, client-level and record-level DP side by side.

The logic lives in :mod:`fedwarden.bench.privacy_units`; this module parses options, shows a
progress bar over the simulations and presents the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedwarden.commands._common import console, emit_json, json_option, user_errors


def _list(kind: type) -> Any:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[Any, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        try:
            return tuple(kind(v) for v in items)
        except ValueError:
            raise click.BadParameter(f"give a comma-separated list, got {value!r}") from None

    return parse


@click.command("privacy-units")
@click.option(
    "--tasks",
    default="breast-cancer-logreg,wine-logreg,digits-logreg",
    show_default=True,
    callback=_list(str),
    help="Built-in tasks of the cross-silo grid, comma-separated.",
)
@click.option(
    "--sites",
    default="3,5,10",
    show_default=True,
    callback=_list(int),
    help="Numbers of sites of the cross-silo grid.",
)
@click.option(
    "--population-task",
    default="digits-logreg",
    show_default=True,
    help="The built-in task of the large populations.",
)
@click.option(
    "--populations",
    default="100,300,1000",
    show_default=True,
    callback=_list(int),
    help="Large numbers of small sites, where client-level DP becomes the better choice.",
)
@click.option(
    "--epsilon",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="ε of every DP run (client-level: the training's; record-level: each site's).",
)
@click.option(
    "--delta",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-5,
    show_default=True,
)
@click.option("--rounds", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Runs per cell, seeds 0..N-1; the table shows the mean.",
)
@click.option("--processes", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the results as JSON (e.g. benchmarks/privacy-units.json).",
)
@json_option
def privacy_units(
    tasks: tuple[str, ...],
    sites: tuple[int, ...],
    population_task: str,
    populations: tuple[int, ...],
    epsilon: float,
    delta: float,
    rounds: int,
    seeds: int,
    processes: int,
    output: Path | None,
    as_json: bool,
) -> None:
    """Which unit to protect: no DP vs client-level central DP vs record-level DP-SGD.

    Every cell is a simulation on an iid split of a built-in task, every site in every round,
    the same clipped mean in every mode, all DP at the same (ε, δ): a few large sites
    (cross-silo, e.g. hospitals) and large populations of small ones, so that the table shows
    where client-level DP overtakes record-level DP. Prints the table as Markdown.

    \b
    Examples:
      fedwarden bench privacy-units
      fedwarden bench privacy-units --output benchmarks/privacy-units.json
      fedwarden bench privacy-units --tasks breast-cancer-logreg --sites 5 --populations ''
    """
    from fedwarden.bench import privacy_units as units
    from fedwarden.client.tasks import split_task_name

    with user_errors():
        for task in (*tasks, population_task):
            split_task_name(task)
        config = units.UnitsConfig(
            tasks=tasks,
            sites=sites,
            population_task=population_task,
            populations=populations,
            epsilon=epsilon,
            delta=delta,
            rounds=rounds,
            seeds=tuple(range(seeds)),
            processes=processes,
        )
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as progress:
            bar = progress.add_task("simulations", total=None, last="")

            def on_progress(done: int, total: int, label: str) -> None:
                progress.update(bar, completed=done, total=total, last=label)

            result = units.run_privacy_units(config, on_progress)
    payload = result.to_dict()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if as_json:
        emit_json(payload)
    else:
        click.echo(units.markdown_table(result), nl=False)
    if output is not None:
        console.print(f"results written to {output}")
