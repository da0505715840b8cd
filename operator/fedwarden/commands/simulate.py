"""``fedwarden simulate``: a whole federated training in one process, under attack.

The logic lives in :mod:`fedwarden.sim`; this module turns options into a
:class:`~fedwarden.sim.runner.SimulationConfig`, shows a progress bar and presents the result.
"""

from __future__ import annotations

import math
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedwarden.commands._common import console, emit_json, json_option, key_values, user_errors
from fedwarden.commands._pipeline_options import (
    effective_sampling,
    pipeline_config,
    pipeline_options,
)
from fedwarden.sim.attacks import ATTACKS
from fedwarden.sim.datasets import DATASETS
from fedwarden.sim.freeriders import FREE_RIDERS
from fedwarden.sim.models import MODELS
from fedwarden.sim.partition import PARTITIONS


def _choice(values: tuple[str, ...]) -> click.Choice[str]:
    return click.Choice(values, case_sensitive=False)


@click.command()
@click.option(
    "--dataset",
    type=_choice(DATASETS),
    default="digits",
    show_default=True,
    help="Offline data set (scikit-learn's digits, breast-cancer, wine; mnist1d "
    "generated locally).",
)
@click.option(
    "--dataset-size",
    type=click.IntRange(min=100),
    default=None,
    help="Samples to generate for mnist1d (default 5000).",
)
@click.option(
    "--model",
    type=_choice(MODELS),
    default="mlp",
    show_default=True,
    help="logreg (multinomial logistic regression) or mlp (one hidden ReLU layer).",
)
@click.option(
    "--hidden",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Hidden units of the MLP.",
)
@click.option(
    "--clients",
    type=click.IntRange(min=1),
    default=25,
    show_default=True,
    help="Population size, attackers and free riders included.",
)
@click.option(
    "--attackers",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="How many clients are attackers.",
)
@click.option(
    "--attack",
    type=_choice(ATTACKS),
    default="alie",
    show_default=True,
    help="What the attackers do.",
)
@click.option(
    "--attack-param",
    "attack_params",
    multiple=True,
    callback=key_values,
    metavar="KEY=VALUE",
    help="Attack parameter, repeatable: sign-flip scale, gaussian sigma, ipm eps, "
    "alie z, sybil lam, backdoor target/trigger_size/poison_fraction/boost.",
)
@click.option(
    "--attacker-examples",
    "attacker_claimed_examples",
    type=click.IntRange(min=1),
    default=None,
    help="How many training examples each attacker claims [default: its true count]; "
    "count-weighted FedAvg trusts it, the robust rules ignore it.",
)
@click.option(
    "--free-riders",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="How many clients are free riders.",
)
@click.option(
    "--free-rider-kind",
    type=_choice(FREE_RIDERS),
    default="replay-noise",
    show_default=True,
    help="What the free riders send.",
)
@click.option(
    "--partition",
    type=_choice(PARTITIONS),
    default="dirichlet",
    show_default=True,
    help="How the training data is split across clients.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="Dirichlet concentration (smaller: more label skew).",
)
@click.option(
    "--shards-per-client",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Shards per client for --partition shards.",
)
@click.option(
    "--rounds", type=click.IntRange(min=1), default=30, show_default=True, help="Training rounds."
)
@click.option(
    "--clients-per-round",
    type=click.IntRange(min=1),
    default=None,
    help="Clients sampled per round [default: all clients not banned].",
)
@click.option(
    "--sampling",
    type=_choice(("fixed", "poisson")),
    default=None,
    help="fixed: exactly --clients-per-round; poisson: each client with probability "
    "clients-per-round/clients, which DP accounting then assumes [default: poisson with --dp, "
    "fixed without].",
)
@click.option(
    "--local-epochs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Local passes over a client's data per round.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=0.1,
    show_default=True,
    help="Local SGD learning rate.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Local SGD mini-batch size.",
)
@click.option(
    "--example-clip-norm",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="--dp record: DP-SGD's bound C on each example's gradient.",
)
@pipeline_options
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds everything: split, partition, roles, sampling, training, attacks, noise.",
)
@json_option
def simulate(**options: Any) -> None:
    """Simulate a federated training with attackers, free riders and fedwarden's defences.

    Everything runs in this process on offline data: clients train a numpy model locally,
    attackers craft poisoned updates, free riders send cheap fakes, and every round goes
    through fedwarden's pipeline (validation, free-rider tests, clipping, robust aggregation,
    DP). The defaults are a demonstration: digits, 25 clients of which 5 ALIE attackers and 2
    free riders, Dirichlet α=0.5, the recommended defences.

    \b
    Examples:
      fedwarden simulate
      fedwarden simulate --defence none --attack sign-flip
      fedwarden simulate --aggregator krum --agg-param f=5 --attack sybil
      fedwarden simulate --attack backdoor --attack-param boost=5 --json
      fedwarden simulate --dataset breast-cancer --model logreg --clients 5 \\
          --attackers 0 --free-riders 0 --partition iid --rounds 20 --dp record \\
          --target-epsilon 1
      fedwarden simulate --dataset mnist1d --dataset-size 30000 --clients 1000 \\
          --attackers 0 --free-riders 0 --partition iid --clients-per-round 100 \\
          --rounds 100 --defence none --clipping fixed --dp central --target-epsilon 1
    """
    from fedwarden.sim.runner import RoundRecord, run_simulation

    as_json = options.pop("as_json")
    with user_errors():
        config = _build_config(options)
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as progress:
            task = progress.add_task("loading data", total=config.rounds, status="")

            def on_round(record: RoundRecord) -> None:
                status = f"accuracy {record.accuracy:.3f}"
                if record.backdoor_success is not None:
                    status += f"  backdoor {record.backdoor_success:.2f}"
                if config.pipeline.privacy.mode != "none":
                    status += f"  ε {record.epsilon:.3g}"
                progress.update(task, completed=record.round, description="round", status=status)

            result = run_simulation(config, progress=on_round)

    if as_json:
        emit_json(result.to_dict())
    _print_result(result)


def _build_config(options: dict[str, Any]) -> Any:
    from fedwarden.sim.runner import SimulationConfig

    pipeline = pipeline_config(
        options,
        rounds=options["rounds"],
        sample_rate=_sample_rate(options),
        sampling=effective_sampling(options),
    )
    return SimulationConfig(
        dataset=options["dataset"],
        dataset_size=options["dataset_size"],
        model=options["model"],
        hidden=options["hidden"],
        clients=options["clients"],
        attackers=options["attackers"],
        attack=options["attack"],
        attack_params=options["attack_params"],
        attacker_claimed_examples=options["attacker_claimed_examples"],
        free_riders=options["free_riders"],
        free_rider_kind=options["free_rider_kind"],
        partition=options["partition"],
        alpha=options["alpha"],
        shards_per_client=options["shards_per_client"],
        rounds=options["rounds"],
        clients_per_round=options["clients_per_round"],
        sampling=options["sampling"],
        local_epochs=options["local_epochs"],
        lr=options["lr"],
        batch_size=options["batch_size"],
        example_clip_norm=options["example_clip_norm"],
        seed=options["seed"],
        pipeline=pipeline,
    )


def _sample_rate(options: dict[str, Any]) -> float:
    k = options["clients_per_round"]
    return 1.0 if k is None else min(k / options["clients"], 1.0)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _print_result(result: Any) -> None:
    cfg = result.config
    pipe = cfg.pipeline
    honest = cfg.clients - cfg.attackers - cfg.free_riders
    params = ", ".join(f"{k}={v}" for k, v in dict(pipe.aggregator_params).items())
    clipping = pipe.clipping.mode
    if clipping != "none":
        clipping += f" (C={pipe.clipping.clip_norm:g})"
    privacy = pipe.privacy.mode
    if privacy != "none" and result.noise_multiplier is not None:
        privacy += f" (σ={result.noise_multiplier:.3g})"
    attack = cfg.attack + (
        " (" + ", ".join(f"{k}={v}" for k, v in dict(cfg.attack_params).items()) + ")"
        if cfg.attack_params
        else ""
    )
    if cfg.attacker_claimed_examples is not None:
        attack += f", claiming {cfg.attacker_claimed_examples} examples each"

    table = Table(title="fedwarden simulate", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row(
        "data",
        f"{cfg.dataset}, {cfg.model}, {cfg.partition}"
        + (f" α={cfg.alpha:g}" if cfg.partition == "dirichlet" else "")
        + f" (label skew {result.label_skew:.2f})",
    )
    table.add_row(
        "clients",
        f"{cfg.clients}: {honest} honest, {cfg.attackers} attackers "
        f"({attack}), {cfg.free_riders} free riders ({cfg.free_rider_kind})",
    )
    table.add_row(
        "defence",
        f"{pipe.aggregator}"
        + (f" ({params})" if params else "")
        + f", clipping {clipping}, DP {privacy}",
    )
    table.add_row(
        "rounds",
        f"{result.rounds_run} of {cfg.rounds}"
        + (f" — stopped: {result.stopped}" if result.stopped else ""),
    )
    if result.skipped:
        first, reason = next(iter(result.skipped.items()))
        table.add_row(
            "[yellow]skipped rounds[/]",
            f"[yellow]{len(result.skipped)} (round {first}: {reason})[/]",
        )
    table.add_row(
        "accuracy",
        f"[bold]{_pct(result.final_accuracy)}[/] (initial {_pct(result.initial_accuracy)})",
    )
    if result.backdoor_success is not None:
        table.add_row(
            "backdoor success",
            f"{_pct(result.backdoor_success)} (initial model "
            f"{_pct(result.initial_backdoor_success or 0.0)})",
        )
    if pipe.privacy.mode != "none":
        seeded = f", noise seeded with --seed {cfg.seed}" if result.noise_seeded else ""
        unit = (
            "record-level, the largest over sites"
            if pipe.privacy.mode == "record"
            else "client-level"
        )
        table.add_row(
            "privacy", f"ε = {result.epsilon:.3g} at δ = {result.delta:g} ({unit}){seeded}"
        )
    table.add_row(
        "banned",
        f"{len(result.attackers_banned)}/{cfg.attackers} attackers, "
        f"{len(result.free_riders_banned)}/{cfg.free_riders} free riders, "
        f"{len(result.honest_banned)}/{honest} honest",
    )
    det = result.free_rider_detection
    if cfg.free_riders:
        f1 = "—" if det.f1 is None else f"{det.f1:.2f}"
        precision = "—" if det.precision is None else f"{det.precision:.2f}"
        recall = "—" if det.recall is None else f"{det.recall:.2f}"
        table.add_row("free-rider bans", f"F1 {f1} (precision {precision}, recall {recall})")
    rejected = sum(result.rejections.values())
    by_role = ", ".join(
        f"{n} {role.replace('_', ' ')}" for role, n in sorted(result.rejections_by_role.items())
    )
    table.add_row("rejected updates", f"{rejected}" + (f" ({by_role})" if by_role else ""))
    for reason, count in result.rejections.items():
        table.add_row("", f"{count} × {reason}")
    table.add_row("time", f"{result.seconds:.1f} s")
    console.print(table)
    if not math.isfinite(result.final_loss):
        console.print("[red]the model diverged (non-finite loss)[/]")
