"""Crash safety: the aggregator process is killed with SIGKILL at random points of the training,
three times, and restarted with the same arguments each time, while clients keep retrying.

The training must end as an uninterrupted one would: every round in the JSON-lines history
exactly once, ε never going down, and the final ε equal to the ε of an uninterrupted run with
the same rounds, noise multiplier and sample rate (ε is a deterministic function of that
history; the accountant's saved history must be exactly one step per round).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_helpers import ClientThreads, RuntimePKI, free_port, wait_for

from fedwarden.aggregator import load_checkpoint, read_jsonl
from fedwarden.aggregator.config import Sampler
from fedwarden.pipeline.accounting import get_accountant

ROUNDS = 10
SIGMA = 1.0
Q = 0.8
DELTA = 1e-5
CLIENTS = [f"site-{i}" for i in range(4)]


def seed_with_full_rounds() -> int:
    """A sampling seed whose Poisson cohorts are never empty (an empty round spends no ε, and
    this test compares ε with the closed form of ROUNDS steps)."""
    for seed in range(100):
        sampler = Sampler("poisson", Q, seed=seed)
        if all(sampler.sample(CLIENTS, r)[0] for r in range(1, ROUNDS + 1)):
            return seed
    raise AssertionError("no seed found")


def aggregator_command(pki: RuntimePKI, port: int, state: Path, seed: int) -> list[str]:
    return [
        sys.executable, "-c", "from fedwarden.cli import main; main()", "aggregator",
        "--pki-dir", str(pki.ca_dir), "--listen", f"127.0.0.1:{port}",
        "--rounds", str(ROUNDS), "--task", "digits-logreg", "--min-available", "4",
        "--dp", "central", "--noise-multiplier", str(SIGMA), "--delta", str(DELTA),
        "--fraction", str(Q), "--population", "4", "--seed", str(seed), "--noise-seed", "3",
        "--defence", "none", "--clipping", "fixed", "--clip-norm", "1.0",
        "--round-timeout", "20", "--poll-timeout", "1",
        "--checkpoint-dir", str(state / "checkpoint"),
        "--report-jsonl", str(state / "report.jsonl"), "--quiet",
    ]  # fmt: skip


def events(report: Path, kind: str) -> list[dict]:
    if not report.exists():
        return []
    return [r for r in read_jsonl(report) if r["event"] == kind]


@pytest.mark.slow
def test_sigkill_mid_round_resumes_without_losing_or_repeating_rounds(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    report = state / "report.jsonl"
    port = free_port()
    for name in CLIENTS:
        runtime_pki.client(name)  # enrol before the aggregator counts the population
    command = aggregator_command(runtime_pki, port, state, seed_with_full_rounds())
    logs = tmp_path / "aggregator.log"
    rng = random.Random()

    def start() -> subprocess.Popen[bytes]:
        with open(logs, "ab") as log:
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    clients = ClientThreads(runtime_pki, port, CLIENTS, give_up_after=180.0, backoff_max=0.5)
    proc = start()
    kills: list[int] = []
    try:
        clients.start()
        while len(kills) < 3:
            started = len(events(report, "round_started"))
            assert wait_for(
                lambda p=proc, n=started: (
                    len(events(report, "round_started")) > n  # type: ignore[misc]
                    or p.poll() is not None
                ),
                timeout=120,
            ), logs.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 0.8))  # somewhere in the round, or just after it
            if proc.poll() is not None:
                break
            proc.kill()
            proc.wait(timeout=30)
            kills.append(len(events(report, "round_finished")))
            proc = start()
        returncode = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        clients.stop()
    assert len(kills) == 3, f"ended before three kills: {kills}\n{logs.read_text()[-3000:]}"
    assert returncode == 0, logs.read_text()[-3000:]

    finished = events(report, "round_finished")
    rounds = [r["round"] for r in finished]
    assert sorted(rounds) == list(range(1, ROUNDS + 1)), rounds  # none lost, none twice
    epsilons = [r["epsilon"] for r in finished]
    assert epsilons == sorted(epsilons), "ε went down"
    assert len(events(report, "training_started")) == 4  # the first run and three restarts
    (done,) = events(report, "training_finished")
    assert done["status"] == "completed"

    accountant = get_accountant("pld", sampling="poisson")
    accountant.step(SIGMA, Q, steps=ROUNDS)
    uninterrupted = accountant.epsilon(DELTA)
    assert done["epsilon"] == pytest.approx(uninterrupted, rel=1e-9)
    assert finished[-1]["epsilon"] == pytest.approx(uninterrupted, rel=1e-9)
    checkpoint = load_checkpoint(state / "checkpoint")
    assert checkpoint is not None
    assert checkpoint.round == ROUNDS
    assert checkpoint.pipeline["accountant"]["history"] == [[SIGMA, Q, ROUNDS]]
    json.dumps(finished)  # the history is plain JSON
    assert all(clients.results[n].status == "done" for n in CLIENTS), clients.results
