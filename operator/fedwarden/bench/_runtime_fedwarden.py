"""The fedwarden side of the round-overhead benchmark: the runtime's own processes on 127.0.0.1.

A CA for the run (ECDSA P-256) with a server certificate for 127.0.0.1 and one client
certificate per client, made with :class:`fedwarden.pki.TrainingPKI` in a temporary
directory; then ``fedwarden aggregator`` (the command the aggregator image runs) and ``N``
client processes (:mod:`fedwarden.bench._fedwarden_client`: ``FederationClient`` with a task
that returns a ready update). Every connection is mutual TLS with client certificates
required, every update is signed and verified before it is decoded, and the aggregator writes a
checkpoint after every round, as in production.

Per-round times are the aggregator's own: ``duration_seconds`` of each ``round_finished`` event
of its JSON-lines report, from opening the round (sampling) to the new global model.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedwarden.bench._processes import (
    DeploymentError,
    MemoryGuard,
    ProcessSet,
    free_ports,
    peak_resident_mb,
    tail,
    wait_for,
)

__all__ = [
    "SECURITY",
    "FedwardenRoundResult",
    "fedwarden_command",
    "issue_certificates",
    "read_events",
    "run_fedwarden",
    "unavailable",
]

SECURITY = (
    "gRPC over mutual TLS (client certificates of the run's CA required), every update signed "
    "and verified before decoding, a checkpoint per round"
)
PIPELINES = {
    "fedavg": ("none", "plain FedAvg (--defence none): shape and finiteness checks, mean"),
    "recommended": (
        "recommended",
        "recommended (--defence recommended): statistical validation, free-rider tests, "
        "adaptive clipping, block-wise DnC",
    ),
}

Progress = Callable[[str], None]


@dataclass
class FedwardenRoundResult:
    clients: int
    params: int
    pipeline: str
    round_seconds: list[float]
    warmup_seconds: list[float]
    all_rounds_seconds: float
    """From the first round's opening to the last round's end (report times), warm-up
    included."""
    startup_seconds: float
    """From starting the aggregator to the opening of the first round (every client joined)."""
    memory_after_mb: float | None
    """Memory (PSS) of the aggregator and the clients when the training finished."""
    peak_memory_mb: float | None
    """The largest memory (PSS) of the aggregator and clients seen, sampled every 5 s."""
    detail: str
    log_dir: str | None
    details: dict[str, Any] = field(default_factory=dict)
    aggregator_peak_rss_mb: float | None = None
    """The aggregator process's peak resident size (the kernel's ``VmHWM``), read until the
    training finished."""


def fedwarden_command() -> str | None:
    """The ``fedwarden`` console script: next to this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / "fedwarden"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("fedwarden")


def unavailable() -> str | None:
    """Why fedwarden's runtime cannot run here, or ``None`` if it can."""
    try:
        import fedwarden.aggregator
        import fedwarden.client  # noqa: F401
    except ImportError as exc:
        return f"fedwarden's runtime is not importable: {exc}"
    if fedwarden_command() is None:
        return "the `fedwarden` command is not installed (pip install -e .)"
    return None


def issue_certificates(root: Path, clients: int) -> list[Path]:
    """The run's CA, the server's pair in ``root/pki``, one TLS directory per client."""
    from fedwarden.pki import TrainingPKI, TrainingRef

    pki = TrainingPKI.init(root / "pki", TrainingRef("bench", "round-overhead"))
    pki.issue_server(["localhost"], ["127.0.0.1"], keep_key=True, duration=dt.timedelta(days=1))
    dirs = []
    for i in range(clients):
        issued = pki.issue_client(f"client-{i:03d}", duration=dt.timedelta(days=1))
        dirs.append(pki.write_tls_directory(root / "clients" / f"client-{i:03d}", issued).root)
    return dirs


def read_events(report: Path) -> list[dict[str, Any]]:
    """The events of the aggregator's JSON-lines report so far (a line being written is skipped)."""
    events = []
    try:
        text = report.read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written
    return events


def _time(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00")).timestamp()


def run_fedwarden(
    clients: int,
    params: int,
    rounds: int,
    pipeline: str = "fedavg",
    warmup: int = 1,
    timeout: float = 900.0,
    keep_logs: bool = False,
    on_progress: Progress | None = None,
    client_app: str | None = None,
) -> FedwardenRoundResult:
    """Run the aggregator and ``clients`` clients for ``warmup + rounds`` rounds.

    The clients return ready updates (:mod:`fedwarden.bench._fedwarden_client`), or, with
    ``client_app`` (``module:attr`` of an app sized by its run config's ``params``, e.g.
    :mod:`fedwarden.bench.synthetic_app`), are ``fedwarden client --app`` processes running it,
    and the aggregator takes the initial model from it (``--app``).

    Everything started is stopped before this returns or raises :class:`DeploymentError`
    (with log tails; the logs are then kept and their directory named).
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
    defence, description = PIPELINES[pipeline]
    say = on_progress or (lambda _msg: None)
    label = f"fedwarden {pipeline} N={clients}"
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    work = Path(tempfile.mkdtemp(prefix="fedwarden-bench-runtime-"))
    logs = work / "logs"
    report = work / "report.jsonl"
    total_rounds = warmup + rounds
    failed = True
    processes = ProcessSet(marker=str(work))
    guard = MemoryGuard(processes)
    try:
        say(f"{label}: CA and {clients + 1} certificates")
        tls_dirs = issue_certificates(work, clients)
        (port,) = free_ports(1)
        python = sys.executable
        fedwarden_bin = fedwarden_command()
        if fedwarden_bin is None:
            raise DeploymentError("the `fedwarden` command is not installed")
        model_options = (
            ["--num-parameters", str(params)]
            if client_app is None
            else ["--app", client_app, "--app-config", f"params={params}"]
        )
        started = time.monotonic()
        say(f"{label}: starting the aggregator on 127.0.0.1:{port}")
        aggregator = processes.start(
            "aggregator",
            [
                fedwarden_bin,
                "aggregator",
                "--pki-dir",
                str(work / "pki"),
                "--listen",
                f"127.0.0.1:{port}",
                "--rounds",
                str(total_rounds),
                *model_options,
                "--min-available",
                str(clients),
                "--min-clients",
                str(clients),
                "--fraction",
                "1.0",
                "--sampling",
                "fixed",
                "--round-timeout",
                str(max(60.0, min(600.0, timeout / 2))),
                # a stream silent for a while on a loaded machine is not a dead client
                "--stall-timeout",
                "60",
                "--defence",
                defence,
                "--checkpoint-dir",
                str(work / "state"),
                "--report-jsonl",
                str(report),
                "--quiet",
                "--json",
            ],
            logs / "aggregator.log",
            cwd=work,
        )
        say(f"{label}: starting {clients} clients")
        results = []
        client_processes = []
        for i, tls_dir in enumerate(tls_dirs):
            give_up = str(max(60.0, min(300.0, timeout / 3)))
            if client_app is None:
                result = work / "results" / f"client-{i:03d}.json"
                result.parent.mkdir(parents=True, exist_ok=True)
                results.append(result)
                command = [python, "-m", "fedwarden.bench._fedwarden_client"]
                command += ["--tls-dir", str(tls_dir), "--server", f"127.0.0.1:{port}"]
                command += ["--params", str(params), "--index", str(i)]
                command += ["--rounds", str(total_rounds), "--result", str(result)]
                command += ["--give-up-after", give_up]
            else:
                command = [fedwarden_bin, "client", "--tls-dir", str(tls_dir)]
                command += ["--server", f"127.0.0.1:{port}", *model_options]
                command += ["--client-index", str(i), "--num-clients", str(clients)]
                command += ["--give-up-after", give_up, "--rpc-timeout", "120"]
            client_processes.append(
                processes.start(f"client-{i:03d}", command, logs / f"client-{i:03d}.log", cwd=work)
            )

        def opened() -> bool:
            return any(e.get("event") == "round_started" for e in read_events(report))

        def finished() -> bool:
            return any(e.get("event") == "training_finished" for e in read_events(report))

        def clients_ended() -> bool:
            if client_app is None:
                return all(r.exists() for r in results)
            return not any(c.alive() for c in client_processes)

        aggregator_peak: list[float] = []

        def watch() -> None:
            guard()
            # VmHWM only grows: the last reading before the aggregator exits is its peak so far
            if (peak := peak_resident_mb(aggregator.pid)) is not None:
                aggregator_peak[:] = [peak]

        wait_for(opened, left(), f"{clients} clients to join", processes, guard=watch)
        startup = time.monotonic() - started
        say(f"{label}: {warmup} warm-up + {rounds} timed rounds")
        # at the end the aggregator and the clients exit (0): not a failure
        wait_for(
            lambda: finished() or not aggregator.alive(),
            left(),
            "the training to finish",
            ProcessSet(processes.processes, clean_exit_ok=True),
            interval=0.2,
            guard=watch,
        )
        watch()
        after = guard.scan()
        wait_for(
            lambda: not aggregator.alive() and clients_ended(),
            min(60.0, left()),
            "the aggregator and the clients to exit",
            None,
            guard=guard,
        )
        events = read_events(report)
        final = [e for e in events if e.get("event") == "training_finished"]
        if not final or final[-1].get("status") != "completed":
            raise DeploymentError(
                f"the training did not complete: {final[-1] if final else 'no training_finished'}"
                f" (aggregator exit {aggregator.returncode()})",
                {"aggregator": aggregator.tail()},
            )
        done = [e for e in events if e.get("event") == "round_finished"]
        if [e["round"] for e in done] != list(range(1, total_rounds + 1)):
            raise DeploymentError(f"rounds finished: {[e['round'] for e in done]}")
        short = {
            e["round"]: len(e["participants"]) for e in done if len(e["participants"]) != clients
        }
        if short:
            raise DeploymentError(
                f"rounds in which not every client's update arrived (round: updates): {short}",
                {"aggregator": aggregator.tail(), **processes.tails(limit=3)},
            )
        accepted = [len(e["accepted"]) for e in done]
        rejected = {e["round"]: e["rejected"] for e in done if e["rejected"]}
        if client_app is None:
            outcomes = [json.loads(r.read_text(encoding="utf-8")) for r in results]
            bad: list[Any] = [o for o in outcomes if o.get("status") != "done"]
        else:
            bad = [f"{c.name} exit {c.returncode()}" for c in client_processes if c.returncode()]
        if bad:
            raise DeploymentError(f"clients that did not end cleanly: {bad[:3]}")
        starts = [e for e in events if e.get("event") == "round_started"]
        failed = False
        return FedwardenRoundResult(
            clients=clients,
            params=params,
            pipeline=description,
            round_seconds=[float(e["duration_seconds"]) for e in done[warmup:]],
            warmup_seconds=[float(e["duration_seconds"]) for e in done[:warmup]],
            all_rounds_seconds=_time(done[-1]) - _time(starts[0]),
            startup_seconds=startup,
            memory_after_mb=after.memory_mb,
            peak_memory_mb=guard.peak_mb,
            detail=(
                f"updates aggregated per round {accepted} of {clients}"
                + (f"; pipeline refusals {rejected}" if rejected else "")
            ),
            log_dir=str(logs) if keep_logs else None,
            details={
                "port": port,
                "aggregated_per_round": accepted,
                "pipeline_refusals": rejected,
                "round_cycle_seconds": [
                    round(_time(b) - _time(a), 4) for a, b in itertools.pairwise(done)
                ],
            },
            aggregator_peak_rss_mb=aggregator_peak[0] if aggregator_peak else None,
        )
    except DeploymentError as exc:
        exc.logs.setdefault("aggregator", tail(logs / "aggregator.log"))
        exc.args = (f"{exc.args[0]} (logs kept in {logs})",)
        raise
    finally:
        say(f"{label}: stopping {len(processes.processes)} processes")
        processes.stop_all()
        if not failed and not keep_logs:
            shutil.rmtree(work, ignore_errors=True)
