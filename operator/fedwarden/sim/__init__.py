"""In-process simulation of federated training under attack: offline data sets, numpy models,
partitions, poisoning attacks, free riders, and a runner that drives the pipeline.

The main entry points, importable from here::

    from fedwarden.sim import SimulationConfig, run_simulation, load_dataset

    result = run_simulation(SimulationConfig(attack="sign-flip"))
    result.final_accuracy, result.banned, result.epsilon

The runner is imported lazily, so ``fedwarden.sim.attacks`` and friends load without the
pipeline's dependencies.
"""

from __future__ import annotations

from typing import Any

from fedwarden.sim.datasets import DATASETS, Dataset, load_dataset

__all__ = [
    "DATASETS",
    "Dataset",
    "RoundRecord",
    "SimulationConfig",
    "SimulationResult",
    "load_dataset",
    "run_simulation",
]

_RUNNER = {"RoundRecord", "SimulationConfig", "SimulationResult", "run_simulation"}


def __getattr__(name: str) -> Any:
    if name in _RUNNER:
        from fedwarden.sim import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'fedwarden.sim' has no attribute {name!r}")
