"""Small consortia: the recommended defences with 3 to 10 sites, where cohort statistics are thin.

A federation across hospitals, banks or plants has a handful of sites, each with much of the
data. The defence matrix (:mod:`fedwarden.bench.defences`) measures 25 clients; this grid measures
what changes with few: for every built-in task, number of sites, split (IID or Dirichlet label
skew), number of attackers and seed, one simulated training per attack column and per
free-rider kind under :meth:`PipelineConfig.recommended`, plus plain FedAvg without attack as
the accuracy reference. Each run reports how often honest sites were wrongly refused (a strike)
and banned, and how many attackers and free riders were banned.

Attackers are a minority in every run: 2 attackers only from 5 sites on. Free-rider runs have
one free rider and no attacker. Every run is an ordinary seeded simulation
(:meth:`ConsortiumGrid.simulation` builds its config), so any of them can be rerun alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import mean
from typing import Any

from fedwarden.bench.defences import ATTACK_COLUMNS, AttackColumn, run_in_pool
from fedwarden.pipeline.round import PipelineConfig

__all__ = [
    "ConsortiumGrid",
    "ConsortiumResult",
    "ConsortiumRun",
    "markdown_tables",
    "run_consortia",
]

_COLUMNS = {column.name: column for column in ATTACK_COLUMNS}


@dataclass(frozen=True)
class ConsortiumGrid:
    """What the small-consortium grid runs.

    Attributes:
        tasks: built-in tasks, ``<dataset>-<model>``.
        sites: consortium sizes.
        partitions: ``iid`` and/or ``dirichlet`` (label skew with concentration ``alpha``).
        attacker_counts: attackers per attacked run; a count is used only where the attackers
            are fewer than half the sites.
        attacks: columns of the defence matrix (:data:`~fedwarden.bench.defences.ATTACK_COLUMNS`).
        free_rider_kinds: one run with one free rider of each kind (no attacker).
        rounds, lr, local_epochs, batch_size, seeds: the training, as in the defence matrix.
        processes: worker processes.
    """

    tasks: tuple[str, ...] = ("wine-logreg", "breast-cancer-logreg", "digits-mlp")
    sites: tuple[int, ...] = (3, 5, 8, 10)
    partitions: tuple[str, ...] = ("iid", "dirichlet")
    alpha: float = 0.5
    attacker_counts: tuple[int, ...] = (1, 2)
    attacks: tuple[str, ...] = ("sign-flip", "gaussian", "ipm", "scaling", "alie")
    free_rider_kinds: tuple[str, ...] = ("zero", "noise", "replay", "replay-noise")
    rounds: int = 50
    lr: float = 0.1
    local_epochs: int = 1
    batch_size: int = 16
    seeds: tuple[int, ...] = (0, 1)
    processes: int = 2

    def __post_init__(self) -> None:
        unknown = sorted(set(self.attacks) - set(_COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown attack column {', '.join(unknown)}; choose from {', '.join(_COLUMNS)}"
            )
        if not self.sites or min(self.sites) < 3:
            raise ValueError(f"a consortium needs at least 3 sites, got {self.sites}")
        if not self.seeds or not self.tasks or not self.partitions:
            raise ValueError("give at least one task, partition and seed")
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        for run in self.runs()[:1]:
            self.simulation(run)  # every run must be a valid simulation: fail now

    def runs(self) -> list[ConsortiumRun]:
        """Every run of the grid, without results."""
        out: list[ConsortiumRun] = []
        for task in self.tasks:
            for sites in self.sites:
                for partition in self.partitions:
                    for seed in self.seeds:
                        base = ConsortiumRun(task, sites, partition, seed, "recommended")
                        out.append(base)
                        out.append(dataclasses.replace(base, defence="plain-fedavg"))
                        for count in self.attacker_counts:
                            if 2 * count >= sites:
                                continue
                            for attack in self.attacks:
                                out.append(
                                    dataclasses.replace(base, attackers=count, attack=attack)
                                )
                        for kind in self.free_rider_kinds:
                            out.append(dataclasses.replace(base, free_rider_kind=kind))
        return out

    def simulation(self, run: ConsortiumRun) -> Any:
        """The :class:`~fedwarden.sim.runner.SimulationConfig` of one run."""
        from fedwarden.sim.runner import SimulationConfig

        dataset, model = run.task.rsplit("-", 1)
        column: AttackColumn = _COLUMNS[run.attack]
        pipeline = (
            PipelineConfig.plain_fedavg()
            if run.defence == "plain-fedavg"
            else PipelineConfig.recommended()
        )
        return SimulationConfig(
            dataset=dataset,
            model=model,
            clients=run.sites,
            attackers=run.attackers,
            attack=column.attack,
            attack_params=dict(column.params),
            free_riders=0 if run.free_rider_kind is None else 1,
            free_rider_kind=run.free_rider_kind or "zero",
            partition=run.partition,
            alpha=self.alpha,
            rounds=self.rounds,
            lr=self.lr,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            seed=run.seed,
            pipeline=pipeline,
        )

    def summary(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["attack_columns"] = {
            name: {"attack": c.attack, "params": dict(c.params), "description": c.description}
            for name, c in _COLUMNS.items()
            if name in self.attacks
        }
        return out


@dataclass(frozen=True)
class ConsortiumRun:
    """One training of the grid and, once run, what it measured."""

    task: str
    sites: int
    partition: str
    seed: int
    defence: str
    attackers: int = 0
    attack: str = "none"
    free_rider_kind: str | None = None
    accuracy: float | None = None
    #: honest updates refused (each one a strike) over the whole training
    honest_strikes: int = 0
    #: honest site-rounds: rounds in which an honest site took part
    honest_site_rounds: int = 0
    honest_banned: int = 0
    attackers_banned: int = 0
    free_riders_banned: int = 0
    #: the first reason an honest site was refused, if one was
    first_honest_refusal: str | None = None
    seconds: float = 0.0


def _run_one(job: tuple[ConsortiumRun, Any]) -> ConsortiumRun:
    from fedwarden.sim.runner import run_simulation

    run, simulation = job
    started = time.perf_counter()
    result = run_simulation(simulation)
    dishonest = set(result.attackers) | set(result.free_riders)
    first_refusal = next(
        (
            reason
            for record in result.rounds
            for client, reason in record.rejected.items()
            if client not in dishonest
        ),
        None,
    )
    # an honest site takes part in every round until the one that bans it
    honest_sites = simulation.clients - len(dishonest)
    site_rounds = (honest_sites - len(result.honest_banned)) * result.rounds_run + sum(
        result.banned[client]["round"] for client in result.honest_banned
    )
    return dataclasses.replace(
        run,
        accuracy=result.final_accuracy,
        honest_strikes=result.rejections_by_role.get("honest", 0),
        honest_site_rounds=site_rounds,
        honest_banned=len(result.honest_banned),
        attackers_banned=len(result.attackers_banned),
        free_riders_banned=len(result.free_riders_banned),
        first_honest_refusal=first_refusal,
        seconds=time.perf_counter() - started,
    )


@dataclass
class ConsortiumResult:
    config: ConsortiumGrid
    runs: list[ConsortiumRun]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.summary(),
            "seconds": self.seconds,
            "runs": [dataclasses.asdict(r) for r in self.runs],
        }


def run_consortia(
    config: ConsortiumGrid, progress: Callable[[ConsortiumRun, int, int], None] | None = None
) -> ConsortiumResult:
    """Run every training of the grid; ``progress(run, done, total)`` after each."""
    started = time.perf_counter()
    runs = config.runs()
    jobs = [(run, config.simulation(run)) for run in runs]
    answers = run_in_pool(_run_one, jobs, config.processes, progress)
    return ConsortiumResult(config, answers, time.perf_counter() - started)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def markdown_tables(result: ConsortiumResult) -> str:
    """Honest sites, attackers and free riders by consortium size, as Markdown tables."""
    cfg = result.config
    runs = result.runs
    lines = [
        f"Recommended configuration, {len(cfg.tasks)} tasks ({', '.join(cfg.tasks)}), "
        f"{' and '.join(cfg.partitions)} splits (Dirichlet α = {cfg.alpha:g}), {cfg.rounds} "
        f"rounds, seeds {', '.join(map(str, cfg.seeds))}; {len(runs)} trainings in "
        f"{result.seconds / 60:.0f} min.",
        "",
        "**Honest sites**, every run of the recommended configuration (with and without "
        "attackers or free riders): honest updates refused (a strike each) per 1,000 honest "
        "site-rounds, honest sites banned; accuracy without attack against plain FedAvg.",
        "",
        "| sites | split | runs | honest site-rounds | wrongly struck | per 1,000 | wrongly banned "
        "| accuracy, recommended | accuracy, plain FedAvg |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sites in cfg.sites:
        for partition in cfg.partitions:
            mine = [
                r
                for r in runs
                if r.sites == sites and r.partition == partition and r.defence == "recommended"
            ]
            clean = [r for r in mine if r.attackers == 0 and r.free_rider_kind is None]
            plain = [
                r
                for r in runs
                if r.sites == sites and r.partition == partition and r.defence == "plain-fedavg"
            ]
            rounds = sum(r.honest_site_rounds for r in mine)
            strikes = sum(r.honest_strikes for r in mine)
            lines.append(
                f"| {sites} | {partition} | {len(mine)} | {rounds} | {strikes} | "
                f"{1000 * strikes / rounds:.2f} | {sum(r.honest_banned for r in mine)} | "
                f"{_pct(_mean_accuracy(clean))} | {_pct(_mean_accuracy(plain))} |"
            )
    lines += [
        "",
        "**Attackers**: banned / present over every run of the column (both splits, every "
        "task and seed), honest sites banned in those runs, and the mean accuracy.",
        "",
        "| attack | sites | attackers | banned | honest banned | accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for attack in cfg.attacks:
        for sites in cfg.sites:
            for count in cfg.attacker_counts:
                mine = [
                    r
                    for r in runs
                    if r.attack == attack and r.sites == sites and r.attackers == count
                ]
                if not mine:
                    continue
                lines.append(
                    f"| {attack} | {sites} | {count} | "
                    f"{sum(r.attackers_banned for r in mine)}/{count * len(mine)} | "
                    f"{sum(r.honest_banned for r in mine)} | {_pct(_mean_accuracy(mine))} |"
                )
    lines += [
        "",
        "**Free riders**: one per run, no attacker; banned / present, honest sites banned.",
        "",
        "| kind | " + " | ".join(f"{s} sites" for s in cfg.sites) + " | honest banned |",
        "|---|" + "---:|" * (len(cfg.sites) + 1),
    ]
    for kind in cfg.free_rider_kinds:
        cells = []
        honest = 0
        for sites in cfg.sites:
            mine = [r for r in runs if r.free_rider_kind == kind and r.sites == sites]
            honest += sum(r.honest_banned for r in mine)
            cells.append(f"{sum(r.free_riders_banned for r in mine)}/{len(mine)}")
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {honest} |")
    return "\n".join(lines) + "\n"


def _mean_accuracy(runs: list[ConsortiumRun]) -> float | None:
    values = [r.accuracy for r in runs if r.accuracy is not None]
    return mean(values) if values else None
