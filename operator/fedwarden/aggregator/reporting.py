"""Status reporting: what the aggregator tells the world about the training, as events.

A :class:`Reporter` receives one call per event; each event is a dataclass with ``to_dict()``.
Implementations here:

- :class:`ConsoleReporter` — one line per round (rich), and the refusals as they happen;
- :class:`JsonlReporter` — one JSON object per line, ``{"event": ..., "time": ..., ...}``,
  flushed and fsynced at each round's end, repaired and resumed after a crash (see
  :meth:`JsonlReporter.resume`);
- :class:`RecordingReporter` — keeps every event in memory (tests, the demo);
- :class:`MultiReporter` — fans out to several.

A Kubernetes reporter (status patches on the FederatedTraining and FLClient resources) comes
with the operator and implements the same interface.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger("fedwarden.aggregator")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Event:
    """Base of every event; ``event`` is its name in the JSON-lines file."""

    event: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, **dataclasses.asdict(self)}


@dataclass
class TrainingStarted(Event):
    event: ClassVar[str] = "training_started"
    training_uid: str
    rounds: int
    num_parameters: int
    resumed_from_round: int
    epsilon: float
    privacy: dict[str, Any]
    sampling: dict[str, Any]
    address: str
    banned: dict[str, str] = field(default_factory=dict)
    """Clients banned before this start (from the checkpoint) -> reason."""


@dataclass
class RoundStarted(Event):
    event: ClassVar[str] = "round_started"
    round: int
    attempt: str
    """The first hex digits of the round token: several attempts at one round (after a crash or
    an abandoned attempt) are told apart by it."""
    sampled: list[str]
    available: int
    deadline_seconds: float


@dataclass
class Rejection(Event):
    """A refusal with a reason code; ``stage`` says who refused (docs/runtime.md)."""

    event: ClassVar[str] = "rejected"
    round: int
    client: str
    stage: str  # "peer" | "update" | "model" | "pipeline"
    reason: str
    message: str


@dataclass
class ClientFlagged(Event):
    """Suspicious behaviour that is refused and worth a human's look (model probing)."""

    event: ClassVar[str] = "flagged"
    round: int
    client: str
    reason: str
    message: str


@dataclass
class RoundAbandoned(Event):
    event: ClassVar[str] = "round_abandoned"
    round: int
    attempt: str
    reason: str


@dataclass
class RoundFinished(Event):
    """A completed round: what the checkpoint holds and the history records, exactly once."""

    event: ClassVar[str] = "round_finished"
    round: int
    epsilon: float
    delta: float | None
    sampled: list[str]
    participants: list[str]
    """Clients whose update passed the transport's checks and entered the pipeline."""
    accepted: list[str]
    """Clients whose update the pipeline aggregated."""
    rejected: dict[str, dict[str, str]]
    """client -> {"stage", "reason", "message"}: the refusal that decided its round."""
    banned: dict[str, str]
    """Clients banned by this round -> the pipeline's reason."""
    skipped: str | None
    metrics: dict[str, float]
    duration_seconds: float
    model_digest: str
    replayed: bool = False
    """True when written again after a restart (the first write was lost with the process)."""
    strikes: dict[str, int] = field(default_factory=dict)
    """Each sampled client's standing strikes after the round (0 when it has none)."""
    scores: dict[str, float] = field(default_factory=dict)
    """Contribution score of the round's assessed clients: the cosine similarity of the update
    to the cohort's robust direction (free-rider detection)."""
    rounds_participated: dict[str, int] = field(default_factory=dict)
    """Each aggregated client's count of rounds whose aggregate included its update, so far."""
    site_epsilon: dict[str, float] = field(default_factory=dict)
    """Record-level DP: each sampled site's largest signed ε so far (its records' guarantee)."""


@dataclass
class TrainingFinished(Event):
    event: ClassVar[str] = "training_finished"
    status: str  # "completed" | "budget-exhausted" | "stopped" | "failed" | "privacy-state-lost"
    message: str
    rounds: int
    epsilon: float
    delta: float | None
    banned: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ModelExported(Event):
    """The global model and its signed provenance were written (``--output-model``)."""

    event: ClassVar[str] = "model_exported"
    round: int
    sha256: str
    """Of ``model.safetensors``: what ``fedwarden model verify`` checks."""
    directory: str


EVENTS: dict[str, type[Event]] = {
    cls.event: cls
    for cls in (
        TrainingStarted,
        RoundStarted,
        Rejection,
        ClientFlagged,
        RoundAbandoned,
        RoundFinished,
        TrainingFinished,
        ModelExported,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """The inverse of ``to_dict`` (unknown keys, such as ``time``, are dropped)."""
    cls = EVENTS[data["event"]]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class RecordedProgress:
    """What a durable record kept apart from the checkpoint (the training's status on the API
    server) says the aggregator processes before this one did."""

    rounds: int
    epsilon: float | None
    where: str
    """Names the record, for messages."""


class Reporter:
    """The interface: one method per event. Each defaults to :meth:`event`, which does nothing.

    A reporter must not raise (a failing reporter is logged and the training goes on) and must
    return quickly: it is called from the aggregator's event loop.
    """

    def training_started(self, event: TrainingStarted) -> None:
        self.event(event)

    def round_started(self, event: RoundStarted) -> None:
        self.event(event)

    def rejected(self, event: Rejection) -> None:
        self.event(event)

    def flagged(self, event: ClientFlagged) -> None:
        self.event(event)

    def round_abandoned(self, event: RoundAbandoned) -> None:
        self.event(event)

    def round_finished(self, event: RoundFinished) -> None:
        self.event(event)

    def training_finished(self, event: TrainingFinished) -> None:
        self.event(event)

    def model_exported(self, event: ModelExported) -> None:
        self.event(event)

    def event(self, event: Event) -> None:
        """Called for every event a subclass does not handle itself."""

    def resume(self, last_round: RoundFinished | None) -> None:
        """Called once at start with the last round of the checkpoint (``None``: a new
        training). A reporter that keeps a history writes it again if it missed it."""

    def recorded_progress(self) -> RecordedProgress | None:
        """The rounds and ε that a record outside the checkpoint shows, or ``None`` when this
        reporter keeps none. Called once at start when there is no checkpoint; unlike the event
        methods it may raise (:class:`OSError`) when its record exists but cannot be read."""
        return None

    def close(self) -> None:
        """Release files; called once at the end."""


_DISPATCH = {
    TrainingStarted: "training_started",
    RoundStarted: "round_started",
    Rejection: "rejected",
    ClientFlagged: "flagged",
    RoundAbandoned: "round_abandoned",
    RoundFinished: "round_finished",
    TrainingFinished: "training_finished",
    ModelExported: "model_exported",
}


def dispatch(reporter: Reporter, event: Event) -> None:
    """Call the reporter's method for ``event``; log (never raise) if the reporter fails."""
    try:
        getattr(reporter, _DISPATCH[type(event)])(event)
    except Exception:
        log.exception("reporter %s failed on %s", type(reporter).__name__, event.event)


class MultiReporter(Reporter):
    def __init__(self, reporters: Iterable[Reporter]) -> None:
        self.reporters = list(reporters)

    def event(self, event: Event) -> None:
        for reporter in self.reporters:
            dispatch(reporter, event)

    def resume(self, last_round: RoundFinished | None) -> None:
        for reporter in self.reporters:
            try:
                reporter.resume(last_round)
            except Exception:
                log.exception("reporter %s failed to resume", type(reporter).__name__)

    def recorded_progress(self) -> RecordedProgress | None:
        records = [r for r in (x.recorded_progress() for x in self.reporters) if r is not None]
        return max(records, key=lambda r: (r.epsilon or 0.0, r.rounds), default=None)

    def close(self) -> None:
        for reporter in self.reporters:
            try:
                reporter.close()
            except Exception:
                log.exception("reporter %s failed to close", type(reporter).__name__)


class RecordingReporter(Reporter):
    """Keeps every event, in order (thread-safe reads with :meth:`snapshot`)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def event(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.snapshot() if isinstance(e, kind)]


class JsonlReporter(Reporter):
    """Appends one JSON object per event to ``path``.

    Opening repairs a file whose last line was cut by a crash (the partial line is dropped), and
    reads which rounds it already records, so that :meth:`resume` can write again the last
    checkpointed round if the process died between the checkpoint and the report.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rounds_recorded: set[int] = set()
        self._repair_and_scan()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open
        self._lock = threading.Lock()

    def _repair_and_scan(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
            log.warning("%s: dropped a partial last line (the process died mid-write)", self.path)
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == RoundFinished.event:
                self.rounds_recorded.add(int(record["round"]))

    def event(self, event: Event) -> None:
        record = {"event": event.event, "time": _now(), **event.to_dict()}
        line = json.dumps(record, sort_keys=False, default=_json_default) + "\n"
        durable = isinstance(event, RoundFinished | TrainingFinished)
        with self._lock:
            self._file.write(line)
            self._file.flush()
            if durable:
                os.fsync(self._file.fileno())
        if isinstance(event, RoundFinished):
            self.rounds_recorded.add(event.round)

    def resume(self, last_round: RoundFinished | None) -> None:
        if last_round is not None and last_round.round not in self.rounds_recorded:
            self.event(dataclasses.replace(last_round, replayed=True))

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Every complete record of a JSON-lines report (a cut last line is ignored)."""
    records: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class ConsoleReporter(Reporter):
    """Human-readable progress on a rich console (stderr by default)."""

    def __init__(self, console: Any | None = None, *, verbose: bool = False) -> None:
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        self.verbose = verbose

    def training_started(self, event: TrainingStarted) -> None:
        resumed = (
            f", resumed after round {event.resumed_from_round} (ε = {event.epsilon:.4g})"
            if event.resumed_from_round
            else ""
        )
        self.console.print(
            f"[bold]aggregator[/] {event.training_uid}: {event.rounds} rounds, "
            f"{event.num_parameters} parameters, listening on {event.address}{resumed}"
        )

    def round_started(self, event: RoundStarted) -> None:
        if self.verbose:
            self.console.print(
                f"round {event.round} ({event.attempt}): {len(event.sampled)} sampled of "
                f"{event.available} available"
            )

    def rejected(self, event: Rejection) -> None:
        self.console.print(
            f"  [yellow]refused[/] {event.client} (round {event.round}, {event.stage}): "
            f"[bold]{event.reason}[/] — {event.message}"
        )

    def flagged(self, event: ClientFlagged) -> None:
        self.console.print(
            f"  [red]flagged[/] {event.client} (round {event.round}): {event.reason} — "
            f"{event.message}"
        )

    def round_abandoned(self, event: RoundAbandoned) -> None:
        self.console.print(f"round {event.round}: attempt abandoned — {event.reason}")

    def round_finished(self, event: RoundFinished) -> None:
        metrics = " ".join(
            f"{k}={v:.4g}" for k, v in event.metrics.items() if k in ("accuracy", "loss")
        )
        banned = f", [red]banned {', '.join(event.banned)}[/]" if event.banned else ""
        skipped = f", skipped: {event.skipped}" if event.skipped else ""
        self.console.print(
            f"round {event.round}: {len(event.accepted)}/{len(event.sampled)} accepted, "
            f"{len(event.rejected)} refused, ε = {event.epsilon:.4g} {metrics}{banned}{skipped}"
        )

    def training_finished(self, event: TrainingFinished) -> None:
        colour = "green" if event.status == "completed" else "yellow"
        self.console.print(
            f"[bold {colour}]training {event.status}[/] after {event.rounds} rounds, "
            f"ε = {event.epsilon:.4g}: {event.message}"
        )


def make_reporter(reporters: Sequence[Reporter]) -> Reporter:
    if len(reporters) == 1:
        return reporters[0]
    return MultiReporter(reporters)
