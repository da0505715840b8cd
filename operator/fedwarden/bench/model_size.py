"""Model size: an app of ``d`` float32 parameters (25M by default, 100 MB) trained by ``N``
clients (10) over fedwarden's real runtime; round time and the aggregator's peak memory
(issue 12, item 7).

* **The runtime**: ``fedwarden aggregator --app`` and ``N`` ``fedwarden client --app``
  processes on 127.0.0.1, mutual TLS and signed updates, a checkpoint per round, running
  :mod:`fedwarden.bench.synthetic_app` (a NumPyClient of ``d`` parameters that returns them
  plus a shared direction and its own noise, no training), once with the recommended pipeline
  and once with plain FedAvg as the baseline of the same run
  (:func:`fedwarden.bench._runtime_fedwarden.run_fedwarden`). The aggregator's peak resident
  size is the kernel's high-water mark of that process (``VmHWM``), not a sample.
* **The pipeline alone**, in this process on the same kind of ``(N, d)`` float32 matrix: the
  time and the memory (``tracemalloc``, which sees numpy's allocations) that
  :meth:`fedwarden.pipeline.round.Pipeline.run_round` takes above its input, and
  ``updates.mean(0)`` as the floor of anything that reads every coordinate. With the matrix
  itself (``N · d · 4`` bytes, where the aggregator receives the updates) this says what
  the aggregator's memory is made of.
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedwarden.bench import _runtime_fedwarden, synthetic_app
from fedwarden.bench._processes import DeploymentError, terminate_on_sigterm
from fedwarden.bench.runtime import Environment, describe_environment, format_seconds

__all__ = [
    "PIPELINES",
    "InProcessResult",
    "ModelSizeResult",
    "RuntimeResult",
    "measure_in_process",
    "run",
    "to_markdown",
]

PIPELINES: tuple[str, ...] = ("recommended", "fedavg")
APP = "fedwarden.bench.synthetic_app:client_fn"
MIB = float(1 << 20)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RuntimeResult:
    """One deployment: the aggregator and the clients with one pipeline."""

    pipeline: str
    status: str
    """``ok`` or ``failed`` (``detail`` says why)."""
    seconds_per_round: float | None = None
    round_seconds: tuple[float, ...] = ()
    warmup_seconds: tuple[float, ...] = ()
    aggregator_peak_rss_mb: float | None = None
    all_processes_peak_mb: float | None = None
    """Sum of the PSS of the aggregator and the clients, sampled every 5 s."""
    startup_seconds: float | None = None
    description: str = ""
    detail: str = ""


@dataclass(frozen=True)
class InProcessResult:
    """One call on an ``(N, d)`` float32 matrix in this process."""

    name: str
    seconds: float
    peak_extra_mb: float
    """Memory allocated during the call above its input (output included)."""


@dataclass(frozen=True)
class ModelSizeResult:
    clients: int
    params: int
    rounds: int
    warmup: int
    matrix_mb: float
    """``N · d · 4`` bytes: the round's updates as the aggregator holds them."""
    model_mb: float
    runtime: dict[str, RuntimeResult]
    in_process: tuple[InProcessResult, ...]
    method: str
    environment: Environment
    elapsed_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


METHOD = (
    "fedwarden aggregator --app {app} --app-config params={params} and {clients} fedwarden "
    "client --app processes on 127.0.0.1 (mutual TLS, signed updates, a checkpoint per "
    "round), every client in every round; {warmup} untimed warm-up round(s), then {rounds} "
    "timed; s/round = the median of the timed rounds as the aggregator timed them (from "
    "opening the round to the new global model). Aggregator peak RSS = the kernel's VmHWM of "
    "the aggregator process"
)


def _synthetic_matrix(clients: int, params: int, round: int) -> np.ndarray[Any, Any]:
    """The ``(clients, params)`` updates the synthetic app's clients send in ``round``."""
    matrix = np.zeros((clients, params), dtype=np.float32)
    for index in range(clients):
        row = synthetic_app.SyntheticClient(params, index).fit(
            [matrix[index]], {"server_round": round}
        )[0][0]
        matrix[index] = row
    return matrix


def _measured(name: str, call: Callable[[], object]) -> InProcessResult:
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return InProcessResult(name, seconds, peak / MIB)


def measure_in_process(
    clients: int, params: int, pipelines: Sequence[str] = PIPELINES
) -> tuple[InProcessResult, ...]:
    """``mean(0)`` and each pipeline's second round (the first gives the free-rider tests a
    history, as in the runtime) on the synthetic app's updates."""
    from fedwarden.pipeline.round import Pipeline, PipelineConfig

    configs = {"recommended": PipelineConfig.recommended, "fedavg": PipelineConfig.plain_fedavg}
    ids = [f"client-{i:03d}" for i in range(clients)]
    first = _synthetic_matrix(clients, params, 1)
    pipes = {name: Pipeline(configs[name](), dim=params, population=clients) for name in pipelines}
    for pipe in pipes.values():
        pipe.run_round(first, ids)
    del first
    second = _synthetic_matrix(clients, params, 2)
    results = [_measured("updates.mean(0)", lambda: second.mean(0))]
    for name, pipe in pipes.items():
        results.append(
            _measured(
                f"Pipeline.run_round ({name})", functools.partial(pipe.run_round, second, ids)
            )
        )
    return tuple(results)


def _runtime(
    pipeline: str,
    clients: int,
    params: int,
    rounds: int,
    warmup: int,
    timeout: float,
    keep_logs: bool,
    say: Progress,
) -> RuntimeResult:
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
            client_app=APP,
        )
    except DeploymentError as exc:
        return RuntimeResult(pipeline, "failed", detail=str(exc))
    return RuntimeResult(
        pipeline,
        "ok",
        seconds_per_round=statistics.median(res.round_seconds),
        round_seconds=tuple(res.round_seconds),
        warmup_seconds=tuple(res.warmup_seconds),
        aggregator_peak_rss_mb=res.aggregator_peak_rss_mb,
        all_processes_peak_mb=res.peak_memory_mb,
        startup_seconds=res.startup_seconds,
        description=res.pipeline,
        detail=res.detail,
    )


def run(
    clients: int = 10,
    params: int = 25_000_000,
    rounds: int = 3,
    warmup: int = 1,
    pipelines: Sequence[str] = PIPELINES,
    timeout: float = 3600.0,
    keep_logs: bool = False,
    in_process: bool = True,
    on_progress: Progress | None = None,
) -> ModelSizeResult:
    """The in-process measurements (unless ``in_process`` is false), then one deployment per
    pipeline, one at a time. A deployment that fails is reported with its cause."""
    if clients < 1 or params < 1 or rounds < 1 or warmup < 0:
        raise ValueError("clients, params and rounds must be >= 1, warmup >= 0")
    unknown = [p for p in pipelines if p not in PIPELINES]
    if unknown or not pipelines:
        raise ValueError(f"unknown pipeline {unknown}; choose from {', '.join(PIPELINES)}")
    say = on_progress or (lambda _msg: None)
    env = describe_environment()
    started = time.monotonic()
    measured: tuple[InProcessResult, ...] = ()
    if in_process:
        say(f"in process: the pipelines on a {clients} × {params:,} float32 matrix")
        measured = measure_in_process(clients, params, pipelines)
        gc.collect()
    results: dict[str, RuntimeResult] = {}
    with terminate_on_sigterm():
        for pipeline in pipelines:
            results[pipeline] = _runtime(
                pipeline, clients, params, rounds, warmup, timeout, keep_logs, say
            )
    return ModelSizeResult(
        clients=clients,
        params=params,
        rounds=rounds,
        warmup=warmup,
        matrix_mb=clients * params * 4 / MIB,
        model_mb=params * 4 / MIB,
        runtime=results,
        in_process=measured,
        method=METHOD.format(app=APP, params=params, clients=clients, warmup=warmup, rounds=rounds),
        environment=env,
        elapsed_seconds=time.monotonic() - started,
    )


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MiB"


def to_markdown(result: ModelSizeResult, command: str | None = None) -> str:
    """The results block of ``benchmarks/model-size.md``."""
    env = result.environment
    lines = ["## Results", ""]
    if command:
        lines += ["```console", command, "```", ""]
    lines += [
        f"{result.method}. N = {result.clients}, d = {result.params:,} "
        f"(a model of {result.model_mb:,.0f} MiB; the round's updates, N · d · 4 bytes, are "
        f"{result.matrix_mb:,.0f} MiB).",
        "",
        "| pipeline | s/round | timed rounds | aggregator peak RSS | ÷ N · d · 4 | "
        "all processes' peak (PSS) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, side in result.runtime.items():
        if side.status != "ok":
            lines.append(f"| {name} | failed | | | | |")
            continue
        assert side.seconds_per_round is not None
        ratio = (
            "—"
            if side.aggregator_peak_rss_mb is None
            else f"{side.aggregator_peak_rss_mb / result.matrix_mb:.2f}"
        )
        rounds = ", ".join(f"{s:.1f}" for s in side.round_seconds)
        lines.append(
            f"| {name} | {format_seconds(side.seconds_per_round)} | {rounds} s | "
            f"{_mb(side.aggregator_peak_rss_mb)} | {ratio} | {_mb(side.all_processes_peak_mb)} |"
        )
    if result.in_process:
        lines += [
            "",
            f"In one process, on a {result.clients} × {result.params:,} float32 matrix of the "
            "same updates (second round):",
            "",
            "| call | seconds | memory above its input |",
            "|---|---:|---:|",
        ]
        for call in result.in_process:
            lines.append(
                f"| `{call.name}` | {format_seconds(call.seconds)} | {_mb(call.peak_extra_mb)} |"
            )
    failed = [side for side in result.runtime.values() if side.status != "ok"]
    if failed:
        lines.append("")
        lines += [f"- {side.pipeline}: failed: {side.detail.splitlines()[0]}" for side in failed]
    lines += [
        "",
        f"Environment: {env.cpu}, {env.cpus_usable or env.cpu_count} usable CPUs, "
        f"{env.memory_gb} GiB RAM, Python {env.python}, numpy {env.numpy}, grpcio "
        f"{env.grpcio}, fedwarden {env.fedwarden}; load average (1, 5, 15 min) "
        + _load(env.loadavg_start)
        + f" at the start; {env.started_at}; {result.elapsed_seconds:.0f} s in all.",
        "",
    ]
    return "\n".join(lines)


def _load(value: tuple[float, float, float] | None) -> str:
    return "unknown" if value is None else "/".join(f"{v:.1f}" for v in value)
