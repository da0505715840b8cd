"""Round-overhead benchmark: one federated round without training, fedwarden against Flower.

A round here is everything but the training: sampling, sending the global model to ``N``
clients, the clients' replies (a fixed float32 update of ``d`` values, returned at once),
transport, verification and aggregation. Both sides run as separate processes on 127.0.0.1:

* **Flower**: a real Flower 1.42 deployment, ``flower-superlink`` and ``N``
  ``flower-supernode`` processes, with a ServerApp running ``FedAvg`` (Message API,
  ``fraction_train=1.0``, ``min_available_nodes=N``) submitted by ``flwr run``
  (:mod:`fedwarden.bench._runtime_flower`, :mod:`fedwarden.bench.flower_app`). The ServerApp
  times each round from configuring it to holding the aggregate.
* **fedwarden**: an aggregator and ``N`` clients over gRPC with mutual TLS (client certificates
  required) and signed updates, the pipeline set to ``fedavg`` and, as a second row,
  fedwarden's recommended robust pipeline (:mod:`fedwarden.bench._runtime_fedwarden`).

Each side runs ``warmup`` untimed rounds first, then ``rounds`` timed ones; the median of the
timed rounds is the side's seconds per round. Target: fedwarden's ``fedavg`` round under a
tenth of Flower's.

This module does no printing: :func:`run` returns dataclasses; :func:`table_rows` and
:func:`to_markdown` format them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib.metadata
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fedwarden.bench import _runtime_fedwarden, _runtime_flower
from fedwarden.bench._processes import DeploymentError, terminate_on_sigterm
from fedwarden.bench._runtime_flower import FlowerNotInstalledError

__all__ = [
    "COLUMNS",
    "RUN_ORDER",
    "SIDES",
    "TARGET_RATIO",
    "CaseResult",
    "Environment",
    "FlowerNotInstalledError",
    "RuntimeBenchResult",
    "SideResult",
    "describe_environment",
    "run",
    "table_rows",
    "to_markdown",
]

TARGET_RATIO = 0.1
"""fedwarden's seconds per round (``fedavg``) divided by Flower's must stay under this."""

FLOWER = "flower"
FEDWARDEN_FEDAVG = "fedwarden-fedavg"
FEDWARDEN_RECOMMENDED = "fedwarden-recommended"
SIDES: tuple[str, ...] = (FLOWER, FEDWARDEN_FEDAVG, FEDWARDEN_RECOMMENDED)
RUN_ORDER: tuple[str, ...] = (FEDWARDEN_FEDAVG, FEDWARDEN_RECOMMENDED, FLOWER)
"""Flower last for each N: a Flower deployment that overloads the machine (see
:mod:`fedwarden.bench._runtime_flower`) then cannot slow down the fedwarden runs of that N."""

COLUMNS: tuple[str, ...] = (
    "N",
    "d",
    "Flower s/round",
    "fedwarden s/round (fedavg)",
    "fedwarden s/round (recommended)",
    "ratio fedwarden/Flower (fedavg)",
    "ratio (recommended)",
    f"target (< {TARGET_RATIO:g})",
)

Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class SideResult:
    """One side (Flower, fedwarden with a pipeline) at one ``N``."""

    side: str
    clients: int
    params: int
    status: str
    """``ok``; ``failed`` (``detail`` says why); ``pending`` (not runnable in this tree yet);
    ``skipped`` (not asked for)."""
    seconds_per_round: float | None = None
    """Median of the timed rounds."""
    round_seconds: tuple[float, ...] = ()
    warmup_seconds: tuple[float, ...] = ()
    all_rounds_seconds: float | None = None
    """All rounds, warm-up included, as the server side timed them."""
    startup_seconds: float | None = None
    """Until every client was connected and ready (not part of a round)."""
    peak_memory_mb: float | None = None
    """Largest memory (sum of PSS) of all the side's processes, sampled every 5 s."""
    security: str = ""
    pipeline: str = ""
    detail: str = ""
    log_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def display(self) -> str:
        if self.status == "ok" and self.seconds_per_round is not None:
            return format_seconds(self.seconds_per_round)
        return self.status


@dataclass(frozen=True)
class CaseResult:
    clients: int
    params: int
    sides: dict[str, SideResult]
    ratio_fedavg: float | None
    """fedwarden ``fedavg`` s/round ÷ Flower s/round; ``None`` unless both ran."""
    ratio_recommended: float | None
    passed: bool | None
    """``ratio_fedavg < TARGET_RATIO``; ``None`` unless both ran."""


@dataclass(frozen=True)
class Environment:
    started_at: str
    python: str
    platform: str
    cpu: str
    cpu_count: int | None
    cpus_usable: int | None
    memory_gb: float | None
    flwr: str | None
    fedwarden: str
    numpy: str | None
    grpcio: str | None
    cryptography: str | None
    loadavg_start: tuple[float, float, float] | None
    loadavg_end: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class RuntimeBenchResult:
    clients: tuple[int, ...]
    params: int
    rounds: int
    warmup: int
    sides: tuple[str, ...]
    method: str
    target: str
    environment: Environment
    cases: tuple[CaseResult, ...]
    elapsed_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeBenchResult:
        """The inverse of :meth:`to_dict` (e.g. to format a saved ``runtime.json`` again)."""
        env = dict(data["environment"])
        for key in ("loadavg_start", "loadavg_end"):
            if env.get(key) is not None:
                env[key] = tuple(env[key])
        cases = []
        for case in data["cases"]:
            sides = {}
            for name, side in case["sides"].items():
                fields = dict(side)
                for key in ("round_seconds", "warmup_seconds"):
                    fields[key] = tuple(fields[key])
                sides[name] = SideResult(**fields)
            cases.append(CaseResult(**{**case, "sides": sides}))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{
                **{k: v for k, v in data.items() if k in known},
                "clients": tuple(data["clients"]),
                "sides": tuple(data["sides"]),
                "environment": Environment(**env),
                "cases": tuple(cases),
            }
        )


def format_seconds(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds * 1e3:.2f} ms"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def describe_environment() -> Environment:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        usable = len(os.sched_getaffinity(0))
    memory: float | None = None
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open("/proc/meminfo", encoding="utf-8") as fh,
    ):
        memory = round(int(fh.readline().split()[1]) / 1024**2, 1)
    return Environment(
        started_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=cpu,
        cpu_count=os.cpu_count(),
        cpus_usable=usable,
        memory_gb=memory,
        flwr=_runtime_flower.flower_version(),
        fedwarden=_version("fedwarden") or "unknown",
        numpy=_version("numpy"),
        grpcio=_version("grpcio"),
        cryptography=_version("cryptography"),
        loadavg_start=_loadavg(),
    )


METHOD = (
    "One process per participant on 127.0.0.1, no training: every client answers with a "
    "float32 update of d values made before the round. {warmup} untimed warm-up round(s), then "
    "{rounds} timed; seconds per round = the median of the timed rounds, as the server side "
    "timed them, from opening the round (sampling, sending the global model) to holding the "
    "new global model. Deployments run one at a time (for each N: fedwarden fedavg, fedwarden "
    "recommended, Flower), each after a pause until the machine is quiet"
)


# --------------------------------------------------------------------------------------------
# running


def _runnable() -> int | None:
    """Tasks runnable right now on the machine (``/proc/loadavg``), this one included."""
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _settle(minimum: float = 3.0, maximum: float = 30.0) -> float:
    """Pause between deployments until the machine is quiet (at most one runnable task per CPU
    beyond this one, three readings in a row), at least ``minimum`` and at most ``maximum``
    seconds: the processes of the previous deployment must be gone before the next is timed.
    Returns the seconds waited."""
    start = time.monotonic()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quiet = 0
    while time.monotonic() - start < maximum:
        time.sleep(1.0)
        runnable = _runnable()
        quiet = quiet + 1 if runnable is None or runnable <= (cpus or 1) + 1 else 0
        if quiet >= 3 and time.monotonic() - start >= minimum:
            break
    return time.monotonic() - start


def _flower_side(
    clients: int,
    params: int,
    rounds: int,
    warmup: int,
    timeout: float,
    keep_logs: bool,
    say: Callable[[str], None],
) -> SideResult:
    try:
        res = _runtime_flower.run_flower(
            clients,
            params,
            rounds,
            warmup=warmup,
            timeout=timeout,
            keep_logs=keep_logs,
            on_progress=say,
        )
    except DeploymentError as exc:
        return SideResult(
            FLOWER,
            clients,
            params,
            "failed",
            security=_runtime_flower.SECURITY,
            pipeline="FedAvg",
            detail=str(exc),
        )
    return SideResult(
        FLOWER,
        clients,
        params,
        "ok",
        seconds_per_round=statistics.median(res.round_seconds),
        round_seconds=tuple(res.round_seconds),
        warmup_seconds=tuple(res.warmup_seconds),
        all_rounds_seconds=res.strategy_seconds,
        startup_seconds=res.startup_seconds,
        peak_memory_mb=res.peak_memory_mb,
        security=_runtime_flower.SECURITY,
        pipeline="FedAvg (flwr.serverapp.strategy, Message API)",
        detail=f"run {res.run_id}",
        log_dir=res.log_dir,
        extra={
            **res.details,
            "submit_to_result_seconds": res.end_to_end_seconds,
            "memory_after_rounds_mb": res.memory_after_mb,
        },
    )


def _fedwarden_side(
    side: str,
    clients: int,
    params: int,
    rounds: int,
    warmup: int,
    timeout: float,
    keep_logs: bool,
    say: Callable[[str], None],
) -> SideResult:
    pipeline = "fedavg" if side == FEDWARDEN_FEDAVG else "recommended"
    missing = _runtime_fedwarden.unavailable()
    if missing is not None:
        return SideResult(side, clients, params, "pending", pipeline=pipeline, detail=missing)
    try:
        res = _runtime_fedwarden.run_fedwarden(
            clients,
            params,
            rounds,
            pipeline=pipeline,
            warmup=warmup,
            timeout=timeout,
            keep_logs=keep_logs,
            on_progress=say,
        )
    except DeploymentError as exc:
        return SideResult(
            side,
            clients,
            params,
            "failed",
            security=_runtime_fedwarden.SECURITY,
            pipeline=pipeline,
            detail=str(exc),
        )
    return SideResult(
        side,
        clients,
        params,
        "ok",
        seconds_per_round=statistics.median(res.round_seconds),
        round_seconds=tuple(res.round_seconds),
        warmup_seconds=tuple(res.warmup_seconds),
        all_rounds_seconds=res.all_rounds_seconds,
        startup_seconds=res.startup_seconds,
        peak_memory_mb=res.peak_memory_mb,
        security=_runtime_fedwarden.SECURITY,
        pipeline=res.pipeline,
        detail=res.detail,
        log_dir=res.log_dir,
        extra={**res.details, "memory_after_rounds_mb": res.memory_after_mb},
    )


def _case(clients: int, params: int, sides: dict[str, SideResult]) -> CaseResult:
    flower = sides.get(FLOWER)
    base = flower.seconds_per_round if flower is not None and flower.status == "ok" else None

    def ratio(name: str) -> float | None:
        other = sides.get(name)
        if base is None or other is None or other.status != "ok":
            return None
        assert other.seconds_per_round is not None
        return other.seconds_per_round / base

    fedavg = ratio(FEDWARDEN_FEDAVG)
    return CaseResult(
        clients=clients,
        params=params,
        sides=sides,
        ratio_fedavg=fedavg,
        ratio_recommended=ratio(FEDWARDEN_RECOMMENDED),
        passed=None if fedavg is None else fedavg < TARGET_RATIO,
    )


def run(
    clients: Sequence[int] = (10, 50),
    params: int = 1_000_000,
    rounds: int = 3,
    warmup: int = 1,
    sides: Sequence[str] = SIDES,
    timeout: float = 1800.0,
    keep_logs: bool = False,
    on_progress: Progress | None = None,
    settle: float = 30.0,
) -> RuntimeBenchResult:
    """Run every side in ``sides`` for every ``N`` in ``clients``, one deployment at a time.

    ``timeout`` bounds each deployment (start, rounds, stop); ``settle`` the pause before each
    deployment but the first, which ends earlier once the machine is quiet (0: no pause). A
    side that fails is reported as
    ``failed`` with the cause and its logs' tails; the other sides still run. Raises
    :class:`FlowerNotInstalledError` if Flower is asked for and not installed.
    """
    if not clients or any(n < 1 for n in clients):
        raise ValueError("clients must be a non-empty list of integers >= 1")
    if params < 1 or rounds < 1 or warmup < 0:
        raise ValueError("params and rounds must be >= 1, warmup >= 0")
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        raise ValueError(f"unknown side {unknown}; choose from {', '.join(SIDES)}")
    if timeout <= 0 or settle < 0:
        raise ValueError("timeout must be > 0 and settle >= 0")
    if FLOWER in sides and _runtime_flower.flower_version() is None:
        raise FlowerNotInstalledError(
            "Flower is not installed: pip install 'fedwarden[flower]' (flwr 1.42)"
        )

    env = describe_environment()
    started = time.monotonic()
    total = len(clients) * len(sides)
    done = 0
    cases: list[CaseResult] = []

    def report(label: str) -> None:
        if on_progress is not None:
            on_progress(done, total, label)

    with terminate_on_sigterm():
        first = True
        for n in clients:
            results: dict[str, SideResult] = {}
            for side in RUN_ORDER:
                if side not in sides:
                    continue
                if not first and settle > 0:
                    report(f"letting the machine settle before {side} N={n}")
                    _settle(minimum=min(3.0, settle), maximum=settle)
                first = False
                report(f"{side} N={n}")
                load_before = _loadavg()
                if side == FLOWER:
                    outcome = _flower_side(n, params, rounds, warmup, timeout, keep_logs, report)
                else:
                    outcome = _fedwarden_side(
                        side, n, params, rounds, warmup, timeout, keep_logs, report
                    )
                # other work on the machine shows here: the load average around each run
                results[side] = dataclasses.replace(
                    outcome,
                    extra={
                        **outcome.extra,
                        "loadavg_before": load_before,
                        "loadavg_after": _loadavg(),
                    },
                )
                done += 1
                report(f"{side} N={n}: {results[side].display()}")
            cases.append(_case(n, params, {s: results[s] for s in SIDES if s in results}))

    env = Environment(**{**asdict(env), "loadavg_end": _loadavg()})
    return RuntimeBenchResult(
        clients=tuple(clients),
        params=params,
        rounds=rounds,
        warmup=warmup,
        sides=tuple(s for s in SIDES if s in sides),
        method=METHOD.format(warmup=warmup, rounds=rounds),
        target=f"fedwarden (fedavg) seconds per round < {TARGET_RATIO:g} × Flower's",
        environment=env,
        cases=tuple(cases),
        elapsed_seconds=time.monotonic() - started,
    )


# --------------------------------------------------------------------------------------------
# formatting


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def table_rows(result: RuntimeBenchResult) -> list[dict[str, str]]:
    rows = []
    for case in result.cases:

        def cell(side: str, case: CaseResult = case) -> str:
            found = case.sides.get(side)
            return "—" if found is None else found.display()

        rows.append(
            {
                "N": str(case.clients),
                "d": f"{case.params:,}",
                COLUMNS[2]: cell(FLOWER),
                COLUMNS[3]: cell(FEDWARDEN_FEDAVG),
                COLUMNS[4]: cell(FEDWARDEN_RECOMMENDED),
                COLUMNS[5]: _ratio(case.ratio_fedavg),
                COLUMNS[6]: _ratio(case.ratio_recommended),
                COLUMNS[7]: {True: "pass", False: "FAIL", None: "n/a"}[case.passed],
            }
        )
    return rows


def _samples(side: SideResult) -> str:
    if side.status != "ok":
        return side.status
    rounds = ", ".join(f"{s:.2f}" for s in side.round_seconds)
    warm = ", ".join(f"{s:.2f}" for s in side.warmup_seconds) or "none"
    out = f"timed rounds [{rounds}] s; warm-up [{warm}] s"
    if side.all_rounds_seconds is not None:
        out += f"; all rounds {side.all_rounds_seconds:.1f} s"
    if side.startup_seconds is not None:
        out += f"; start-up {side.startup_seconds:.1f} s"
    if side.peak_memory_mb is not None:
        out += f"; peak memory {side.peak_memory_mb / 1024:.1f} GiB"
    before, after = side.extra.get("loadavg_before"), side.extra.get("loadavg_after")
    if before is not None and after is not None:
        out += f"; 1-min load average {before[0]:.1f} before, {after[0]:.1f} after"
    return out


def to_markdown(result: RuntimeBenchResult, command: str | None = None) -> str:
    """The results block of the "Round overhead" section of ``benchmarks/README.md``."""
    env = result.environment
    lines = ["### Results", ""]
    if command:
        lines += ["```console", command, "```", ""]
    lines += [
        f"{result.method}. Target: {result.target}. Security: Flower: "
        f"{_runtime_flower.SECURITY}; fedwarden: {_runtime_fedwarden.SECURITY}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" for _ in COLUMNS) + "|",
    ]
    for row in table_rows(result):
        lines.append("| " + " | ".join(row[c] for c in COLUMNS) + " |")
    lines += ["", "Every deployment:", ""]
    for case in result.cases:
        for side in case.sides.values():
            text = _samples(side)
            if side.status in ("pending", "failed") and side.detail:
                # the first line says why; where the logs were kept is in the JSON
                text += ": " + re.sub(r" \(logs kept in [^)]*\)", "", side.detail.splitlines()[0])
            lines.append(f"- N={case.clients}, {side.side}: {text}")
    lines += [
        "",
        f"Environment: {env.cpu}, {env.cpus_usable or env.cpu_count} usable CPUs, "
        f"{env.memory_gb} GiB RAM, {env.platform}, Python {env.python}, flwr {env.flwr}, "
        f"numpy {env.numpy}, grpcio {env.grpcio}, cryptography {env.cryptography}, "
        f"fedwarden {env.fedwarden}; load average (1, 5, 15 min) {_load(env.loadavg_start)} "
        f"at the start, {_load(env.loadavg_end)} at the end; {env.started_at}; "
        f"{result.elapsed_seconds:.0f} s in all.",
        "",
    ]
    return "\n".join(lines)


def _load(value: tuple[float, float, float] | None) -> str:
    return "unknown" if value is None else "/".join(f"{v:.1f}" for v in value)
