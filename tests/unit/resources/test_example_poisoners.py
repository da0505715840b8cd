"""examples/ is deterministic about its poisoners: every round of the training waits for every
site that is not banned and samples them all, so each red-team site is in every round until its
ban and is banned within the training, however late it starts or comes back after an aggregator
restart (a poisoner left out of rounds ended the e2e test unbanned once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fedwarden.aggregator.config import AggregatorConfig, Sampler
from fedwarden.api import FederatedTraining
from fedwarden.resources import aggregator
from fedwarden.resources.names import Owner

REPO = Path(__file__).resolve().parents[3]
OWNER = Owner("FederatedTraining", "digits", "fl-demo", "uid-1")


def _example() -> tuple[FederatedTraining, list[dict[str, Any]]]:
    training = FederatedTraining.model_validate(
        yaml.safe_load((REPO / "examples" / "training.yaml").read_text())
    )
    clients = [d for d in yaml.safe_load_all((REPO / "examples" / "clients.yaml").read_text()) if d]
    return training, clients


def test_every_round_takes_every_unbanned_site_so_each_poisoner_is_banned_in_time() -> None:
    training, clients = _example()
    spec = training.spec
    selector = spec.selection.client_selector
    sites = sorted(
        c["metadata"]["name"]
        for c in clients
        if selector is None or selector.matches(c["metadata"].get("labels") or {})
    )
    poisoners = [
        c["metadata"]["name"]
        for c in clients
        if "poisoner" in ((c["spec"].get("workload") or {}).get("command") or [])
    ]
    assert poisoners
    assert set(poisoners) <= set(sites)
    settings = aggregator.aggregator_settings(OWNER, spec, population=len(sites)).options()
    config = AggregatorConfig(
        rounds=settings["rounds"],
        fraction=settings["fraction"],
        min_available=settings["min_available"],
        sampling=settings["sampling"],
    )
    # a round opens only once every site is available (each ban lowers this by one)
    assert config.min_available == len(sites)
    sampler = Sampler(config.sampling, config.fraction, seed=None)
    strikes_to_ban = settings["strikes_to_ban"]
    assert strikes_to_ban < config.rounds  # with a round to spare for a restart
    for number in range(1, strikes_to_ban + 1):
        cohort, _ = sampler.sample(sites, number)
        assert set(poisoners) <= set(cohort), (number, cohort)
