"""``fedwarden demo``: the main job, on embedded defaults, without a cluster."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedwarden.commands._common import console, emit_json, json_option
from fedwarden.demo.run import DemoConfig, DemoResult, run_demo


@click.command()
@click.option("--rounds", type=click.IntRange(min=1), default=DemoConfig.rounds, show_default=True)
@click.option(
    "--honest",
    type=click.IntRange(min=3),
    default=DemoConfig.honest,
    show_default=True,
    help="Honest clients besides the one behind the man in the middle (4 more take part).",
)
@click.option(
    "--epsilon",
    type=click.FloatRange(min=0, min_open=True),
    default=DemoConfig.epsilon,
    show_default=True,
    help="Example-level DP budget of each honest client (DP-SGD), at δ = 1e-5.",
)
@click.option("--no-dp", is_flag=True, help="Train without differential privacy.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep certificates, logs and the report here [default: a temporary directory].",
)
@json_option
def demo(
    rounds: int, honest: int, epsilon: float, no_dp: bool, workdir: Path | None, as_json: bool
) -> None:
    """Run a secure federated training between processes on 127.0.0.1, under attack.

    A per-training CA; an aggregator and ten clients as separate processes over mutual TLS
    with signed updates; two clients poison, one free-rides, one sits behind a man in the
    middle that alters its update in transit; honest clients train with DP-SGD at ε ≤ 1.
    Ends with the accuracy, the ε spent, each client's fate and whether every defence held
    (exit code 1 if one did not).
    """
    if workdir is not None:
        _check_writable(workdir)
    config = DemoConfig(
        rounds=rounds, honest=honest, epsilon=None if no_dp else epsilon, workdir=workdir
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        # with --json the output is for a machine: no bar, and not even the blank line a
        # transient bar leaves on stderr
        disable=as_json,
    ) as progress:
        task = progress.add_task("rounds", total=rounds, status="starting processes")

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "round_started":
                progress.update(
                    task, status=f"round {event['round']}: {len(event['sampled'])} sampled"
                )
            elif event["event"] == "round_finished":
                accuracy = event["metrics"].get("accuracy")
                shown = f"accuracy {accuracy:.3f}" if accuracy is not None else ""
                progress.update(
                    task,
                    completed=event["round"],
                    status=(
                        f"{len(event['accepted'])} aggregated, "
                        f"{len(event['rejected'])} refused {shown}"
                    ),
                )

        result = run_demo(config, on_event)
    if as_json:
        emit_json(result.to_dict())
    else:
        _print(result)
    if not result.held:
        raise SystemExit(1)


def _epsilon(value: float) -> str:
    """ε with three decimals, rounded up: a table never shows less than what was spent."""
    return f"{math.ceil(value * 1000 - 1e-9) / 1000:.3f}"


def _check_writable(workdir: Path) -> None:
    """A one-line error now rather than a traceback from a process that cannot write there."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as exc:
        raise click.ClickException(
            f"cannot use --workdir {workdir}: {exc.strerror or exc}"
        ) from exc


def _print(result: DemoResult) -> None:
    table = Table(title="clients", show_lines=False)
    for column in ("client", "role", "aggregated", "refused", "banned / last refusal", "ε"):
        # the reasons are whole sentences (a cut one hides the threshold): wrapped, never cut
        table.add_column(column, overflow="fold")
    for c in result.clients:
        fate = c["banned"] or c["last_refusal"] or ""
        eps = _epsilon(c["epsilon"]) if c["epsilon"] is not None else ""
        table.add_row(
            c["client"], c["role"], str(c["accepted_rounds"]), str(c["refusals"]), fate, eps
        )
    console.print(table)
    summary = Table(title="outcome", show_header=False)
    accuracy = "—" if result.accuracy is None else f"{result.accuracy:.3f}"
    summary.add_row("accuracy (test set)", accuracy)
    summary.add_row("same training without DP", f"{result.reference_accuracy:.3f} (in-process)")
    spent = "none" if result.epsilon is None else _epsilon(result.epsilon)
    summary.add_row(f"ε spent (δ = {result.delta:g})", spent)
    summary.add_row("guarantee", result.guarantee)
    summary.add_row("rounds", f"{result.rounds} ({result.status})")
    summary.add_row("time", f"{result.seconds} s")
    console.print(summary)
    verdicts = Table(title="defences")
    verdicts.add_column("defence")
    verdicts.add_column("held")
    verdicts.add_column("detail")
    for name, d in result.defences.items():
        verdicts.add_row(name, "[green]yes" if d["held"] else "[red]NO", d["detail"])
    console.print(verdicts)
