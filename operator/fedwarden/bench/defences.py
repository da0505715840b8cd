"""The defence matrix: every defence against every attack, on the same federation, in one run.

Rows are defences (:class:`Defence`: a name and a
:class:`~fedwarden.pipeline.round.PipelineConfig`), columns are attacks (:class:`AttackColumn`),
and a cell is the final test accuracy of a simulated training (:func:`~fedwarden.sim.runner.
run_simulation`) averaged over seeds. Every cell is an ordinary simulation, so any of them can be
rerun alone with ``fedwarden simulate`` (:meth:`MatrixConfig.simulation` builds its config).
Beside the accuracy, each row reports its **worst case** over the attack columns, the backdoor
success rate of the backdoor column, the rounds that were skipped (a cell whose rounds were all
skipped never trained) and the honest clients its bans hit.

A second experiment measures **free-rider detection**: no attackers, ``free_riders`` clients of
one kind (zero, noise, replay, replay plus noise) per run, and the precision, recall and F1 of
"banned" as a free-rider detector, with the honest clients banned.

:func:`check_criteria` then states, with numbers, whether the row named ``recommended`` meets
what fedwarden promises of its recommended configuration: a worst case far above plain FedAvg's
(at least ``far_above`` higher), within ``within`` of the best row's worst case, backdoor success
below ``max_backdoor``, free riders banned with F1 of at least ``min_f1`` in every run and no
honest client banned anywhere.

Cells run in a pool of worker processes (``processes``, 2 by default), each limited to one BLAS
thread: the matrices are small, and on a shared machine threaded BLAS only adds contention.
Results do not depend on ``processes``: every simulation is seeded.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from statistics import mean
from typing import Any, TypeVar

from fedwarden.pipeline.round import PipelineConfig
from fedwarden.sim.attacks import ATTACKS, make_attack
from fedwarden.sim.freeriders import FREE_RIDERS

__all__ = [
    "ATTACK_COLUMNS",
    "AttackColumn",
    "Cell",
    "Criterion",
    "Defence",
    "FreeRiderCell",
    "MatrixConfig",
    "MatrixResult",
    "RowSummary",
    "check_criteria",
    "default_defences",
    "run_in_pool",
    "run_matrix",
]


@dataclass(frozen=True)
class AttackColumn:
    """One column: an attack of :mod:`fedwarden.sim.attacks` with its parameters."""

    name: str
    attack: str
    params: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    #: training examples each attacker reports (``None``: its true count); see
    #: :attr:`~fedwarden.sim.runner.SimulationConfig.attacker_claimed_examples`
    claimed_examples: int | None = None

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; choose one of: {', '.join(ATTACKS)}")
        make_attack(self.attack, **dict(self.params))  # validates the parameters


ATTACK_COLUMNS: tuple[AttackColumn, ...] = (
    AttackColumn("none", "none", {}, "the attackers train honestly"),
    AttackColumn("sign-flip", "sign-flip", {}, "−4 × own update (Li et al. 2019)"),
    AttackColumn("gaussian", "gaussian", {}, "N(0, 200²) (Blanchard et al. 2017)"),
    AttackColumn("ipm", "ipm", {}, "−0.1 × honest mean (Xie et al. 2019)"),
    AttackColumn("scaling", "ipm", {"eps": 100.0}, "−100 × honest mean (IPM, scaling variant)"),
    AttackColumn("alie", "alie", {}, "mean − z·std (Baruch et al. 2019)"),
    AttackColumn("sybil", "sybil", {}, "identical Krum-tailored vectors (Shejwalkar et al. 2021)"),
    AttackColumn("label-flip", "label-flip", {}, "trains on l → 9 − l (Tolpegin et al. 2020)"),
    AttackColumn("backdoor", "backdoor", {}, "trigger → class 0, half its data (Bagdasaryan 2020)"),
    AttackColumn(
        "inflated-counts",
        "sign-flip",
        {},
        "sign-flip, each attacker claiming 10,000 examples (honest clients hold about 54)",
        claimed_examples=10_000,
    ),
)
"""The default columns: no attack, the five model-poisoning attacks (IPM twice: the paper's
small ε and the large-ε scaling variant), the two data-poisoning attacks, and sign-flip by
attackers that inflate the sample counts they report (a client reports its own
``num_examples``, so a rule that weights by it hands influence to whoever claims most)."""


@dataclass(frozen=True)
class Defence:
    """One row: a name, the pipeline configuration it runs, and a few words on it."""

    name: str
    pipeline: PipelineConfig
    description: str = ""
    #: the rule weights updates by the sample counts clients claim, which an attacker inflates
    #: at will (no column here does); such a row is compared with, never recommended
    trusts_claimed_counts: bool = False


def _full(aggregator: str, **params: Any) -> PipelineConfig:
    """The recommended pipeline (validation, free-rider tests, clipping, strikes) around another
    aggregation rule."""
    return dataclasses.replace(
        PipelineConfig.recommended(), aggregator=aggregator, aggregator_params=params
    )


def default_defences(f: int = 5) -> tuple[Defence, ...]:
    """The default rows: plain FedAvg; every rule but block-dnc inside the full pipeline (the
    recommended validation, free-rider tests, adaptive clipping and strikes around each); the
    unweighted clipped mean; NNM, bucketing and DnC spectral filtering in front of the promising
    rules; block-wise DnC alone and behind a gated DnC; and the recommended configuration.

    ``f`` is the number of Byzantine clients that the rules taking one are told to tolerate.
    """
    nnm = {"preaggregation": "nnm", "f": f}
    buckets = {"preaggregation": "bucketing", "bucket_size": 2, "seed": 0}
    spectral = {"preaggregation": "dnc", "filter_fraction": 0.2}
    tau = 0.2
    return (
        Defence(
            "plain-fedavg",
            PipelineConfig.plain_fedavg(),
            "no defence at all",
            trusts_claimed_counts=True,
        ),
        Defence(
            "fedavg",
            _full("fedavg"),
            "clipped mean weighted by the claimed sample counts",
            trusts_claimed_counts=True,
        ),
        Defence("krum", _full("krum", f=f), f"f={f}"),
        Defence("multi-krum", _full("multi-krum", f=f), f"f={f}, m=n−f"),
        Defence("median", _full("median"), "coordinate-wise"),
        Defence("trimmed-mean", _full("trimmed-mean", beta=0.2), "β=0.2"),
        Defence("bulyan", _full("bulyan", f=f), f"f={f}: needs n ≥ {4 * f + 3} valid updates"),
        Defence("geometric-median", _full("geometric-median"), "smoothed Weiszfeld (RFA)"),
        Defence("centered-clip", _full("centered-clip", tau=tau), f"τ={tau}, 10 iterations"),
        Defence(
            "unweighted-mean",
            _full("trimmed-mean", beta=0.0),
            "trimmed mean with β=0: the clipped mean ignoring claimed sample counts",
        ),
        Defence("nnm+multi-krum", _full("multi-krum", **nnm), f"NNM, f={f}"),
        Defence("nnm+median", _full("median", **nnm), f"NNM, f={f}"),
        Defence(
            "nnm+centered-clip", _full("centered-clip", tau=tau, **nnm), f"NNM, f={f}, τ={tau}"
        ),
        Defence("bucketing+geometric-median", _full("geometric-median", **buckets), "buckets of 2"),
        Defence(
            "bucketing+centered-clip", _full("centered-clip", tau=tau, **buckets), "buckets of 2"
        ),
        Defence(
            "dnc+centered-clip",
            _full("centered-clip", tau=tau, **spectral),
            f"DnC drops ⌊0.2·n⌋, τ={tau}",
        ),
        Defence(
            "dnc+trimmed-mean",
            _full("trimmed-mean", beta=0.1, **spectral),
            "DnC drops ⌊0.2·n⌋, β=0.1",
        ),
        Defence("dnc+median", _full("median", **spectral), "DnC drops ⌊0.2·n⌋"),
        Defence(
            "block-dnc",
            _full("block-dnc", block_size=64, filter_fraction=0.2),
            "DnC in every block of 64 coordinates, drops ⌊0.2·n⌋ per block",
        ),
        Defence(
            "dnc+block-dnc",
            _full("block-dnc", block_size=64, min_share=0.2, **spectral),
            "DnC drops ⌊0.2·n⌋ if the top direction has ≥ 20 % of the variance, then block-dnc",
        ),
        Defence("recommended", PipelineConfig.recommended(), "PipelineConfig.recommended()"),
    )


@dataclass(frozen=True)
class MatrixConfig:
    """What the matrix runs; the simulation settings are shared by every cell.

    Attributes:
        dataset, model, clients, attackers, alpha, rounds, lr, local_epochs, batch_size: the
            federation (see :class:`~fedwarden.sim.runner.SimulationConfig`); Dirichlet(α)
            partition, every client in every round.
        seeds: every cell runs once per seed and reports the mean.
        defences: the rows.
        attacks: the columns.
        free_rider_kinds: the kinds of the free-rider experiment (empty: skip it).
        free_riders: free riders per free-rider run (no attackers there).
        free_rider_defences: rows that the free-rider experiment runs for (``None``: every row
            whose pipeline has free-rider detection on).
        processes: worker processes (1 runs everything in this process).
        recommended, baseline: the rows that :func:`check_criteria` compares.
    """

    dataset: str = "digits"
    model: str = "mlp"
    clients: int = 25
    attackers: int = 5
    alpha: float = 0.5
    rounds: int = 60
    lr: float = 0.1
    local_epochs: int = 1
    batch_size: int = 16
    seeds: tuple[int, ...] = (0, 1)
    defences: tuple[Defence, ...] = field(default_factory=default_defences)
    attacks: tuple[AttackColumn, ...] = ATTACK_COLUMNS
    free_rider_kinds: tuple[str, ...] = FREE_RIDERS
    free_riders: int = 3
    free_rider_defences: tuple[str, ...] | None = None
    processes: int = 2
    recommended: str = "recommended"
    baseline: str = "plain-fedavg"

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if not self.defences or not self.attacks:
            raise ValueError("the matrix needs at least one defence and one attack")
        for what, names in (
            ("defence", [d.name for d in self.defences]),
            ("attack column", [a.name for a in self.attacks]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names must be distinct, got {names}")
        unknown = sorted(set(self.free_rider_kinds) - set(FREE_RIDERS))
        if unknown:
            raise ValueError(
                f"unknown free-rider kind {', '.join(unknown)}; "
                f"choose from {', '.join(FREE_RIDERS)}"
            )
        if self.free_rider_defences is not None:
            missing = sorted(set(self.free_rider_defences) - {d.name for d in self.defences})
            if missing:
                raise ValueError(f"free_rider_defences names unknown rows: {', '.join(missing)}")
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        # every cell must be a valid simulation: fail now, not in a worker minutes later
        self.simulation(self.defences[0], self.attacks[0], self.seeds[0])
        if self.free_rider_kinds:
            self.free_rider_simulation(self.defences[0], self.free_rider_kinds[0], self.seeds[0])

    def simulation(self, defence: Defence, attack: AttackColumn, seed: int) -> Any:
        """The :class:`~fedwarden.sim.runner.SimulationConfig` of one cell."""
        from fedwarden.sim.runner import SimulationConfig

        return SimulationConfig(
            dataset=self.dataset,
            model=self.model,
            clients=self.clients,
            attackers=self.attackers,
            attack=attack.attack,
            attack_params=dict(attack.params),
            attacker_claimed_examples=attack.claimed_examples,
            free_riders=0,
            partition="dirichlet",
            alpha=self.alpha,
            rounds=self.rounds,
            lr=self.lr,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            seed=seed,
            pipeline=defence.pipeline,
        )

    def free_rider_simulation(self, defence: Defence, kind: str, seed: int) -> Any:
        """The configuration of one free-rider run: no attackers, ``free_riders`` of ``kind``."""
        base = self.simulation(defence, ATTACK_COLUMNS[0], seed)
        return dataclasses.replace(
            base, attackers=0, attack="none", free_riders=self.free_riders, free_rider_kind=kind
        )

    def free_rider_rows(self) -> tuple[Defence, ...]:
        if self.free_rider_defences is not None:
            wanted = set(self.free_rider_defences)
            return tuple(d for d in self.defences if d.name in wanted)
        return tuple(d for d in self.defences if d.pipeline.free_riders.enabled)

    def summary(self) -> dict[str, Any]:
        """The settings, JSON-ready (pipelines in full)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "clients": self.clients,
            "attackers": self.attackers,
            "partition": f"dirichlet(alpha={self.alpha:g})",
            "alpha": self.alpha,
            "rounds": self.rounds,
            "lr": self.lr,
            "local_epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "seeds": list(self.seeds),
            "free_riders": self.free_riders,
            "free_rider_kinds": list(self.free_rider_kinds),
            "defences": [
                {
                    "name": d.name,
                    "description": d.description,
                    "trusts_claimed_counts": d.trusts_claimed_counts,
                    "pipeline": _pipeline_dict(d.pipeline),
                }
                for d in self.defences
            ],
            "attacks": [
                {
                    "name": a.name,
                    "attack": a.attack,
                    "params": dict(a.params),
                    "claimed_examples": a.claimed_examples,
                    "description": a.description,
                }
                for a in self.attacks
            ],
        }


def _pipeline_dict(pipeline: PipelineConfig) -> dict[str, Any]:
    out = dataclasses.asdict(pipeline)
    out["aggregator_params"] = dict(pipeline.aggregator_params)
    return out


@dataclass(frozen=True)
class Cell:
    """One simulation of the attack matrix."""

    defence: str
    attack: str
    seed: int
    accuracy: float
    backdoor_success: float | None
    rounds_run: int
    skipped_rounds: int
    honest_banned: int
    attackers_banned: int
    seconds: float
    #: the backdoor success rate of the untrained initial model (same for every defence of a
    #: seed): how much of ``backdoor_success`` the attack did not have to teach
    initial_backdoor_success: float | None = None


@dataclass(frozen=True)
class FreeRiderCell:
    """One simulation of the free-rider experiment."""

    defence: str
    kind: str
    seed: int
    accuracy: float
    f1: float | None
    precision: float | None
    recall: float | None
    free_riders_banned: int
    honest_banned: int
    skipped_rounds: int
    seconds: float


@dataclass(frozen=True)
class RowSummary:
    """One row of the matrix, averaged over seeds."""

    defence: str
    accuracy: dict[str, float]
    worst: float
    worst_attack: str
    backdoor_success: float | None
    skipped_rounds: dict[str, int]
    never_trained: list[str]
    honest_banned: int
    attackers_banned: int


@dataclass(frozen=True)
class Criterion:
    """One promise about the recommended row, and whether the matrix shows it held."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


@dataclass
class MatrixResult:
    config: MatrixConfig
    cells: list[Cell]
    free_rider_cells: list[FreeRiderCell]
    seconds: float

    def rows(self) -> list[RowSummary]:
        out = []
        for defence in self.config.defences:
            cells = [c for c in self.cells if c.defence == defence.name]
            if not cells:
                continue
            accuracy = {}
            skipped = {}
            never = []
            for column in self.config.attacks:
                mine = [c for c in cells if c.attack == column.name]
                if not mine:
                    continue
                accuracy[column.name] = mean(c.accuracy for c in mine)
                skipped[column.name] = sum(c.skipped_rounds for c in mine)
                if any(c.skipped_rounds >= c.rounds_run for c in mine):
                    never.append(column.name)
            worst_attack = min(accuracy, key=lambda a: accuracy[a])
            backdoor = [c.backdoor_success for c in cells if c.backdoor_success is not None]
            out.append(
                RowSummary(
                    defence=defence.name,
                    accuracy=accuracy,
                    worst=accuracy[worst_attack],
                    worst_attack=worst_attack,
                    backdoor_success=mean(backdoor) if backdoor else None,
                    skipped_rounds=skipped,
                    never_trained=never,
                    honest_banned=sum(c.honest_banned for c in cells),
                    attackers_banned=sum(c.attackers_banned for c in cells),
                )
            )
        return out

    def row(self, name: str) -> RowSummary | None:
        return next((r for r in self.rows() if r.defence == name), None)

    def free_rider_table(self) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """defence -> kind -> mean F1 (``None`` if undefined in every run), min F1, free riders
        banned (total over seeds), honest banned (total)."""
        table: dict[str, dict[str, dict[str, float | int | None]]] = {}
        for c in self.free_rider_cells:
            table.setdefault(c.defence, {}).setdefault(c.kind, {})
        for defence, kinds in table.items():
            for kind in kinds:
                mine = [c for c in self.free_rider_cells if c.defence == defence and c.kind == kind]
                f1s = [0.0 if c.f1 is None else c.f1 for c in mine]
                kinds[kind] = {
                    "f1_mean": mean(f1s),
                    "f1_min": min(f1s),
                    "free_riders_banned": sum(c.free_riders_banned for c in mine),
                    "free_riders": self.config.free_riders * len(mine),
                    "honest_banned": sum(c.honest_banned for c in mine),
                    "runs": len(mine),
                }
        return table

    def criteria(self, **thresholds: float) -> list[Criterion]:
        return check_criteria(self, **thresholds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.summary(),
            "seconds": self.seconds,
            "rows": [dataclasses.asdict(r) for r in self.rows()],
            "cells": [dataclasses.asdict(c) for c in self.cells],
            "free_riders": self.free_rider_table(),
            "free_rider_cells": [dataclasses.asdict(c) for c in self.free_rider_cells],
            "criteria": [dataclasses.asdict(c) for c in self.criteria()],
        }


def check_criteria(
    result: MatrixResult,
    *,
    far_above: float = 0.2,
    within: float = 0.02,
    max_backdoor: float = 0.10,
    min_f1: float = 0.9,
) -> list[Criterion]:
    """The promises about the recommended row, each with its numbers.

    - *far above plain FedAvg*: its worst case is at least ``far_above`` (absolute accuracy)
      above the baseline row's;
    - *near the best*: its worst case is at most ``within`` below the best row's, and (reported
      separately) below the best row's among the rules that ignore claimed sample counts;
    - *backdoor*: its backdoor success rate is below ``max_backdoor``;
    - *free riders*: in every free-rider run of the row, F1 of the bans ≥ ``min_f1``;
    - *no honest client banned*: in every run of the row, attack matrix and free-rider runs.

    A criterion whose data is missing (the row, the baseline or the experiment was not run)
    is reported as failed with the reason.
    """
    cfg = result.config
    rows = {r.defence: r for r in result.rows()}
    rec = rows.get(cfg.recommended)
    out: list[Criterion] = []
    if rec is None:
        return [Criterion("recommended row", False, None, None, f"no row {cfg.recommended!r}")]
    base = rows.get(cfg.baseline)
    if base is None:
        out.append(Criterion("far above plain FedAvg", False, None, far_above, "no baseline row"))
    else:
        gain = rec.worst - base.worst
        out.append(
            Criterion(
                "far above plain FedAvg",
                gain >= far_above,
                gain,
                far_above,
                f"worst case {rec.worst:.3f} ({rec.worst_attack}) vs {base.worst:.3f} "
                f"({base.worst_attack}): {100 * gain:+.1f} points",
            )
        )
    best = max(rows.values(), key=lambda r: r.worst)
    out.append(_near_best(rec, best, within, "within 2 points of the best row"))
    trusting = {d.name for d in cfg.defences if d.trusts_claimed_counts}
    candidates = [r for r in rows.values() if r.defence not in trusting]
    if trusting and candidates:
        best_robust = max(candidates, key=lambda r: r.worst)
        out.append(
            _near_best(
                rec,
                best_robust,
                within,
                "within 2 points of the best row that ignores claimed sample counts",
            )
        )
    if rec.backdoor_success is None:
        out.append(
            Criterion("backdoor success < 10%", False, None, max_backdoor, "no backdoor column")
        )
    else:
        out.append(
            Criterion(
                "backdoor success < 10%",
                rec.backdoor_success < max_backdoor,
                rec.backdoor_success,
                max_backdoor,
                f"{100 * rec.backdoor_success:.1f}% of triggered inputs classified as the target",
            )
        )
    riders = [c for c in result.free_rider_cells if c.defence == rec.defence]
    if not riders:
        out.append(Criterion("free riders banned, F1 ≥ 0.9", False, None, min_f1, "not run"))
    else:
        worst_f1 = min(0.0 if c.f1 is None else c.f1 for c in riders)
        weakest = min(riders, key=lambda c: 0.0 if c.f1 is None else c.f1)
        out.append(
            Criterion(
                "free riders banned, F1 ≥ 0.9",
                worst_f1 >= min_f1,
                worst_f1,
                min_f1,
                f"lowest F1 {worst_f1:.2f} ({weakest.kind}, seed {weakest.seed}) over "
                f"{len(riders)} runs; {sum(c.free_riders_banned for c in riders)} of "
                f"{cfg.free_riders * len(riders)} free riders banned",
            )
        )
    honest = rec.honest_banned + sum(c.honest_banned for c in riders)
    runs = len([c for c in result.cells if c.defence == rec.defence]) + len(riders)
    out.append(
        Criterion(
            "no honest client banned",
            honest == 0,
            float(honest),
            0.0,
            f"{honest} honest bans over {runs} runs",
        )
    )
    return out


def _near_best(rec: RowSummary, best: RowSummary, within: float, name: str) -> Criterion:
    gap = best.worst - rec.worst
    return Criterion(
        name,
        gap <= within + 1e-12,
        gap,
        within,
        f"worst case {rec.worst:.3f} vs best {best.worst:.3f} ({best.defence}): "
        f"{100 * gap:.1f} points below",
    )


# --- running ------------------------------------------------------------------------------

_Job = tuple[str, str, str, int, Any]  # (experiment, defence, column or kind, seed, sim config)
Progress = Callable[[Cell | FreeRiderCell, int, int], None]


def _limit_blas_threads() -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        return
    global _LIMITS
    _LIMITS = threadpool_limits(limits=1)


_LIMITS: Any = None


def _run_job(job: _Job) -> Cell | FreeRiderCell:
    from fedwarden.sim.runner import run_simulation

    experiment, defence, column, seed, sim = job
    started = time.perf_counter()
    result = run_simulation(sim)
    seconds = time.perf_counter() - started
    accuracy = result.final_accuracy if math.isfinite(result.final_accuracy) else 0.0
    if experiment == "attack":
        return Cell(
            defence=defence,
            attack=column,
            seed=seed,
            accuracy=accuracy,
            backdoor_success=result.backdoor_success,
            initial_backdoor_success=result.initial_backdoor_success,
            rounds_run=result.rounds_run,
            skipped_rounds=len(result.skipped),
            honest_banned=len(result.honest_banned),
            attackers_banned=len(result.attackers_banned),
            seconds=seconds,
        )
    det = result.free_rider_detection
    return FreeRiderCell(
        defence=defence,
        kind=column,
        seed=seed,
        accuracy=accuracy,
        f1=det.f1,
        precision=det.precision,
        recall=det.recall,
        free_riders_banned=len(result.free_riders_banned),
        honest_banned=len(result.honest_banned),
        skipped_rounds=len(result.skipped),
        seconds=seconds,
    )


def _jobs(config: MatrixConfig) -> list[_Job]:
    jobs: list[_Job] = []
    for seed in config.seeds:
        for defence in config.defences:
            for column in config.attacks:
                sim = config.simulation(defence, column, seed)
                jobs.append(("attack", defence.name, column.name, seed, sim))
    for seed in config.seeds:
        for defence in config.free_rider_rows():
            for kind in config.free_rider_kinds:
                sim = config.free_rider_simulation(defence, kind, seed)
                jobs.append(("free-riders", defence.name, kind, seed, sim))
    return jobs


def _dedupe(jobs: Sequence[_Job]) -> tuple[list[_Job], list[int]]:
    """Identical simulations (a row that equals another, e.g. the recommended one) run once:
    the unique jobs, and for every job the index of the unique job that answers it."""
    unique: list[_Job] = []
    index: list[int] = []
    for job in jobs:
        for i, other in enumerate(unique):
            if other[0] == job[0] and other[4] == job[4]:
                index.append(i)
                break
        else:
            index.append(len(unique))
            unique.append(job)
    return unique, index


def _relabel(result: Cell | FreeRiderCell, job: _Job) -> Cell | FreeRiderCell:
    return dataclasses.replace(result, defence=job[1])


JobT = TypeVar("JobT")
AnswerT = TypeVar("AnswerT")


def run_in_pool(
    worker: Callable[[JobT], AnswerT],
    jobs: Sequence[JobT],
    processes: int,
    progress: Callable[[AnswerT, int, int], None] | None = None,
) -> list[AnswerT]:
    """``[worker(job) for job in jobs]`` in ``processes`` spawned workers with one BLAS thread
    each; ``progress(answer, done, total)`` as each finishes (in completion order). ``worker``
    and the jobs must be picklable (a module-level function)."""
    answers: list[AnswerT | None] = [None] * len(jobs)
    finished_count = 0

    def done(i: int, answer: AnswerT) -> None:
        nonlocal finished_count
        answers[i] = answer
        finished_count += 1
        if progress is not None:
            progress(answer, finished_count, len(jobs))

    if processes == 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            for i, job in enumerate(jobs):
                done(i, worker(job))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=processes, mp_context=context, initializer=_limit_blas_threads
        ) as pool:
            pending: dict[Future[AnswerT], int] = {
                pool.submit(worker, job): i for i, job in enumerate(jobs)
            }
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(pending.pop(future), future.result())
    complete = [answer for answer in answers if answer is not None]
    assert len(complete) == len(jobs)
    return complete


def run_matrix(config: MatrixConfig, progress: Progress | None = None) -> MatrixResult:
    """Run every cell of the matrix and the free-rider experiment.

    ``progress(cell, done, total)`` is called as each simulation finishes (in completion
    order); the result lists cells in a fixed order whatever the completion order.
    """
    started = time.perf_counter()
    jobs = _jobs(config)
    unique, index = _dedupe(jobs)
    answers = run_in_pool(_run_job, unique, config.processes, progress)
    cells: list[Cell] = []
    riders: list[FreeRiderCell] = []
    for job, i in zip(jobs, index, strict=True):
        answer = _relabel(answers[i], job)
        if isinstance(answer, Cell):
            cells.append(answer)
        else:
            riders.append(answer)
    return MatrixResult(config, cells, riders, time.perf_counter() - started)


# --- presentation -------------------------------------------------------------------------


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}"


def markdown_tables(result: MatrixResult) -> str:
    """The matrix, the free-rider table and the criteria as Markdown tables."""
    cfg = result.config
    columns = [a.name for a in cfg.attacks]
    lines = [
        f"Final test accuracy (%), mean of {len(cfg.seeds)} seed(s); **worst** = the lowest over "
        "the attack columns; backdoor = backdoor success rate (%) of the backdoor column; "
        "† = some rounds skipped (count in brackets), ‡ = a run never trained.",
        "",
        "| defence | " + " | ".join(columns) + " | **worst** | backdoor | honest bans |",
        "|---|" + "---:|" * (len(columns) + 3),
    ]
    for row in result.rows():
        cells = []
        for column in columns:
            if column not in row.accuracy:
                cells.append("")
                continue
            text = _pct(row.accuracy[column])
            if column in row.never_trained:
                text += f" ‡({row.skipped_rounds[column]})"
            elif row.skipped_rounds[column]:
                text += f" †({row.skipped_rounds[column]})"
            cells.append(text)
        name = f"**{row.defence}**" if row.defence == cfg.recommended else row.defence
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | **{_pct(row.worst)}** ({row.worst_attack}) | {_pct(row.backdoor_success)} | "
            f"{row.honest_banned} |"
        )
    table = result.free_rider_table()
    if table:
        kinds = list(cfg.free_rider_kinds)
        lines += [
            "",
            f"Free riders: {cfg.free_riders} of {cfg.clients} clients, no attackers, "
            f"{len(cfg.seeds)} seed(s). F1 of the bans as a free-rider detector (mean; lowest), "
            "free riders banned, honest clients banned.",
            "",
            "| defence | " + " | ".join(kinds) + " | honest bans |",
            "|---|" + "---:|" * (len(kinds) + 1),
        ]
        for defence, by_kind in table.items():
            cells = []
            honest = 0
            for kind in kinds:
                s = by_kind.get(kind)
                if s is None:
                    cells.append("")
                    continue
                honest += int(s["honest_banned"] or 0)
                cells.append(
                    f"{s['f1_mean']:.2f}; {s['f1_min']:.2f} "
                    f"({s['free_riders_banned']}/{s['free_riders']})"
                )
            lines.append(f"| {defence} | " + " | ".join(cells) + f" | {honest} |")
    lines += ["", "| criterion (recommended row) | result | detail |", "|---|---|---|"]
    for c in result.criteria():
        lines.append(f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |")
    return "\n".join(lines) + "\n"
