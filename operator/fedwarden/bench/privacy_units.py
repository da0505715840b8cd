"""Which unit to protect: no DP, client-level central DP and record-level DP-SGD, side by side.

Every cell is an ordinary simulation (:func:`~fedwarden.sim.runner.run_simulation`, rerun alone
with ``fedwarden simulate``): ``sites`` honest sites on an iid split of a built-in task, every
site in every round, the same aggregation in every mode — the unweighted mean of updates clipped
to the adaptive median norm, without cohort tests (DP-FedAvg's shape) — so that only the privacy
mode differs:

- ``none``: no DP;
- ``central``: client-level DP, Gaussian noise σ·C/n on the mean, σ calibrated so that the
  rounds spend ε (it protects everything one site contributes);
- ``record``: record-level DP, every site trains with DP-SGD (per-example clipping to
  ``example_clip_norm``, noise σ_site·C on each step), σ_site calibrated so that the rounds spend
  ε at that site (it protects one record of a site).

All at the same (ε, δ). Client-level noise on the mean shrinks as 1/n with the number of sites,
so it wins with many sites; record-level noise depends on each site's records (more records,
smaller sampling rate, less noise per step), so it wins with few, large sites. The table shows
where one overtakes the other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from statistics import mean
from typing import Any

from fedwarden.client.tasks import split_task_name
from fedwarden.pipeline.freeriders import FreeRiderConfig
from fedwarden.pipeline.round import ClippingConfig, PipelineConfig
from fedwarden.pipeline.validation import ValidationConfig
from fedwarden.sim.datasets import load_dataset
from fedwarden.sim.runner import SimulationConfig, run_simulation
from fedwarden.sim.site_dp import SiteDPSGD

MODES = ("none", "central", "record")


def same_aggregation() -> PipelineConfig:
    """The aggregation every mode shares: clipped mean, adaptive median norm, no cohort tests."""
    return PipelineConfig(
        aggregator="fedavg",
        aggregator_params={},
        validation=ValidationConfig(outlier_z=None),
        clipping=ClippingConfig(mode="adaptive", clip_norm=1.0, target_quantile=0.5),
        free_riders=FreeRiderConfig(enabled=False),
    )


@dataclass(frozen=True)
class UnitsConfig:
    """The grid: ``tasks`` × ``sites`` (the cross-silo part) plus ``population_task`` ×
    ``populations`` (many small sites), each in every mode of :data:`MODES`."""

    tasks: tuple[str, ...] = ("breast-cancer-logreg", "wine-logreg", "digits-logreg")
    sites: tuple[int, ...] = (3, 5, 10)
    population_task: str = "digits-logreg"
    populations: tuple[int, ...] = (100, 300, 1000)
    epsilon: float = 1.0
    delta: float = 1e-5
    rounds: int = 20
    seeds: tuple[int, ...] = (0, 1)
    example_clip_norm: float = 1.0
    processes: int = 2

    def cells(self) -> list[tuple[str, int]]:
        small = [(task, n) for task in self.tasks for n in self.sites]
        return small + [(self.population_task, n) for n in self.populations]

    def simulation(self, task: str, sites: int, mode: str, seed: int) -> SimulationConfig:
        """The configuration of one run (what ``fedwarden simulate`` takes as options)."""
        dataset, model = split_task_name(task)
        config = SimulationConfig(
            dataset=dataset,
            model=model,
            clients=sites,
            attackers=0,
            free_riders=0,
            partition="iid",
            min_samples=1,
            rounds=self.rounds,
            seed=seed,
            example_clip_norm=self.example_clip_norm,
            pipeline=same_aggregation(),
        )
        if mode == "none":
            return config
        return config.with_dp(mode, target_epsilon=self.epsilon, delta=self.delta)  # type: ignore[arg-type]


@dataclass(frozen=True)
class UnitCell:
    """One (task, sites, mode), averaged over the seeds."""

    task: str
    sites: int
    mode: str
    accuracy: float
    accuracies: tuple[float, ...]
    rounds_run: float
    epsilon: float
    records_per_site: float
    noise_multiplier: float | None
    """σ of the mode: the aggregator's (central) or a site of average size's (record)."""
    seconds: float


@dataclass(frozen=True)
class UnitsResult:
    config: UnitsConfig
    cells: tuple[UnitCell, ...]

    def cell(self, task: str, sites: int, mode: str) -> UnitCell:
        return next(c for c in self.cells if (c.task, c.sites, c.mode) == (task, sites, mode))

    def better_unit(self, task: str, sites: int) -> str:
        """``record`` or ``client``: the DP mode with the higher accuracy at these sites."""
        record = self.cell(task, sites, "record").accuracy
        return "record" if record > self.cell(task, sites, "central").accuracy else "client"

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "cells": [dataclasses.asdict(c) for c in self.cells],
            "better_unit": {
                f"{task}/{sites}": self.better_unit(task, sites)
                for task, sites in self.config.cells()
            },
        }


def _run(job: tuple[UnitsConfig, str, int, str, int]) -> dict[str, Any]:
    config, task, sites, mode, seed = job
    sim = config.simulation(task, sites, mode, seed)
    started = time.perf_counter()
    result = run_simulation(sim)
    return {
        "accuracy": result.final_accuracy,
        "rounds_run": result.rounds_run,
        "epsilon": result.epsilon,
        "noise_multiplier": result.noise_multiplier,
        "seconds": time.perf_counter() - started,
    }


def _site_sigma(config: UnitsConfig, task: str, sites: int, records: float) -> float:
    sim = config.simulation(task, sites, "record", 0)
    return SiteDPSGD(
        target_epsilon=config.epsilon,
        delta=config.delta,
        rounds=config.rounds,
        num_examples=max(1, round(records)),
        batch_size=sim.batch_size,
        local_epochs=sim.local_epochs,
        clip_norm=config.example_clip_norm,
    ).config.noise_multiplier


def run_privacy_units(
    config: UnitsConfig, progress: Callable[[int, int, str], None] | None = None
) -> UnitsResult:
    """Every cell of the grid, each mode and seed a simulation, in ``processes`` workers."""
    jobs = [
        (config, task, sites, mode, seed)
        for task, sites in config.cells()
        for mode in MODES
        for seed in config.seeds
    ]
    outputs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if config.processes > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=config.processes))
            results = pool.map(_run, jobs)
        else:
            results = map(_run, jobs)
        for done, output in enumerate(results, start=1):
            outputs.append(output)
            if progress is not None:
                _, task, sites, mode, seed = jobs[done - 1]
                progress(done, len(jobs), f"{task}, {sites} sites, {mode}, seed {seed}")
    train_sizes = {
        task: len(load_dataset(split_task_name(task)[0], seed=0).y_train)
        for task, _ in config.cells()
    }
    cells = []
    per_cell = len(config.seeds)
    for start in range(0, len(jobs), per_cell):
        _, task, sites, mode, _ = jobs[start]
        runs = outputs[start : start + per_cell]
        records = train_sizes[task] / sites
        sigma = (
            _site_sigma(config, task, sites, records)
            if mode == "record"
            else runs[0]["noise_multiplier"]
        )
        cells.append(
            UnitCell(
                task=task,
                sites=sites,
                mode=mode,
                accuracy=mean(r["accuracy"] for r in runs),
                accuracies=tuple(r["accuracy"] for r in runs),
                rounds_run=mean(r["rounds_run"] for r in runs),
                epsilon=max(r["epsilon"] for r in runs),
                records_per_site=records,
                noise_multiplier=sigma,
                seconds=sum(r["seconds"] for r in runs),
            )
        )
    return UnitsResult(config, tuple(cells))


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def markdown_table(result: UnitsResult) -> str:
    """One row per (task, sites): accuracy and rounds of each mode, and the better unit."""
    config = result.config
    lines = [
        f"| task | sites | records per site | no DP | client-level central DP (σ) | "
        f"record-level DP-SGD (σ per site) | rounds (central / record) | better at ε = "
        f"{config.epsilon:g} |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for task, sites in config.cells():
        none, central, record = (result.cell(task, sites, m) for m in MODES)
        lines.append(
            f"| {task} | {sites} | {record.records_per_site:.0f} | {_pct(none.accuracy)} | "
            f"{_pct(central.accuracy)} ({_sigma(central.noise_multiplier)}) | "
            f"{_pct(record.accuracy)} ({_sigma(record.noise_multiplier)}) | "
            f"{central.rounds_run:g} / {record.rounds_run:g} | "
            f"{result.better_unit(task, sites)}-level |"
        )
    return "\n".join(lines) + "\n"


def _sigma(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"σ = {value:.3g}"


__all__ = [
    "MODES",
    "UnitCell",
    "UnitsConfig",
    "UnitsResult",
    "markdown_table",
    "run_privacy_units",
    "same_aggregation",
]
