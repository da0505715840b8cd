"""The Flower side of the round-overhead benchmark: a real Flower deployment on 127.0.0.1.

One ``flower-superlink`` and ``N`` ``flower-supernode`` processes, each in its own session with
its log captured; the Flower App of :mod:`fedwarden.bench.flower_app` is submitted with
``flwr run`` to the SuperLink through a connection in a private ``FLWR_HOME``. The ServerApp
times each round and writes the times to a file that this module waits for.

Flower 1.42 serves its Fleet, Control and ServerAppIo ("Runtime") APIs on one HTTP port of the
SuperLink (``--host``/``--port``), and each SuperNode serves its ClientAppIo ("Runtime") API on
its own port; SuperLink and SuperNodes each start a ``flower-superexec`` that launches the
ServerApp and ClientApp processes. Every port is chosen free at run time and every address is
127.0.0.1. The deployment is insecure (plain HTTP): TLS would not change what Flower can check
anyway, since its SuperLink cannot require client certificates. Telemetry and the update check
are switched off (no network).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedwarden.bench import flower_app
from fedwarden.bench._processes import (
    DeploymentError,
    MemoryGuard,
    ProcessSet,
    Snapshot,
    free_ports,
    tail,
    wait_for,
)

__all__ = [
    "FlowerNotInstalledError",
    "FlowerRoundResult",
    "flower_environment",
    "flower_version",
    "relaunch_storm",
    "require_flower",
    "run_flower",
    "save_serverapp_log",
    "start_deployment",
    "submit",
]

CONNECTION = "fedwarden-bench"
SECURITY = (
    "plain HTTP (insecure mode): Flower's SuperLink cannot require client certificates; "
    "updates unsigned"
)

Progress = Callable[[str], None]


class FlowerNotInstalledError(RuntimeError):
    """Flower (the ``flower`` extra) or its command-line tools are missing."""


@dataclass
class FlowerRoundResult:
    """What one deployment measured."""

    clients: int
    params: int
    round_seconds: list[float]
    """Timed rounds (after the warm-up), as the ServerApp measured them."""
    warmup_seconds: list[float]
    strategy_seconds: float
    """The ServerApp's ``FedAvg.start`` over all rounds, warm-up included."""
    end_to_end_seconds: float
    """From ``flwr run`` to the result file: FAB build and submission, ServerApp start,
    warm-up and timed rounds."""
    startup_seconds: float
    """Until the SuperLink answered and every SuperNode had registered."""
    memory_after_mb: float | None
    """Memory (PSS) of the whole deployment after the last round."""
    peak_memory_mb: float | None
    """The largest memory (PSS) of the deployment seen, sampled every 5 s."""
    run_id: str
    log_dir: str | None
    details: dict[str, Any] = field(default_factory=dict)


def flower_version() -> str | None:
    """The installed flwr's version, without importing it (that takes a second)."""
    try:
        return importlib.metadata.version("flwr")
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool(name: str) -> str:
    """A Flower console script: next to this interpreter first (a virtualenv), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FlowerNotInstalledError(
            f"{name!r} was not found: install the Flower extra (pip install 'fedwarden[flower]')"
        )
    return found


def flower_environment(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            # SuperLink and SuperNode start `flower-superexec` by name
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
    )
    return env


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable text is a TOML basic string


def write_app(target: Path, params: int, nodes: int, rounds: int, warmup: int) -> Path:
    """Lay out the Flower App (``pyproject.toml`` and the package) in ``target``."""
    package = target / flower_app.APP_MODULE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""fedwarden round-overhead benchmark."""\n')
    for name in flower_app.SOURCES:
        shutil.copyfile(flower_app.source_dir() / name, package / name)
    version = flower_version() or "1.42.0"
    (target / "pyproject.toml").write_text(
        f"""[project]
name = "fedwarden-bench-flower"
version = "1.0.0"
description = "fedwarden round-overhead benchmark: FedAvg with a fixed update, no training"
license = "Apache-2.0"
dependencies = ["flwr>={version}", "numpy>=2.0"]

[tool.flwr.app]
publisher = "fedwarden"

[tool.flwr.app.components]
serverapp = "{flower_app.APP_MODULE}.server_app:app"
clientapp = "{flower_app.APP_MODULE}.client_app:app"

[tool.flwr.app.config]
params = {params}
nodes = {nodes}
rounds = {rounds}
warmup = {warmup}
timeout = 600.0
result-path = ""
""",
        encoding="utf-8",
    )
    return target


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2.0) as reply:
            return 200 <= int(reply.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _registered(log: Path) -> bool:
    # flower-supernode logs its node id once the SuperLink has registered and activated it
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "SuperNode ID:" in text


_LAUNCH = "Start `flwr-clientapp` process"
_TOKEN_FAILED = "task-token authentication failed"


def clientapp_launches(logs: Path) -> tuple[int, int]:
    """``(ClientApp processes started, task-token refusals)`` over the SuperNodes' logs.

    Flower starts one ``flwr-clientapp`` process per message. A process that has not activated
    its task within the claim lease (one heartbeat interval, 30 s) loses it: the task goes back
    to pending, a new process is started for it, and the late one is refused with "Runtime
    task-token authentication failed". More launches than messages mean that happened.
    """
    launches = refusals = 0
    for log in sorted(logs.glob("supernode-*.log")):
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        launches += text.count(_LAUNCH)
        refusals += text.count(_TOKEN_FAILED)
    return launches, refusals


def _all_registered(logs: list[Path]) -> bool:
    return all(_registered(log) for log in logs)


def require_flower() -> None:
    """Raise :class:`FlowerNotInstalledError` unless flwr and its command-line tools are here."""
    if flower_version() is None:
        raise FlowerNotInstalledError(
            "Flower is not installed: pip install 'fedwarden[flower]' (flwr 1.42)"
        )
    for name in ("flower-superlink", "flower-supernode", "flower-superexec", "flwr"):
        _tool(name)


def relaunch_storm(clients: int) -> Callable[[Snapshot], str | None]:
    """A :class:`MemoryGuard` check that stops a deployment in a relaunch storm.

    Flower starts one ClientApp process per message, at most N at a time when healthy; more
    means tasks lost their lease and were relaunched, which does not recover here.
    """

    def check(snap: Snapshot) -> str | None:
        running = snap.names.get("flwr-clientapp", 0)
        if running > 2 * clients + 2:
            return (
                f"relaunch storm: {running} ClientApp processes at once for {clients} "
                "SuperNodes (a ClientApp that has not started within Flower's 30 s task "
                "lease loses its task, which is launched again)"
            )
        return None

    return check


def start_deployment(
    work: Path,
    env: dict[str, str],
    clients: int,
    processes: ProcessSet,
    guard: MemoryGuard,
    left: Callable[[], float],
    say: Progress,
    node_configs: Sequence[str] | None = None,
) -> tuple[int, list[int], float]:
    """Start a SuperLink and ``clients`` SuperNodes (SuperNode ``i`` with ``node_configs[i]``,
    Flower's ``--node-config``, when given) in ``processes``, and write the connection
    ``flwr run`` uses into ``FLWR_HOME``; return once every SuperNode has registered.

    Returns ``(SuperLink port, SuperNode ports, seconds taken)``.
    """
    logs = work / "logs"
    flwr_home = Path(env["FLWR_HOME"])
    superlink_bin, supernode_bin = _tool("flower-superlink"), _tool("flower-supernode")
    _tool("flower-superexec")
    link_port, *node_ports = free_ports(1 + clients)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n',
        encoding="utf-8",
    )
    started = time.monotonic()
    say(f"Flower N={clients}: starting the SuperLink on 127.0.0.1:{link_port}")
    processes.start(
        "superlink",
        [
            superlink_bin,
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(link_port),
            "--disable-runtime-dependency-installation",
        ],
        logs / "superlink.log",
        env=env,
        cwd=work,
    )
    wait_for(lambda: _health(link_port), min(60.0, left()), "the SuperLink", processes, guard=guard)

    # SuperNodes start in small batches, each once the previous one has registered: fifty
    # Python processes starting at once on a small machine keep the SuperLink from
    # answering their registrations in time (start-up is not part of a round)
    batch = max(2, 2 * (os.cpu_count() or 1))
    node_logs = [logs / f"supernode-{i}.log" for i in range(clients)]
    for first in range(0, clients, batch):
        members = range(first, min(first + batch, clients))
        say(f"Flower N={clients}: starting SuperNodes {first + 1}-{members[-1] + 1}")
        for i in members:
            node_config = [] if node_configs is None else ["--node-config", node_configs[i]]
            processes.start(
                f"supernode-{i}",
                [
                    supernode_bin,
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{link_port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(node_ports[i]),
                    *node_config,
                ],
                node_logs[i],
                env=env,
                cwd=work,
            )
        batch_logs = [node_logs[i] for i in members]
        wait_for(
            functools.partial(_all_registered, batch_logs),
            min(120.0, left()),
            f"SuperNodes {first + 1}-{members[-1] + 1} to register",
            processes,
            guard=guard,
        )
    return link_port, node_ports, time.monotonic() - started


def submit(
    env: dict[str, str],
    work: Path,
    app: Path,
    run_config: Path,
    logs: Path,
    left: Callable[[], float],
) -> str:
    """``flwr run`` the Flower App in ``app`` with the ``run_config`` overrides (a TOML file)
    on the deployment :func:`start_deployment` started; return the run's id."""
    command = [_tool("flwr"), "run", str(app), CONNECTION, "--run-config", str(run_config)]
    done = subprocess.run(
        [*command, "--format", "json"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=min(180.0, left()),
        check=False,
    )
    (logs / "flwr-run.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    try:
        reply = json.loads(done.stdout)
    except json.JSONDecodeError:
        reply = {}
    if done.returncode != 0 or not reply.get("success"):
        raise DeploymentError(
            f"flwr run failed (exit {done.returncode})",
            {"flwr run": tail(logs / "flwr-run.log")},
        )
    return str(reply.get("run-id", ""))


def save_serverapp_log(env: dict[str, str], run_id: str, out: Path) -> None:
    """Save the run's ServerApp log (``flwr log --show``); best effort, bounded."""
    if not run_id:
        return
    try:
        done = subprocess.run(
            [_tool("flwr"), "log", run_id, CONNECTION, "--show"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        out.write_text(done.stdout + done.stderr, encoding="utf-8")
    except (OSError, subprocess.TimeoutExpired) as exc:
        out.write_text(f"(flwr log failed: {exc})\n", encoding="utf-8")


def run_flower(
    clients: int,
    params: int,
    rounds: int,
    warmup: int = 1,
    timeout: float = 900.0,
    keep_logs: bool = False,
    on_progress: Progress | None = None,
) -> FlowerRoundResult:
    """Deploy SuperLink and ``clients`` SuperNodes, run ``warmup + rounds`` FedAvg rounds.

    Everything started is stopped before this returns or raises. Raises
    :class:`FlowerNotInstalledError` or :class:`DeploymentError` (with log tails; the logs are
    then kept and their directory named).
    """
    require_flower()
    say = on_progress or (lambda _msg: None)
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    work = Path(tempfile.mkdtemp(prefix="fedwarden-bench-flower-"))
    logs = work / "logs"
    flwr_home = work / "flwr-home"
    flwr_home.mkdir(parents=True)
    env = flower_environment(flwr_home)
    app = write_app(work / "app", params, clients, rounds, warmup)
    result_path = work / "result.json"
    failed = True
    run_id = ""
    processes = ProcessSet(marker=str(work))
    guard = MemoryGuard(processes, check=relaunch_storm(clients))
    try:
        link_port, node_ports, startup = start_deployment(
            work, env, clients, processes, guard, left, say
        )

        overrides = work / "run-config.toml"
        overrides.write_text(
            f"result-path = {_toml_string(str(result_path))}\ntimeout = {float(left())!r}\n",
            encoding="utf-8",
        )
        say(f"Flower N={clients}: flwr run ({warmup} warm-up + {rounds} timed rounds)")
        submitted = time.monotonic()
        run_id = submit(env, work, app, overrides, logs, left)

        wait_for(
            result_path.exists,
            left(),
            f"the ServerApp of run {run_id} to finish",
            processes,
            interval=0.25,
            guard=guard,
        )
        end_to_end = time.monotonic() - submitted
        after = guard.scan()
        result = json.loads(result_path.read_text(encoding="utf-8"))
        if result.get("status") != "ok":
            raise DeploymentError(
                f"the ServerApp of run {run_id} failed",
                {"ServerApp": str(result.get("error", result))},
            )
        measured = result["rounds"]
        bad = [r for r in measured if r["errors"] or r["replies"] != clients]
        if bad:
            raise DeploymentError(
                f"rounds without a reply from every SuperNode: {bad}", processes.tails()
            )
        if len(measured) != warmup + rounds:
            raise DeploymentError(f"expected {warmup + rounds} rounds, got {len(measured)}")
        if result.get("final_shape") != [[params]]:
            raise DeploymentError(f"unexpected final model shape {result.get('final_shape')}")
        launches, refusals = clientapp_launches(logs)
        failed = False
        return FlowerRoundResult(
            clients=clients,
            params=params,
            round_seconds=[float(r["seconds"]) for r in measured[warmup:]],
            warmup_seconds=[float(r["seconds"]) for r in measured[:warmup]],
            strategy_seconds=float(result["strategy_seconds"]),
            end_to_end_seconds=end_to_end,
            startup_seconds=startup,
            memory_after_mb=after.memory_mb,
            peak_memory_mb=guard.peak_mb,
            run_id=run_id,
            log_dir=str(logs) if keep_logs else None,
            details={
                "superlink_port": link_port,
                "supernode_ports": node_ports,
                "clientapp_launches": launches,
                "messages": clients * (warmup + rounds),
                "task_token_refusals": refusals,
            },
        )
    except subprocess.TimeoutExpired as exc:
        raise DeploymentError(f"timed out: {exc}", processes.tails()) from exc
    except DeploymentError as exc:
        launches, refusals = clientapp_launches(logs)
        note = ""
        if launches or refusals:
            note = (
                f"; by then the SuperNodes' logs had recorded {launches} ClientApp launches "
                f"and {refusals} task-token refusals"
            )
        if run_id:
            save_serverapp_log(env, run_id, logs / "serverapp.log")
            exc.logs.setdefault("ServerApp (flwr log)", tail(logs / "serverapp.log"))
        exc.args = (f"{exc.args[0]}{note} (logs kept in {logs})",)
        raise
    finally:
        say(f"Flower N={clients}: stopping {len(processes.processes)} processes")
        processes.stop_all()
        if not failed and not keep_logs:
            shutil.rmtree(work, ignore_errors=True)
