"""``fedwarden bench defences``: the defence matrix (defences × attacks) and the free-rider test.

The logic lives in :mod:`fedwarden.bench.defences`; this module parses options, shows a progress bar
over the simulations and presents the tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedwarden.commands._common import console, emit_json, json_option, user_errors
from fedwarden.sim.datasets import DATASETS
from fedwarden.sim.models import MODELS


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None or value.strip().lower() == "all":
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter("give a comma-separated list of names, or 'all'")
    return names


def _pick(kind: str, wanted: tuple[str, ...] | None, available: tuple[Any, ...]) -> tuple[Any, ...]:
    if wanted is None:
        return available
    by_name = {item.name: item for item in available}
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise click.BadParameter(
            f"unknown {kind} {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(by_name)} (comma-separated) or 'all'",
            param_hint=f"--{kind}s",
        )
    return tuple(by_name[name] for name in wanted)


@click.command("defences")
@click.option(
    "--dataset",
    type=click.Choice(DATASETS, case_sensitive=False),
    default="digits",
    show_default=True,
    help="Offline data set every cell trains on.",
)
@click.option(
    "--model",
    type=click.Choice(MODELS, case_sensitive=False),
    default="mlp",
    show_default=True,
    help="logreg or mlp.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=None,
    help="Rounds per run [default: 60; 50 with --small-consortia].",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Runs per cell, with seeds 0..N-1; cells report the mean.",
)
@click.option(
    "--clients", type=click.IntRange(min=3), default=25, show_default=True, help="Population."
)
@click.option(
    "--attackers",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Attackers among the clients (all take part in every round).",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="Dirichlet concentration of the label skew.",
)
@click.option(
    "--free-riders",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Free riders per run of the free-rider experiment (no attackers there).",
)
@click.option(
    "--defences",
    "defence_names",
    default=None,
    callback=_names,
    metavar="NAMES",
    help="Rows to run, comma-separated [default: all; see --list].",
)
@click.option(
    "--attacks",
    "attack_names",
    default=None,
    callback=_names,
    metavar="NAMES",
    help="Columns to run, comma-separated [default: all; see --list].",
)
@click.option(
    "--no-free-riders",
    is_flag=True,
    help="Skip the free-rider experiment.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Worker processes (each simulation is single-threaded).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the results as JSON to this file (e.g. benchmarks/defence-matrix.json).",
)
@click.option(
    "--markdown", is_flag=True, help="Print the tables as Markdown on stdout (for benchmarks/)."
)
@click.option(
    "--small-consortia",
    is_flag=True,
    help="Run the small-consortium grid instead: the recommended configuration with 3, 5, 8 "
    "and 10 sites (IID and Dirichlet, wine and breast-cancer logreg, digits mlp), 0 to 2 "
    "attackers per attack, one free rider of each kind; honest sites struck and banned, "
    "attackers and free riders banned, accuracy against plain FedAvg, as Markdown tables. "
    "--rounds, --seeds, --processes, --output and --json apply.",
)
@click.option("--list", "list_only", is_flag=True, help="List the rows and columns, run nothing.")
@json_option
def defences(
    dataset: str,
    model: str,
    rounds: int | None,
    seeds: int,
    clients: int,
    attackers: int,
    alpha: float,
    free_riders: int,
    defence_names: tuple[str, ...] | None,
    attack_names: tuple[str, ...] | None,
    no_free_riders: bool,
    processes: int,
    output: Path | None,
    markdown: bool,
    small_consortia: bool,
    list_only: bool,
    as_json: bool,
) -> None:
    """The defence matrix: every defence against every attack, and free-rider detection.

    Each cell is a simulated training (as `fedwarden simulate` runs it): 25 clients of which 5
    attackers, Dirichlet α=0.5 label skew, every client in every round; the final test accuracy
    is averaged over the seeds. Rows: plain FedAvg, every rule but block-dnc inside the full
    pipeline, pre-aggregated variants, block-wise DnC, and the recommended configuration. Then
    3 free riders of each kind (no attackers) measure the bans. Ends with the table, each row's
    worst case and whether the recommended row meets fedwarden's criteria.

    \b
    Examples:
      fedwarden bench defences
      fedwarden bench defences --markdown --output benchmarks/defence-matrix.json
      fedwarden bench defences --defences fedavg,recommended --attacks none,alie --seeds 1
      fedwarden bench defences --small-consortia --markdown --output benchmarks/small-consortia.json
    """
    from fedwarden.bench import defences as matrix

    if as_json and markdown:
        raise click.UsageError("--json and --markdown both print to stdout: choose one")
    if small_consortia:
        _small_consortia(rounds or 50, seeds, processes, output, as_json)
        return
    all_defences = matrix.default_defences()
    if list_only:
        _print_list(all_defences, matrix.ATTACK_COLUMNS)
        return
    chosen_defences = _pick("defence", defence_names, all_defences)
    chosen_attacks = _pick("attack", attack_names, matrix.ATTACK_COLUMNS)
    with user_errors():
        config = matrix.MatrixConfig(
            dataset=dataset,
            model=model,
            clients=clients,
            attackers=attackers,
            alpha=alpha,
            rounds=rounds or 60,
            seeds=tuple(range(seeds)),
            defences=chosen_defences,
            attacks=chosen_attacks,
            free_rider_kinds=() if no_free_riders else matrix.MatrixConfig.free_rider_kinds,
            free_riders=free_riders,
            processes=processes,
        )
        with _progress() as progress:
            task = progress.add_task("simulations", total=None, last="")

            def on_cell(cell: Any, done: int, total: int) -> None:
                column = getattr(cell, "attack", None) or f"free riders: {cell.kind}"
                progress.update(
                    task,
                    completed=done,
                    total=total,
                    last=f"{cell.defence} × {column}, seed {cell.seed}: {100 * cell.accuracy:.1f}%",
                )

            result = matrix.run_matrix(config, progress=on_cell)

    payload = result.to_dict()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if as_json:
        emit_json(payload)
    elif markdown:
        click.echo(matrix.markdown_tables(result), nl=False)
    _print_tables(result)
    if output is not None:
        console.print(f"results written to {output}")


def _small_consortia(
    rounds: int, seeds: int, processes: int, output: Path | None, as_json: bool
) -> None:
    """The grid of :mod:`fedwarden.bench.consortia`; its tables are Markdown on stdout."""
    from fedwarden.bench import consortia

    with user_errors():
        grid = consortia.ConsortiumGrid(
            rounds=rounds, seeds=tuple(range(seeds)), processes=processes
        )
        with _progress() as progress:
            task = progress.add_task("trainings", total=None, last="")

            def on_run(run: Any, done: int, total: int) -> None:
                what = run.attack if run.free_rider_kind is None else run.free_rider_kind
                progress.update(
                    task,
                    completed=done,
                    total=total,
                    last=f"{run.task}, {run.sites} sites, {run.partition}, {what}: "
                    f"{100 * run.accuracy:.1f}%",
                )

            result = consortia.run_consortia(grid, progress=on_run)
    payload = result.to_dict()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if as_json:
        emit_json(payload)
    else:
        click.echo(consortia.markdown_tables(result), nl=False)
    if output is not None:
        console.print(f"results written to {output}")


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )


def _print_list(all_defences: tuple[Any, ...], columns: tuple[Any, ...]) -> None:
    table = Table(title="rows (--defences)")
    table.add_column("name")
    table.add_column("aggregator")
    table.add_column("parameters")
    table.add_column("notes")
    for d in all_defences:
        params = ", ".join(f"{k}={v}" for k, v in dict(d.pipeline.aggregator_params).items())
        table.add_row(d.name, d.pipeline.aggregator, params, d.description)
    console.print(table)
    table = Table(title="columns (--attacks)")
    table.add_column("name")
    table.add_column("attack")
    table.add_column("what the attackers send")
    for a in columns:
        params = ", ".join(f"{k}={v:g}" for k, v in dict(a.params).items())
        table.add_row(a.name, a.attack + (f" ({params})" if params else ""), a.description)
    console.print(table)


_SHORT = {"sign-flip": "flip", "gaussian": "gauss", "label-flip": "label", "backdoor": "bkdr"}
"""Short column headings, so that the table fits a terminal."""


def _width() -> int | None:
    """The console's width in a terminal; wide enough for the whole table in a file or pipe."""
    return None if console.is_terminal else max(console.width, 150)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _print_tables(result: Any) -> None:
    cfg = result.config
    columns = [a.name for a in cfg.attacks]
    rows = result.rows()
    best = max(r.worst for r in rows)
    table = Table(
        title=f"defence matrix: {cfg.dataset} {cfg.model}, {cfg.clients} clients of which "
        f"{cfg.attackers} attackers, Dirichlet α={cfg.alpha:g}, {cfg.rounds} rounds, "
        f"{len(cfg.seeds)} seed(s)",
        caption="final test accuracy (%); worst = lowest over the columns; backdoor = success "
        "rate (%) of the backdoor column; † rounds skipped, ‡ a run never trained",
    )
    table.add_column("defence", no_wrap=True)
    for column in columns:
        table.add_column(_SHORT.get(column, column), justify="right", no_wrap=True)
    table.add_column("worst", justify="right", no_wrap=True)
    table.add_column("backdoor", justify="right", no_wrap=True)
    table.add_column("honest bans", justify="right")
    for row in rows:
        cells = []
        for column in columns:
            text = _pct(row.accuracy.get(column))
            if column in row.never_trained:
                text += "‡"
            elif row.skipped_rounds.get(column):
                text += "†"
            cells.append(text)
        worst = _pct(row.worst)
        if row.worst == best:
            worst = f"[bold green]{worst}[/]"
        name = f"[bold]{row.defence}[/]" if row.defence == cfg.recommended else row.defence
        table.add_row(name, *cells, worst, _pct(row.backdoor_success), str(row.honest_banned))
    console.print(table, width=_width())
    riders = result.free_rider_table()
    if riders:
        kinds = list(cfg.free_rider_kinds)
        table = Table(
            title=f"free riders: {cfg.free_riders} per run, no attackers",
            caption="F1 of the bans as a free-rider detector, lowest over the seeds "
            "(free riders banned / present)",
        )
        table.add_column("defence", no_wrap=True)
        for kind in kinds:
            table.add_column(kind, justify="right", no_wrap=True)
        table.add_column("honest bans", justify="right")
        for defence, by_kind in riders.items():
            cells = []
            honest = 0
            for kind in kinds:
                s = by_kind.get(kind)
                if s is None:
                    cells.append("")
                    continue
                honest += int(s["honest_banned"] or 0)
                cells.append(f"{s['f1_min']:.2f} ({s['free_riders_banned']}/{s['free_riders']})")
            table.add_row(defence, *cells, str(honest))
        console.print(table, width=_width())
    for c in result.criteria():
        mark = "[green]pass[/]" if c.passed else "[red]FAIL[/]"
        console.print(f"{c.name}: {mark} — {c.detail}")
    console.print(
        f"{len(result.cells) + len(result.free_rider_cells)} runs in {result.seconds:.0f} s"
    )
