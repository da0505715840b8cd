"""``fedwarden demo``: a secure federated training between processes on 127.0.0.1.

What runs: a per-training CA and certificates in a temporary directory; the aggregator
(``fedwarden aggregator``) and ten clients (``python -m fedwarden.demo.participant``), each its
own process, over mutual TLS with signed updates. Among the clients:

- two **poisoners** send sign-flipped, ×10 boosted updates claiming a million examples (FL01);
- one **free rider** plays the last global update back with a little noise (FL03);
- one honest client sits behind a **man in the middle** (:mod:`fedwarden.demo.relay`) that
  alters its update in transit (FL05);
- every honest client trains with **DP-SGD** at ε ≤ 1 (δ = 1e-5), example-level (FL02/FL04).

The aggregator runs fedwarden's recommended pipeline. The demo ends with the accuracy of the
global model, the ε spent, each client's fate, and a verdict per defence; it exits non-zero if
any defence did not hold. The accuracy of the same training without DP comes from the same
tasks run in-process (:func:`reference_accuracy`), so that both numbers are shown side by side.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedwarden.client.tasks import BuiltinTask
from fedwarden.demo.participant import FreeRidingTask, PoisoningTask
from fedwarden.demo.relay import TamperingRelay
from fedwarden.pipeline.round import Pipeline, PipelineConfig
from fedwarden.pki import CertificateAuthority, TrainingPKI, TrainingRef
from fedwarden.pki.files import certificate_pem

HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class DemoConfig:
    """The demo's settings; the defaults are what ``fedwarden demo`` runs.

    Attributes:
        honest: honest clients besides the one behind the man in the middle.
        rounds: training rounds.
        epsilon: example-level DP budget of each honest client (``None``: no DP).
        delta: δ of that budget.
        task: the built-in task every client trains.
        lr: local learning rate.
        round_timeout: seconds a round stays open.
        workdir: keep certificates, logs and reports here instead of a temporary directory.
    """

    honest: int = 6
    rounds: int = 10
    epsilon: float | None = 1.0
    delta: float = 1e-5
    task: str = "digits-logreg"
    lr: float = 0.5
    round_timeout: float = 40.0
    workdir: Path | None = None

    @property
    def clients(self) -> int:
        return self.honest + 4


@dataclass
class Participant:
    name: str
    role: str  # "honest" | "poisoner" | "free-rider" | "victim"
    index: int
    process: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoResult:
    """Everything the final table and ``--json`` show."""

    accuracy: float | None
    reference_accuracy: float
    epsilon: float | None
    delta: float
    guarantee: str
    rounds: int
    status: str
    clients: list[dict[str, Any]]
    defences: dict[str, dict[str, Any]]
    relay: dict[str, Any]
    workdir: str | None
    seconds: float

    @property
    def held(self) -> bool:
        return all(d["held"] for d in self.defences.values())

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "held": self.held}


RoundCallback = Callable[[dict[str, Any]], None]


def run_demo(config: DemoConfig, on_event: RoundCallback | None = None) -> DemoResult:
    """Run the demo end to end; ``on_event`` receives each line of the aggregator's report."""
    started = time.monotonic()
    if config.workdir is not None:
        config.workdir.mkdir(parents=True, exist_ok=True)
        return _run(config, config.workdir, on_event, started, keep=True)
    with tempfile.TemporaryDirectory(prefix="fedwarden-demo-") as tmp:
        return _run(config, Path(tmp), on_event, started, keep=False)


def _run(
    config: DemoConfig, root: Path, on_event: RoundCallback | None, started: float, keep: bool
) -> DemoResult:
    participants = _cast(config)
    pki = TrainingPKI.init(root / "ca", TrainingRef(namespace="demo", training="digits"))
    server = pki.issue_server(["localhost"], ["127.0.0.1"], duration=HOUR)
    pki.write_tls_directory(root / "server", server)
    for p in participants:
        pki.write_tls_directory(root / p.name, pki.issue_client(p.name, duration=HOUR))
    # The relay: an insider with a certificate of the training's CA under its own name, and a
    # server certificate from its own CA, which the victim's trust store was made to accept.
    relay_identity = pki.issue_client("edge-relay", duration=HOUR)
    rogue_ca = CertificateAuthority.create(TrainingRef(namespace="corp", training="inspection"))
    rogue_server = rogue_ca.issue_server(["localhost"], ["127.0.0.1"], duration=HOUR)
    victim = next(p for p in participants if p.role == "victim")
    victim_bundle = root / victim.name / "trust-with-rogue-ca.crt"
    victim_bundle.write_bytes(
        (root / victim.name / "ca.crt").read_bytes() + certificate_pem(rogue_ca.certificate)
    )

    port = _free_port()
    report = root / "report.jsonl"
    aggregator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedwarden.cli",
            "aggregator",
            "--pki-dir",
            str(root / "ca"),
            "--cert",
            str(root / "server" / "tls.crt"),
            "--key",
            str(root / "server" / "tls.key"),
            "--listen",
            f"127.0.0.1:{port}",
            "--rounds",
            str(config.rounds),
            "--task",
            config.task,
            # everyone, so that the first round waits for all; each ban lowers the minimum
            "--min-available",
            str(config.clients),
            "--round-timeout",
            str(config.round_timeout),
            "--checkpoint-dir",
            str(root / "state"),
            "--report-jsonl",
            str(report),
            "--population",
            str(config.clients + 1),
        ],
        stdout=(root / "aggregator.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    relay = TamperingRelay(
        upstream=f"127.0.0.1:{port}",
        upstream_ca=(root / "server" / "ca.crt").read_bytes(),
        upstream_cert=relay_identity.cert_pem,
        upstream_key=relay_identity.key_pem,
        server_cert=rogue_server.cert_pem,
        server_key=rogue_server.key_pem,
    )
    relay_address = relay.start()
    try:
        for p in participants:
            p.process = _spawn(config, root, p, port, relay_address, victim_bundle)
        status = _follow(
            report, aggregator, on_event, timeout=config.rounds * config.round_timeout + 120
        )
        for p in participants:
            _finish(p, root)
    finally:
        relay.stop()
        _terminate(aggregator)
        for p in participants:
            if p.process is not None:
                _terminate(p.process)
    events = _read_events(report)
    return _summarise(config, participants, events, status, relay, root if keep else None, started)


def _cast(config: DemoConfig) -> list[Participant]:
    roles = ["honest"] * config.honest + ["victim", "poisoner", "poisoner", "free-rider"]
    return [Participant(f"site-{i:02d}", role, i) for i, role in enumerate(roles)]


def _spawn(
    config: DemoConfig, root: Path, p: Participant, port: int, relay: str, victim_bundle: Path
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "fedwarden.demo.participant",
        "--role",
        "honest" if p.role == "victim" else p.role,
        "--tls-dir",
        str(root / p.name),
        "--server",
        relay if p.role == "victim" else f"127.0.0.1:{port}",
        "--task",
        config.task,
        "--index",
        str(p.index),
        "--num-clients",
        str(config.clients),
        "--rounds",
        str(config.rounds),
        "--lr",
        str(config.lr),
        "--delta",
        str(config.delta),
        "--result",
        str(root / f"{p.name}.json"),
    ]
    if config.epsilon is not None:
        args += ["--epsilon", str(config.epsilon)]
    if p.role == "victim":
        args += ["--ca", str(victim_bundle)]
    return subprocess.Popen(
        args,
        stdout=(root / f"{p.name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _follow(
    report: Path,
    aggregator: subprocess.Popen[bytes],
    on_event: RoundCallback | None,
    timeout: float,
) -> str:
    """Stream the report's events until the training finishes; its final status."""
    deadline = time.monotonic() + timeout
    offset = 0
    while time.monotonic() < deadline:
        if report.exists():
            with report.open("rb") as handle:
                handle.seek(offset)
                for line in handle:
                    if not line.endswith(b"\n"):
                        break
                    offset += len(line)
                    event = json.loads(line)
                    if on_event is not None:
                        on_event(event)
                    if event["event"] == "training_finished":
                        return str(event["status"])
        if aggregator.poll() is not None and aggregator.returncode != 0:
            return f"aggregator exited with code {aggregator.returncode}"
        time.sleep(0.2)
    return "timed out"


def _finish(p: Participant, root: Path, timeout: float = 30.0) -> None:
    assert p.process is not None
    try:
        p.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _terminate(p.process)
    result_file = root / f"{p.name}.json"
    if result_file.exists():
        p.result = json.loads(result_file.read_text())


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _read_events(report: Path) -> list[dict[str, Any]]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


def _summarise(
    config: DemoConfig,
    participants: list[Participant],
    events: list[dict[str, Any]],
    status: str,
    relay: TamperingRelay,
    workdir: Path | None,
    started: float,
) -> DemoResult:
    finished = [e for e in events if e["event"] == "round_finished"]
    final = next((e for e in events if e["event"] == "training_finished"), None)
    banned: dict[str, str] = dict(final["banned"]) if final else {}
    refusals: dict[str, list[str]] = {}
    accepted: dict[str, int] = {}
    for e in events:
        if e["event"] == "rejected":
            refusals.setdefault(e["client"], []).append(refusal_text(e["reason"], e["message"]))
    for e in finished:
        for client in e["accepted"]:
            accepted[client] = accepted.get(client, 0) + 1
    clients = []
    for p in participants:
        # the victim's updates reach the aggregator under the relay's name: what it was told
        # is in its own result
        told = [
            refusal_text(r["reason"], r["message"])
            for r in p.result.get("result", {}).get("rounds", [])
            if r.get("status") == "rejected"
        ]
        own = refusals.get(p.name) or told
        clients.append(
            {
                "client": p.name,
                "role": p.role,
                "accepted_rounds": accepted.get(p.name, 0),
                "refusals": len(own),
                "last_refusal": own[-1] if own else None,
                "banned": banned.get(p.name),
                "epsilon": p.result.get("epsilon"),
                "exit": p.result.get("result", {}).get("status"),
            }
        )
    relay_name = "edge-relay"
    clients.append(
        {
            "client": relay_name,
            "role": "man in the middle (insider relay)",
            "accepted_rounds": accepted.get(relay_name, 0),
            "refusals": len(refusals.get(relay_name, [])),
            "last_refusal": refusals.get(relay_name, [None])[-1],
            "banned": banned.get(relay_name),
            "epsilon": None,
            "exit": None,
        }
    )
    by_role = {c["client"]: c for c in clients}
    poisoners = [c for c in clients if c["role"] == "poisoner"]
    riders = [c for c in clients if c["role"] == "free-rider"]
    honest = [c for c in clients if c["role"] in ("honest", "victim")]
    epsilons = [c["epsilon"] for c in honest if c["epsilon"] is not None]
    accuracy = finished[-1]["metrics"].get("accuracy") if finished else None
    reference = reference_accuracy(config)
    defences = {
        "poisoning (FL01)": {
            "held": all(c["accepted_rounds"] == 0 or c["banned"] for c in poisoners)
            and all(c["banned"] for c in poisoners),
            "detail": "every poisoner banned; "
            + ", ".join(f"{c['client']}: aggregated {c['accepted_rounds']}×" for c in poisoners),
        },
        "free riding (FL03)": {
            "held": all(c["banned"] for c in riders),
            "detail": ", ".join(f"{c['client']}: {c['banned'] or 'not banned'}" for c in riders),
        },
        "tampering in transit (FL05)": {
            "held": relay.counters.intercepted_updates > 0
            and by_role[relay_name]["accepted_rounds"] == 0,
            "detail": f"the relay intercepted {relay.counters.intercepted_updates} update(s) and "
            f"altered {relay.counters.tampered_updates} (the rest were refused at their header "
            "before a payload chunk passed); the "
            f"aggregator refused {by_role[relay_name]['refusals']} from it, aggregated "
            f"{by_role[relay_name]['accepted_rounds']}",
        },
        "differential privacy (FL02/FL04)": {
            "held": config.epsilon is None
            or (bool(epsilons) and max(epsilons) <= config.epsilon + 1e-9),
            "detail": (
                f"largest ε spent by an honest client: {max(epsilons):.3f} ≤ {config.epsilon}"
                if epsilons
                else "no DP"
                if config.epsilon is None
                else "no client reported its ε"
            ),
        },
        "honest clients kept": {
            "held": not any(c["banned"] for c in honest if c["role"] == "honest"),
            "detail": f"{sum(1 for c in honest if c['banned'])} honest client(s) banned",
        },
        "training completed": {"held": status == "completed", "detail": status},
        "model learned": {
            "held": accuracy is not None and accuracy > 0.5,
            "detail": f"accuracy {accuracy:.3f}" if accuracy is not None else "no round finished",
        },
    }
    return DemoResult(
        accuracy=accuracy,
        reference_accuracy=reference,
        epsilon=max(epsilons) if epsilons else None,
        delta=config.delta,
        guarantee=(
            "example-level DP-SGD inside each honest client (any one training example), "
            "not client-level"
            if config.epsilon is not None
            else "none"
        ),
        rounds=len(finished),
        status=status,
        clients=clients,
        defences=defences,
        relay={
            "intercepted_updates": relay.counters.intercepted_updates,
            "tampered_updates": relay.counters.tampered_updates,
            "forwarded_calls": relay.counters.forwarded_calls,
            "upstream_refusals": relay.counters.upstream_refusals[-3:],
        },
        workdir=str(workdir) if workdir else None,
        seconds=round(time.monotonic() - started, 1),
    )


def refusal_text(reason: str, message: str) -> str:
    """``reason: message``, without repeating a reason the message starts with (the
    pipeline's messages do: ``free-riding: replay of ...``)."""
    return message if message.startswith(f"{reason}:") else f"{reason}: {message}"


def reference_accuracy(config: DemoConfig) -> float:
    """The same training without DP and without a network: same tasks, shards, attackers and
    pipeline, run in-process (the relay's victim simply contributes nothing, as in the demo)."""
    tasks = {
        i: BuiltinTask(
            config.task, client_index=i, num_clients=config.clients, lr=config.lr, seed=i
        )
        for i in range(config.clients)
    }
    evaluator = BuiltinTask(config.task, lr=config.lr)
    params = evaluator.initial_parameters()
    participants = _cast(config)
    actors: dict[str, Any] = {}
    for p in participants:
        if p.role == "poisoner":
            actors[p.name] = PoisoningTask(tasks[p.index])
        elif p.role == "free-rider":
            actors[p.name] = FreeRidingTask(evaluator.num_parameters, seed=p.index)
        elif p.role == "honest":
            actors[p.name] = tasks[p.index]
    pipe = Pipeline(PipelineConfig.recommended(), dim=params.size, seed=0)
    for _ in range(config.rounds):
        names = [n for n in actors if n not in pipe.banned]
        updates = np.stack([actors[n].fit(params, 0)[0] for n in names])
        params = params + pipe.run_round(updates, names).aggregate
    evaluated = evaluator.evaluate(params)
    assert evaluated is not None  # the aggregator's view holds the whole test set
    return evaluated.metrics["accuracy"]
