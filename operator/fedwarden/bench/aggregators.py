"""Benchmark of fedwarden's aggregators against Flower 1.42's, in one run, on the same matrices.

For every cohort size ``n`` and dimension ``d`` one float32 matrix is drawn (fixed seed) and every
aggregator is timed on it three ways:

* **ours**: ``fedwarden.pipeline.aggregators.get(name, **params)(updates)``;
* **Flower**: the fastest Flower 1.42 function with the same definition (see
  :mod:`fedwarden.bench._flower`), given the same matrix in the form it takes;
* **floor**: ``updates.mean(0)`` on the same matrix, a memory-bound lower bound.

Times are medians over adaptive repetitions (at least ``repeat``, more for fast cases, at most
``max_seconds_per_case`` per implementation and case: a call that does not finish within the
cap is interrupted and reported as "> cap"). Peak extra memory of ours is measured with
:mod:`tracemalloc`, which sees numpy's allocations, in a separate untimed call. Outputs of ours
and Flower's are compared wherever the definitions coincide.

This module is pure (no printing, no files): :func:`run` returns dataclasses, and
:func:`to_markdown` / :func:`table_rows` format them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import math
import os
import platform
import signal
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedwarden.bench import _flower
from fedwarden.bench._flower import FlowerBaseline, FlowerInputs, FlowerNotInstalledError
from fedwarden.pipeline import aggregators as registry

__all__ = [
    "AGGREGATORS",
    "TARGETS",
    "Agreement",
    "BaselineResult",
    "BenchmarkResult",
    "CaseResult",
    "FlowerNotInstalledError",
    "TargetCheck",
    "Timing",
    "byzantine_count",
    "make_updates",
    "params_for",
    "run",
    "table_rows",
    "to_markdown",
]

FloatArray = npt.NDArray[np.floating[Any]]
Aggregate = Callable[..., Any]
Factory = Callable[..., Aggregate]

#: what the benchmark times: every rule of the pipeline's registry
AGGREGATORS: tuple[str, ...] = registry.names()
#: the rules the floor target covers: all but block-wise DnC (the recommendation's rule), which
#: has no Flower counterpart and runs d / block_size eigen-decompositions (docs/aggregators.md)
FLOOR_TARGET_AGGREGATORS: tuple[str, ...] = tuple(n for n in AGGREGATORS if n != "block-dnc")

TARGET_N = 50
TARGET_D = 1_000_000
SPEEDUP_TARGETS: dict[str, float] = {
    "krum": 5.0,
    "median": 5.0,
    "trimmed-mean": 5.0,
    "bulyan": 20.0,
}
FLOOR_TARGET = 20.0
TARGETS = (
    f"at n={TARGET_N}, d={TARGET_D}: "
    + ", ".join(f"{k} ≥ {v:g}× faster than Flower" for k, v in SPEEDUP_TARGETS.items())
    + f"; every aggregator but block-dnc within {FLOOR_TARGET:g}× of updates.mean(0)"
)

# adaptive repetitions: keep going until this much time is spent (fast cases), at most this often
_TARGET_SECONDS = 0.5
_MAX_REPEATS = 25
_FLOOR_MIN_REPEATS = 5


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class Timing:
    """Wall time of one implementation on one case."""

    seconds: float | None
    """Median over the completed repetitions; ``None`` if not even one finished within the cap."""
    repeats: int
    timed_out: bool
    """The cap interrupted a call (if ``seconds`` is set, earlier repetitions did finish)."""
    cap: float
    samples: tuple[float, ...] = ()

    def display(self) -> str:
        if self.seconds is None:
            return f"> {self.cap:g} s" if self.timed_out else "—"
        return format_seconds(self.seconds)


@dataclass(frozen=True)
class Agreement:
    """Whether ours and Flower's outputs agree, where the definitions coincide."""

    checked: bool
    agree: bool | None
    detail: str
    max_abs_diff: float | None = None
    differing: int | None = None
    """How many coordinates are not close (rtol 1e-5, atol 1e-5 · max(1, max |Flower|))."""

    def display(self) -> str:
        if not self.checked or self.agree is None:
            return self.detail
        return ("ok: " if self.agree else "WARN: ") + self.detail


@dataclass(frozen=True)
class BaselineResult:
    """One Flower function on one case."""

    short: str
    function: str
    same_definition: bool
    note: str
    timing: Timing
    agreement: Agreement
    speedup: float | None
    """Flower's time / ours (a lower bound if Flower timed out)."""
    speedup_is_lower_bound: bool


@dataclass(frozen=True)
class TargetCheck:
    aggregator: str
    n: int
    d: int
    metric: str
    """``"speedup"`` (Flower / ours, must be ≥ threshold) or ``"over_floor"`` (ours / mean, ≤)."""
    threshold: float
    value: float | None
    passed: bool | None
    """``None`` when it could not be measured (e.g. both sides timed out)."""
    detail: str


@dataclass(frozen=True)
class CaseResult:
    aggregator: str
    n: int
    d: int
    params: dict[str, Any]
    ours: Timing
    error: str | None
    """Set when ours refused the case (``ValueError``) or crashed; timings are then empty."""
    peak_extra_mb: float | None
    """Peak memory allocated during one call of ours (MB = 10⁶ bytes), above the input."""
    floor: Timing
    flower: BaselineResult | None
    """The baseline: the fastest Flower function with the same definition, if Flower has one."""
    flower_others: tuple[BaselineResult, ...]
    """The other Flower functions measured (slower ones, or ones with a different definition)."""
    over_floor: float | None
    """ours / mean(0)."""
    background_cpus: float | None = None
    """CPUs used on average by other processes (and the hypervisor's steal) during this case."""
    targets: tuple[TargetCheck, ...] = ()

    @property
    def speedup(self) -> float | None:
        return None if self.flower is None else self.flower.speedup

    @property
    def targets_passed(self) -> bool | None:
        if not self.targets:
            return None
        outcomes = [t.passed for t in self.targets]
        if any(p is False for p in outcomes):
            return False
        if any(p is None for p in outcomes):
            return None
        return True


@dataclass(frozen=True)
class Environment:
    started_at: str
    python: str
    platform: str
    cpu: str
    cpu_count: int | None
    cpus_usable: int | None
    numpy: str
    blas: str
    threadpools: list[dict[str, Any]]
    flwr: str
    thread_env: dict[str, str]
    loadavg_start: tuple[float, float, float] | None
    loadavg_end: tuple[float, float, float] | None = None
    background_cpus: float | None = None
    """CPUs used on average by other processes (and steal) during the whole run (Linux only)."""


@dataclass(frozen=True)
class BenchmarkResult:
    clients: tuple[int, ...]
    dims: tuple[int, ...]
    aggregators: tuple[str, ...]
    repeat: int
    max_seconds_per_case: float
    seed: int
    inputs: str
    """How the matrices were drawn."""
    f_rule: str
    environment: Environment
    cases: tuple[CaseResult, ...]
    targets: tuple[TargetCheck, ...]
    elapsed_seconds: float
    schema: int = 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        out["targets_statement"] = TARGETS
        plain: dict[str, Any] = _plain(out)
        return plain


def _plain(value: Any) -> Any:
    """Make a value JSON-ready: tuples to lists, numpy scalars to Python, non-finite to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------
# inputs and parameters


def byzantine_count(n: int) -> int:
    """The assumed number of Byzantine clients: f = ⌊(n − 3) / 4⌋, the largest Bulyan allows."""
    return max(0, (n - 3) // 4)


F_RULE = "f = ⌊(n − 3)/4⌋ (the largest f Bulyan allows: n ≥ 4f + 3)"


def params_for(name: str, n: int, d: int) -> dict[str, Any]:
    """The parameters given to ours for aggregator ``name`` at cohort size ``n`` and dimension
    ``d`` (Flower gets the same f, trim fraction and m). Everything not listed is the default."""
    f = byzantine_count(n)
    if name in ("krum", "bulyan", "geometric-median"):
        return {"f": f}
    if name == "centered-clip":
        # tau on the scale of the honest spread: ‖x_i − μ‖ ≈ √d for the inputs of make_updates
        return {"f": f, "tau": round(math.sqrt(d), 3)}
    if name == "multi-krum":
        return {"f": f, "m": n - f}
    if name == "trimmed-mean":
        # f per side; Flower trims int(beta * n) per side, so make sure that is exactly f
        beta = f / n
        if int(beta * n) != f:
            beta = (f + 0.5) / n
        return {"beta": beta}
    return {}


PARAMS_RULE = (
    "krum, bulyan, geometric-median: f; multi-krum: f, m = n − f; trimmed-mean: beta = f/n per "
    "side; centered-clip: f, tau = √d; fedavg and median: none; everything else the default"
)


def make_updates(
    n: int, d: int, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """The cohort: ``n`` float32 updates of dimension ``d``, drawn with ``seed``.

    Honest rows are ``μ + N(0, 1)`` with a shared direction ``μ ~ N(0, 1)``; ``f`` rows (at least
    one), at random positions, are outliers ``−3μ + 2·N(0, 1)`` so that selection is not trivial.
    Also returns ``num_examples`` (uniform in [10, 1000), used by weighted FedAvg) and the indices
    of the outliers.
    """
    rng = np.random.default_rng([seed, n, d])
    mu = rng.standard_normal(d, dtype=np.float32)
    updates = rng.standard_normal((n, d), dtype=np.float32)
    k = min(n - 1, max(1, byzantine_count(n)))
    outliers = np.sort(rng.choice(n, size=k, replace=False))
    updates[outliers] *= np.float32(2.0)
    mask = np.ones(n, dtype=bool)
    mask[outliers] = False
    updates[mask] += mu
    updates[outliers] -= np.float32(3.0) * mu
    num_examples = rng.integers(10, 1000, size=n)
    return updates, num_examples, outliers


INPUTS = (
    "float32, numpy default_rng([seed, n, d]); honest rows μ + N(0,1) with a shared μ ~ N(0,1); "
    "max(1, f) outlier rows at random positions −3μ + 2·N(0,1); num_examples ~ U[10, 1000) "
    "(weighted FedAvg only)"
)


# --------------------------------------------------------------------------------------------
# timing


class _CaseTimeoutError(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt the block with :class:`_CaseTimeoutError` after ``seconds`` (SIGALRM; only in the
    main thread of a Unix process, elsewhere the cap is checked between repetitions only)."""
    usable = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and seconds > 0
    )
    if not usable:
        yield
        return
    armed = [True]

    def on_alarm(signum: int, frame: Any) -> None:
        if armed[0]:
            raise _CaseTimeoutError

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _time(call: Callable[[], Any], *, min_repeats: int, cap: float) -> tuple[Timing, Any]:
    """Time ``call`` adaptively; return the timing and the output of the first call."""
    samples: list[float] = []
    first: Any = None
    timed_out = False
    start = time.perf_counter()
    try:
        with _deadline(cap):
            while True:
                t0 = time.perf_counter()
                out = call()
                samples.append(time.perf_counter() - t0)
                if len(samples) == 1:
                    first = out
                del out
                spent = time.perf_counter() - start
                if len(samples) >= _MAX_REPEATS:
                    break
                if len(samples) >= min_repeats and spent >= _TARGET_SECONDS:
                    break
                if spent + samples[-1] > cap:  # the next one would not finish within the cap
                    break
    except _CaseTimeoutError:
        timed_out = True
    seconds = statistics.median(samples) if samples else None
    return Timing(seconds, len(samples), timed_out, cap, tuple(samples)), first


def _peak_memory(call: Callable[[], Any], cap: float) -> tuple[float | None, Any]:
    """Peak bytes allocated (and still traced) during one call, in MB, and its output."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with _deadline(cap):
            out = call()
        _, peak = tracemalloc.get_traced_memory()
    except _CaseTimeoutError:
        return None, None
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(0, peak - base) / 1e6, out


# --------------------------------------------------------------------------------------------
# agreement


def _row_index(updates: FloatArray, vector: FloatArray) -> tuple[int, bool]:
    """The row of ``updates`` equal to ``vector`` (exact), else the nearest row (False)."""
    for i, row in enumerate(updates):
        if np.array_equal(row, vector):
            return i, True
    dist = [float(np.linalg.norm(row.astype(np.float64) - vector)) for row in updates]
    return int(np.argmin(dist)), False


def _agreement(
    name: str,
    updates: FloatArray,
    ours: Any,
    flower_out: FloatArray | None,
    baseline: FlowerBaseline,
) -> Agreement:
    if flower_out is None:
        return Agreement(False, None, "n/a (Flower timed out)")
    ours_arr = np.asarray(ours, dtype=np.float64).ravel()
    theirs = np.asarray(flower_out, dtype=np.float64).ravel()
    if ours_arr.shape != theirs.shape:
        return Agreement(True, False, f"shapes differ: {ours_arr.shape} vs {theirs.shape}")
    diff = float(np.max(np.abs(ours_arr - theirs))) if ours_arr.size else 0.0
    scale = max(1.0, float(np.max(np.abs(theirs))) if theirs.size else 1.0)
    near = np.isclose(ours_arr, theirs, rtol=1e-5, atol=1e-5 * scale)
    differing = int(near.size - np.count_nonzero(near))
    close = differing == 0
    if not baseline.same_definition:
        return Agreement(False, None, f"different rule (max |Δ| {diff:.2g})", diff)
    if name == "krum":
        i, exact_i = _row_index(updates, np.asarray(ours))
        j, exact_j = _row_index(updates, np.asarray(flower_out))
        mark = "" if exact_i and exact_j else " (nearest row)"
        if i == j:
            return Agreement(True, True, f"same index {i}{mark}", diff)
        return Agreement(True, False, f"ours picked {i}, Flower {j}{mark}", diff)
    if close:
        return Agreement(True, True, f"max |Δ| {diff:.2g}", diff, 0)
    return Agreement(
        True,
        False,
        f"{differing} of {near.size} coordinates differ, max |Δ| {diff:.3g}",
        diff,
        differing,
    )


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class _Progress:
    total: int
    done: int = 0
    callback: Callable[[int, int, str], None] | None = None

    def step(self, label: str) -> None:
        if self.callback is not None:
            self.callback(self.done, self.total, label)

    def advance(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total, "")


def _check_sizes(kind: str, values: Sequence[int], minimum: int) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if not out:
        raise ValueError(f"{kind}: give at least one value")
    bad = [v for v in out if v < minimum]
    if bad:
        raise ValueError(f"{kind} must be integers ≥ {minimum}, got {bad}")
    return out


def check_aggregators(names: Sequence[str]) -> tuple[str, ...]:
    out = tuple(names)
    if not out:
        raise ValueError(f"give at least one aggregator; choose from {', '.join(AGGREGATORS)}")
    unknown = [a for a in out if a not in AGGREGATORS]
    if unknown:
        raise ValueError(
            f"unknown aggregator {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(AGGREGATORS)}"
        )
    return out


def _speedup(flower: Timing, ours: Timing) -> tuple[float | None, bool]:
    if ours.seconds is None or ours.seconds <= 0:
        return None, False
    if flower.seconds is not None:
        return flower.seconds / ours.seconds, False
    if flower.timed_out:
        return flower.cap / ours.seconds, True
    return None, False


def _targets_for(case: CaseResult) -> tuple[TargetCheck, ...]:
    if (case.n, case.d) != (TARGET_N, TARGET_D):
        return ()
    checks: list[TargetCheck] = []
    name = case.aggregator
    if name in SPEEDUP_TARGETS:
        want = SPEEDUP_TARGETS[name]
        value, bound = (
            (None, False)
            if case.flower is None
            else (
                case.flower.speedup,
                case.flower.speedup_is_lower_bound,
            )
        )
        if value is None:
            passed: bool | None = None
            detail = "not measured" if case.error is None else f"ours failed: {case.error}"
        elif bound:
            passed = True if value >= want else None
            detail = f"Flower timed out: speed-up > {value:.1f}× (want ≥ {want:g}×)"
        else:
            passed = value >= want
            detail = f"speed-up {value:.1f}× (want ≥ {want:g}×)"
        checks.append(TargetCheck(name, case.n, case.d, "speedup", want, value, passed, detail))
    if name not in FLOOR_TARGET_AGGREGATORS:
        return tuple(checks)
    value = case.over_floor
    if value is None:
        checks.append(
            TargetCheck(
                name,
                case.n,
                case.d,
                "over_floor",
                FLOOR_TARGET,
                None,
                False if case.error is not None or case.ours.timed_out else None,
                "ours did not finish" if case.error is None else f"ours failed: {case.error}",
            )
        )
    else:
        checks.append(
            TargetCheck(
                name,
                case.n,
                case.d,
                "over_floor",
                FLOOR_TARGET,
                value,
                value <= FLOOR_TARGET,
                f"ours / mean(0) = {value:.1f}× (want ≤ {FLOOR_TARGET:g}×)",
            )
        )
    return tuple(checks)


def _environment(flwr_version: str) -> Environment:
    blas = "unknown"
    with contextlib.suppress(Exception):
        cfg: Any = np.show_config(mode="dicts")
        info = cfg["Build Dependencies"]["blas"]
        blas = f"{info.get('name')} {info.get('version')}"
        if info.get("openblas configuration"):
            blas += f" ({info['openblas configuration']})"
    pools: list[dict[str, Any]] = []
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_info

        keep = ("internal_api", "version", "num_threads", "threading_layer", "architecture")
        pools = [{k: p.get(k) for k in keep} for p in threadpool_info()]
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        usable = len(os.sched_getaffinity(0))
    thread_vars = (
        "OPENBLAS_CORETYPE",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    )
    return Environment(
        started_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=cpu,
        cpu_count=os.cpu_count(),
        cpus_usable=usable,
        numpy=np.__version__,
        blas=blas,
        threadpools=pools,
        flwr=flwr_version,
        thread_env={k: os.environ[k] for k in thread_vars if k in os.environ},
        loadavg_start=_loadavg(),
    )


class _CpuMeter:
    """How much CPU other processes took since creation: the machine's busy time (``/proc/stat``,
    steal included) minus this process's own CPU time, per second of wall time."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                ticks = [int(v) for v in fh.readline().split()[1:9]]
            per_second = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, AttributeError):
            return None
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        own = os.times()
        return time.monotonic(), (sum(ticks) - idle) / per_second, own.user + own.system

    def others(self) -> float | None:
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        wall = end[0] - self._start[0]
        other = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return round(max(0.0, other / wall), 2)


def _loadavg() -> tuple[float, float, float] | None:
    try:
        a, b, c = os.getloadavg()
    except (AttributeError, OSError):
        return None
    return (round(a, 2), round(b, 2), round(c, 2))


def run(
    clients: Sequence[int] = (10, 50, 100),
    dims: Sequence[int] = (100_000, 1_000_000),
    aggregators: Sequence[str] = AGGREGATORS,
    *,
    repeat: int = 3,
    max_seconds_per_case: float = 60.0,
    seed: int = 0,
    factory: Factory | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> BenchmarkResult:
    """Run the benchmark; see the module docstring.

    ``factory`` defaults to :func:`fedwarden.pipeline.aggregators.get`. ``on_progress(done,
    total, label)`` is called before each measurement (with its label) and after it (empty label).
    Raises ``ValueError`` for bad arguments and :class:`FlowerNotInstalledError` without Flower.
    """
    clients = _check_sizes("clients", clients, 3)
    dims = _check_sizes("dims", dims, 1)
    names = check_aggregators(aggregators)
    if repeat < 1:
        raise ValueError(f"repeat must be ≥ 1, got {repeat}")
    if not max_seconds_per_case > 0:
        raise ValueError(f"max seconds per case must be > 0, got {max_seconds_per_case}")
    flwr_version = _flower.flower_version()
    get: Factory = factory if factory is not None else registry.get
    env = _environment(flwr_version)

    plans = {
        (name, n): _flower.baselines(name, params_for(name, n, 0), n)
        for name in names
        for n in clients
    }
    per_cohort = sum(1 + len(plans[(name, n)]) for name in names for n in clients)
    progress = _Progress(total=len(dims) * (len(clients) + per_cohort), callback=on_progress)

    start = time.perf_counter()
    run_meter = _CpuMeter()
    cases: list[CaseResult] = []
    for d in dims:
        for n in clients:
            progress.step(f"n={n} d={d}: drawing the updates and timing mean(0)")
            updates, num_examples, _ = make_updates(n, d, seed)
            floor, _ = _time(
                functools.partial(updates.mean, 0),
                min_repeats=max(repeat, _FLOOR_MIN_REPEATS),
                cap=max_seconds_per_case,
            )
            progress.advance()
            flower_inputs = FlowerInputs(updates, num_examples)
            for name in names:
                case = _run_case(
                    name,
                    n,
                    d,
                    updates,
                    num_examples,
                    floor,
                    plans[(name, n)],
                    flower_inputs,
                    get=get,
                    repeat=repeat,
                    cap=max_seconds_per_case,
                    progress=progress,
                )
                cases.append(case)
            del flower_inputs, updates

    targets = tuple(t for c in cases for t in c.targets)
    env_end = dataclasses.replace(env, loadavg_end=_loadavg(), background_cpus=run_meter.others())
    return BenchmarkResult(
        clients=clients,
        dims=dims,
        aggregators=names,
        repeat=repeat,
        max_seconds_per_case=max_seconds_per_case,
        seed=seed,
        inputs=INPUTS,
        f_rule=F_RULE,
        environment=env_end,
        cases=tuple(cases),
        targets=targets,
        elapsed_seconds=round(time.perf_counter() - start, 1),
    )


def _run_case(
    name: str,
    n: int,
    d: int,
    updates: npt.NDArray[np.float32],
    num_examples: npt.NDArray[np.int64],
    floor: Timing,
    plan: Sequence[FlowerBaseline],
    flower_inputs: FlowerInputs,
    *,
    get: Factory,
    repeat: int,
    cap: float,
    progress: _Progress,
) -> CaseResult:
    params = params_for(name, n, d)
    label = f"n={n} d={d} {name}"
    meter = _CpuMeter()
    progress.step(f"{label}: ours")
    error: str | None = None
    ours_timing = Timing(None, 0, False, cap)
    peak: float | None = None
    ours_out: Any = None
    try:
        agg = get(name, **params)
        weights = num_examples.astype(np.float64) if name == "fedavg" else None

        def call() -> Any:
            return agg(updates) if weights is None else agg(updates, weights)

        ours_timing, ours_out = _time(call, min_repeats=repeat, cap=cap)
        if ours_timing.seconds is not None:
            # once more, untimed, under tracemalloc (which slows allocation-heavy code)
            peak, _ = _peak_memory(call, cap)
    except ValueError as exc:
        error = f"refused: {exc}"
    except Exception as exc:  # a crash of ours is a result to report, not a reason to stop
        error = f"{type(exc).__name__}: {exc}"
    progress.advance()

    measured: list[BaselineResult] = []
    for baseline in plan:
        progress.step(f"{label}: Flower {baseline.short}")
        call_flower = baseline.make_call(flower_inputs)
        timing, out = _time(call_flower, min_repeats=repeat, cap=cap)
        flower_out = None if timing.seconds is None else baseline.to_array(out)
        if ours_out is None:
            agreement = Agreement(False, None, "n/a (ours did not run)")
        else:
            agreement = _agreement(name, updates, ours_out, flower_out, baseline)
        speedup, bound = _speedup(timing, ours_timing)
        measured.append(
            BaselineResult(
                short=baseline.short,
                function=baseline.function,
                same_definition=baseline.same_definition,
                note=baseline.note,
                timing=timing,
                agreement=agreement,
                speedup=speedup,
                speedup_is_lower_bound=bound,
            )
        )
        del out, flower_out
        progress.advance()

    primary = _fastest([b for b in measured if b.same_definition])
    others = tuple(b for b in measured if b is not primary)
    over_floor = (
        ours_timing.seconds / floor.seconds
        if ours_timing.seconds is not None and floor.seconds
        else None
    )
    case = CaseResult(
        aggregator=name,
        n=n,
        d=d,
        params=params,
        ours=ours_timing,
        error=error,
        peak_extra_mb=None if peak is None else round(peak, 3),
        floor=floor,
        flower=primary,
        flower_others=others,
        over_floor=over_floor,
        background_cpus=meter.others(),
    )
    return dataclasses.replace(case, targets=_targets_for(case))


def _fastest(candidates: Sequence[BaselineResult]) -> BaselineResult | None:
    if not candidates:
        return None

    def key(b: BaselineResult) -> float:
        t = b.timing
        if t.seconds is not None:
            return t.seconds
        return t.cap * 1e6 if t.timed_out else math.inf

    return min(candidates, key=key)


# --------------------------------------------------------------------------------------------
# formatting


def format_seconds(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def format_dim(d: int) -> str:
    if d >= 1_000_000 and d % 1_000_000 == 0:
        return f"{d // 1_000_000}M"
    if d >= 1000 and d % 1000 == 0:
        return f"{d // 1000}k"
    return str(d)


COLUMNS: tuple[str, ...] = (
    "aggregator",
    "n",
    "d",
    "ours",
    "Flower",
    "Flower fn",
    "speed-up",
    "mean(0)",
    "ours/mean",
    "peak MB",
    "other CPUs",
    "agreement",
    "target",
)


def _ratio(value: float | None, lower_bound: bool = False) -> str:
    if value is None:
        return "—"
    return f"{'> ' if lower_bound else ''}{value:.1f}×"


def table_rows(result: BenchmarkResult) -> list[dict[str, str]]:
    """One row of display strings per case, keyed by :data:`COLUMNS`."""
    rows = []
    for c in result.cases:
        fl = c.flower
        target = {None: "", True: "pass", False: "FAIL"}[c.targets_passed]
        if c.targets and c.targets_passed is None:
            target = "n/a"
        rows.append(
            {
                "aggregator": c.aggregator,
                "n": str(c.n),
                "d": format_dim(c.d),
                "ours": c.ours.display() if c.error is None else "error",
                "Flower": "—" if fl is None else fl.timing.display(),
                "Flower fn": "—" if fl is None else fl.short,
                "speed-up": "—" if fl is None else _ratio(fl.speedup, fl.speedup_is_lower_bound),
                "mean(0)": c.floor.display(),
                "ours/mean": _ratio(c.over_floor),
                "peak MB": "—" if c.peak_extra_mb is None else f"{c.peak_extra_mb:.1f}",
                "other CPUs": "?" if c.background_cpus is None else f"{c.background_cpus:.2f}",
                "agreement": (
                    c.error
                    if c.error is not None
                    else "no Flower equivalent"
                    if fl is None
                    else fl.agreement.display()
                ),
                "target": target,
            }
        )
    return rows


def other_rows(result: BenchmarkResult) -> list[dict[str, str]]:
    """The Flower functions that were measured but are not the baseline."""
    rows = []
    for c in result.cases:
        for b in c.flower_others:
            rows.append(
                {
                    "aggregator": c.aggregator,
                    "n": str(c.n),
                    "d": format_dim(c.d),
                    "Flower fn": b.short,
                    "same rule": "yes" if b.same_definition else "no",
                    "time": b.timing.display(),
                    "ours": c.ours.display(),
                    "speed-up": _ratio(b.speedup, b.speedup_is_lower_bound),
                    "agreement": b.agreement.display(),
                }
            )
    return rows


def _cpus(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _md_table(rows: list[dict[str, str]], columns: Sequence[str]) -> list[str]:
    right = {
        "n",
        "d",
        "ours",
        "Flower",
        "speed-up",
        "mean(0)",
        "ours/mean",
        "peak MB",
        "other CPUs",
        "time",
    }
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join("---:" if c in right else "---" for c in columns) + "|")
    for r in rows:
        lines.append("| " + " | ".join(r[c].replace("|", "\\|") for c in columns) + " |")
    return lines


def to_markdown(result: BenchmarkResult) -> str:
    """The results as the markdown that goes into ``benchmarks/README.md``."""
    env = result.environment
    lines = [
        "| | |",
        "|---|---|",
        f"| started | {env.started_at} |",
        f"| CPU | {env.cpu}, {env.cpu_count} logical CPUs ({env.cpus_usable} usable) |",
        f"| load average (1, 5, 15 min) | at start {env.loadavg_start}, at end {env.loadavg_end} |",
        f"| other processes | used {_cpus(env.background_cpus)} CPUs on average during the run "
        f"(machine busy time minus this process's, steal included; per case in the table) |",
        f"| Python, platform | {env.python}, {env.platform} |",
        f"| numpy | {env.numpy}, BLAS {env.blas} |",
    ]
    for pool in env.threadpools:
        lines.append(
            f"| thread pool | {pool.get('internal_api')} {pool.get('version')}, "
            f"{pool.get('num_threads')} threads, {pool.get('architecture')} kernels |"
        )
    thread_env = ", ".join(f"{k}={v}" for k, v in env.thread_env.items()) or "none set"
    lines += [
        f"| thread variables | {thread_env} |",
        f"| flwr | {env.flwr} |",
        f"| seed, inputs | {result.seed}; {result.inputs} |",
        f"| f | {result.f_rule} |",
        f"| parameters | {PARAMS_RULE} |",
        f"| repetitions | median of ≥ {result.repeat} (more for fast cases, ≤ "
        f"{result.max_seconds_per_case:g} s per implementation and case) |",
        f"| total time | {result.elapsed_seconds:g} s |",
        "",
    ]
    lines += _md_table(table_rows(result), COLUMNS)
    others = other_rows(result)
    if others:
        lines += ["", "Other Flower functions measured in the same run (not the baseline):", ""]
        lines += _md_table(
            others,
            (
                "aggregator",
                "n",
                "d",
                "Flower fn",
                "same rule",
                "time",
                "ours",
                "speed-up",
                "agreement",
            ),
        )
    lines += ["", f"Targets ({TARGETS}):", ""]
    if result.targets:
        for t in result.targets:
            mark = {True: "pass", False: "**FAIL**", None: "not measurable"}[t.passed]
            lines.append(f"- {t.aggregator}: {t.detail}: {mark}")
    else:
        lines.append(f"- not measured (the run did not include n={TARGET_N}, d={TARGET_D})")
    return "\n".join(lines) + "\n"
