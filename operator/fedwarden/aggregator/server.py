"""The aggregator: the mTLS gRPC server, the round loop, checkpoints, reports and metrics.

Everything runs on one asyncio event loop (``grpc.aio``): the RPC handlers, the round loop and
the timers. The pipeline, the model evaluation, checkpoint writes and revocations run in worker
threads so that the loop keeps serving. State is only touched from the loop's thread.

A round, as the loop runs it:

1. wait until ``min_available`` clients are available (seen recently, not banned; each ban
   lowers the minimum by one);
2. sample the cohort; open the round under a fresh 16-byte token, with the digest of the
   global model; wake the clients' long polls;
3. serve the model to sampled clients (counted, throttled) and receive their signed updates,
   each checked in the order of docs/runtime.md and written into the round's preallocated
   update matrix; the round closes when every sampled client has a final outcome or at the
   deadline (stragglers are dropped);
4. run the pipeline on the accepted updates (validation, free riders, clipping, robust
   aggregation, DP, accountant); an exhausted privacy budget ends the training, and so does,
   under record-level DP, every site having reported its own budget spent;
5. write the post-round checkpoint atomically (then, with ``--output-model``, export the model
   and its signed provenance: :mod:`fedwarden.aggregator.export`); only then serve the new
   model, revoke the certificates of newly banned clients and report the round.

:class:`Aggregator` is usable as a library object (``start()`` / ``wait()`` / ``stop()`` run it
on a background thread, as the tests and the demo do) and as a process (``run()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from cryptography import x509
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry

from fedwarden.aggregator.checkpoint import (
    Checkpoint,
    CheckpointError,
    PrivacyStateLostError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from fedwarden.aggregator.config import AggregatorConfig, Sampler
from fedwarden.aggregator.export import ModelExporter, ParticipationHistory, provenance_facts
from fedwarden.aggregator.metrics import AggregatorMetrics, HealthServer
from fedwarden.aggregator.reporting import (
    ClientFlagged,
    Event,
    ModelExported,
    Rejection,
    Reporter,
    RoundAbandoned,
    RoundFinished,
    RoundStarted,
    TrainingFinished,
    TrainingStarted,
    dispatch,
    event_from_dict,
)
from fedwarden.aggregator.revocation import LogOnlyRevoker, Revoker
from fedwarden.aggregator.tls import ServerTLS
from fedwarden.pipeline import ParameterLayout
from fedwarden.pipeline.errors import PrivacyBudgetExhaustedError
from fedwarden.pipeline.evaluation import Evaluation, combine_client_evaluations
from fedwarden.pipeline.round import Pipeline, RoundResult, privacy_unit
from fedwarden.pipeline.site_privacy import SiteReport
from fedwarden.pki import (
    CertificateProblem,
    PeerVerifier,
    PKIError,
    TrustBundle,
    certificate_pem,
    identity_from_certificate,
    load_certificate,
)
from fedwarden.wire import (
    REASON_METADATA_KEY,
    REASONS,
    SERVICE,
    Envelope,
    ReloadingServerCredentials,
    TensorAssembler,
    WireError,
    as_wire_array,
    iter_chunks,
    open_envelope,
    pb,
    peer_certificate_pem,
    server_options,
    status_for,
    tensor_digest,
)
from fedwarden.wire.envelope import ROUND_TOKEN_BYTES
from fedwarden.wire.fetch import serve_export

log = logging.getLogger("fedwarden.aggregator")

F32 = npt.NDArray[np.float32]
Evaluator = Callable[[F32], Evaluation | None]

_PEER_PERMISSION = {"revoked", "banned"}

STRIKING_REASONS = frozenset({"bad-signature", "identity-mismatch", "replay", "tampered"})
"""Transport refusals that count as strikes: no honest client sends these by accident."""

FLOODING = "flooding"
"""The flag, and the strike, of a client refused more than ``max_refusals_per_round`` times in
a round."""


@dataclass
class ClientFate:
    """What happened to one client over the training (the demo's final table)."""

    sampled: int = 0
    submitted: int = 0
    """Updates that passed the transport's checks."""
    aggregated: int = 0
    """Updates the pipeline accepted."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Refusals by reason code (every stage)."""
    flagged: dict[str, int] = field(default_factory=dict)
    downloads: int = 0
    banned: str | None = None
    revoked: str | None = None
    last_refusal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClientFate:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class _Submission:
    envelope: Envelope
    row: int


@dataclass
class _Round:
    """The round that is open (or closing)."""

    number: int
    attempt: int
    token: bytes
    sampled: list[str]
    sample_rate: float
    base_model: F32
    base_digest: bytes
    opened: float
    deadline: float
    matrix: F32
    rows: dict[str, int]
    accepted: dict[str, _Submission] = field(default_factory=dict)
    final: set[str] = field(default_factory=set)
    attempts: Counter[str] = field(default_factory=Counter)
    downloads: Counter[str] = field(default_factory=Counter)
    in_flight: set[str] = field(default_factory=set)
    refusals: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    closed: bool = False
    all_final: asyncio.Event = field(default_factory=asyncio.Event)

    def settle(self, client: str) -> None:
        self.final.add(client)
        if self.final >= set(self.sampled):
            self.all_final.set()


class _Refused(Exception):
    """Raised inside a handler after the RPC was aborted with a reason."""


class Aggregator:
    """A federated training's aggregator. See the module docstring.

    Args:
        config: rounds, sampling, timeouts, limits.
        pipeline: the robust-plus-DP pipeline; its ``dim`` is the model's size.
        initial_model: the global model of round 1 (ignored when a checkpoint is resumed).
        tls: the server's certificate and key, the trust bundle and the CRL.
        verifier: authorises peers (default: ``tls.verifier()``).
        listen: ``host:port`` of the gRPC server (port 0 picks one; see :attr:`port`).
        revoker: revokes banned clients' certificates (default: log only).
        reporter: receives the status events.
        evaluator: ``params -> Evaluation`` (or ``None``) run on each new global model. Without
            one, the aggregator asks for **federated evaluation**: sampled clients evaluate the
            global model they download on their own held-out data, and the metrics in their
            signed envelopes are combined robustly
            (:func:`fedwarden.pipeline.evaluation.combine_client_evaluations`) and reported,
            never used to judge a client.
        layout: the named tensors the model stands for, announced to clients (which cut the
            flat vector into their arrays with it); ``None``: unknown, one flat tensor here and
            nothing announced, so clients use their own shapes.
        checkpoint_dir: where the checkpoint lives; ``None`` keeps no checkpoint.
        metrics_address: ``(host, port)`` of the HTTP server for /metrics, /healthz and
            /readyz (port 0 picks one; see :attr:`metrics_port`); ``None`` starts none.
        output_model_dir: where the model and its signed provenance are exported after each
            checkpoint and at the end (:mod:`fedwarden.aggregator.export`); ``None``: nowhere.
    """

    def __init__(
        self,
        config: AggregatorConfig,
        pipeline: Pipeline,
        initial_model: npt.ArrayLike,
        *,
        tls: ServerTLS,
        verifier: PeerVerifier | None = None,
        listen: str = "127.0.0.1:0",
        revoker: Revoker | None = None,
        reporter: Reporter | None = None,
        evaluator: Evaluator | None = None,
        checkpoint_dir: Path | str | None = None,
        metrics_address: tuple[str, int] | None = None,
        registry: CollectorRegistry | None = None,
        output_model_dir: Path | str | None = None,
        layout: ParameterLayout | None = None,
    ) -> None:
        model = as_wire_array(initial_model).astype(np.float32, copy=True)
        if model.size != pipeline.dim:
            raise ValueError(
                f"the initial model has {model.size} parameters, the pipeline expects "
                f"{pipeline.dim}"
            )
        # record-level DP is each site's own: the aggregator's sampling does not enter it
        if pipeline.config.privacy.mode in ("central", "local") and config.sampling != "poisson":
            raise ValueError(
                "differential privacy needs sampling='poisson': the accountant's sample rate "
                "is the probability q of each client being in a round, and a fixed-size sample "
                "of whoever is online has no fixed population"
            )
        self.dim = pipeline.dim
        self.layout = layout if layout is not None else ParameterLayout.single(self.dim)
        if self.layout.size != self.dim:
            raise ValueError(
                f"the model's layout has {self.layout.size} parameters ({self.layout.describe()}), "
                f"the pipeline expects {self.dim}"
            )
        self.exporter = (
            None
            if output_model_dir is None
            else ModelExporter(output_model_dir, self.layout, tls.cert, tls.key)
        )
        self.participation = ParticipationHistory()
        self.max_update_bytes = (
            config.max_update_bytes if config.max_update_bytes is not None else 4 * self.dim
        )
        if self.max_update_bytes < 4 * self.dim:
            raise ValueError(
                f"max_update_bytes ({self.max_update_bytes}) is below the model's size "
                f"({4 * self.dim} bytes): no valid update could be received"
            )
        self.config = config
        self.pipeline = pipeline
        self.tls = tls
        self.verifier = verifier if verifier is not None else tls.verifier()
        self.training = self.verifier.training
        self.training_uid = config.training_uid or self.training.uri
        self.listen = listen
        self.revoker: Revoker = revoker if revoker is not None else LogOnlyRevoker()
        self.reporter = reporter if reporter is not None else Reporter()
        self.evaluator = evaluator
        self.announcement: dict[str, object] = {
            **(config.task or {}),
            "federated_evaluation": evaluator is None,
        }
        if layout is not None:
            self.announcement["layout"] = layout.to_dict()
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.metrics_address = metrics_address
        self.metrics = AggregatorMetrics(registry)
        self.sampler = Sampler(config.sampling, config.fraction, config.min_per_round, config.seed)

        self.model: F32 = model
        self.model_digest = tensor_digest(model)
        self.rounds_done = 0
        self.round: _Round | None = None
        self.finished: TrainingFinished | None = None
        self.result: TrainingFinished | None = None
        self.last_round: RoundFinished | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._fates: dict[str, ClientFate] = {}
        self._banned: dict[str, str] = {}
        self._last_seen: dict[str, float] = {}
        self._certs: dict[str, x509.Certificate] = {}
        self._nonces: dict[int, set[bytes]] = {}
        self._revocations: list[dict[str, Any]] = []
        self._told_done: set[str] = set()
        self._refusals: Counter[str] = Counter()
        """Refusals per client since the last round completed (flood control)."""
        self._attempts: Counter[int] = Counter()
        self._lock = threading.RLock()  # guards _fates for readers on other threads
        self._ready = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._stop_requested: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._server: grpc.aio.Server | None = None
        self._health: HealthServer | None = None
        self._credentials: ReloadingServerCredentials | None = None

    # --- running -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        host = self.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def start(self, timeout: float = 60.0) -> Aggregator:
        """Run on a background thread; return once the server listens (or raise why not)."""
        if self._thread is not None:
            raise RuntimeError("the aggregator was already started")
        self._thread = threading.Thread(target=self._thread_main, name="fedwarden-aggregator")
        self._thread.daemon = True
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"the aggregator did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:
            if not self._started.is_set():
                self._error = exc
            else:
                log.exception("the aggregator failed")
                self._error = exc
        finally:
            self._started.set()

    def run(self) -> TrainingFinished:
        """Run in this thread until the training ends (the command line's way)."""
        return asyncio.run(self.serve())

    def wait(self, timeout: float | None = None) -> TrainingFinished | None:
        """Wait for the background thread; the final event, or ``None`` if still running."""
        if self._thread is None:
            raise RuntimeError("the aggregator was not started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        if self._error is not None:
            raise self._error
        return self.result

    def stop(self, timeout: float | None = 30.0) -> TrainingFinished | None:
        """Stop serving (the current round is abandoned; a restart resumes from the last
        checkpoint) and wait for the background thread."""
        loop, event = self._loop, self._stop_requested
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop just closed
                loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    async def serve(self) -> TrainingFinished:
        """Restore, listen, train, and stop; returns how the training ended."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._stop_requested = asyncio.Event()
        try:
            self._restore()
            await self._start_server()
        except BaseException:
            await self._shutdown()
            self.reporter.close()  # a refusal to start is news too: flush it
            raise
        self._started.set()
        try:
            result = await self._supervise()
        finally:
            await self._shutdown()
            self.reporter.close()
        self.result = result
        return result

    async def _start_server(self) -> None:
        self._credentials = ReloadingServerCredentials(
            self.tls.cert, self.tls.key, self.tls.ca, on_bundle_change=self._bundle_changed
        )
        check_can_listen(self.listen)
        server = grpc.aio.server(options=server_options(self.config.chunk_bytes))
        server.add_generic_rpc_handlers((self._handlers(),))
        try:
            port = server.add_secure_port(self.listen, self._credentials.credentials())
        except RuntimeError:  # grpcio >= 1.60 raises where older ones returned 0
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {self.listen} (in use, or not a local address?)")
        self._server = server
        self.port = port
        await server.start()
        if self.metrics_address is not None:
            host, mport = self.metrics_address
            self._health = HealthServer(
                host,
                mport,
                self.metrics.registry,
                healthy=lambda: self._loop is not None and not self._loop.is_closed(),
                ready=lambda: self._ready,
            )
            self._health.start()
            self.metrics_port = self._health.port
        self._ready = True
        privacy = self.pipeline.config.privacy
        self._emit(
            TrainingStarted(
                training_uid=self.training_uid,
                rounds=self.config.rounds,
                num_parameters=self.dim,
                resumed_from_round=self.rounds_done,
                epsilon=self.pipeline.epsilon,
                privacy={
                    "mode": privacy.mode,
                    "unit": privacy_unit(privacy.mode),
                    "noise_multiplier": self.pipeline.noise_multiplier,
                    "delta": privacy.delta if privacy.mode != "none" else None,
                    "target_epsilon": privacy.target_epsilon,
                    "accountant": privacy.accountant,
                    "noise_seeded": self.pipeline.seeded,
                },
                sampling={
                    "sampling": self.config.sampling,
                    "fraction": self.config.fraction,
                    "min_per_round": self.config.min_per_round,
                    "min_available": self.config.min_available,
                    "seeded": self.sampler.seeded,
                },
                address=self.address,
                banned=dict(self._banned),
            )
        )

    def _bundle_changed(self, bundle: TrustBundle) -> None:
        # called from gRPC's handshake thread; PeerVerifier.set_bundle swaps a reference
        self.verifier.set_bundle(bundle)

    async def _shutdown(self) -> None:
        self._ready = False
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None
        if self._health is not None:
            self._health.stop()
            self._health = None

    async def _supervise(self) -> TrainingFinished:
        assert self._stop_requested is not None
        training = asyncio.create_task(self._training(), name="fedwarden-rounds")
        stopping = asyncio.create_task(self._stop_requested.wait())
        done, _ = await asyncio.wait({training, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if training in done:
            stopping.cancel()
            return training.result()
        training.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await training
        if self.round is not None and not self.round.closed:
            self.round.closed = True
            self._emit(
                RoundAbandoned(
                    self.round.number, self.round.token.hex()[:8], "the aggregator stopped"
                )
            )
        event = TrainingFinished(
            status="stopped",
            message=f"stopped after {self.rounds_done} rounds; a restart resumes from the "
            "last checkpoint",
            rounds=self.rounds_done,
            epsilon=self.pipeline.epsilon,
            delta=self._delta(),
            banned=dict(self._banned),
        )
        self._emit(event)
        return event

    # --- state: restore and checkpoint ---------------------------------------------------

    def _restore(self) -> None:
        if self.checkpoint_dir is None:
            self._refuse_to_spend_again()
            self.reporter.resume(None)
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.checkpoint_dir)
        ckpt = load_checkpoint(self.checkpoint_dir)
        if ckpt is None:
            self._refuse_to_spend_again()
            self.reporter.resume(None)
            return
        if ckpt.training_uid != self.training_uid:
            raise CheckpointError(
                f"the checkpoint in {self.checkpoint_dir} belongs to training "
                f"{ckpt.training_uid!r}, not {self.training_uid!r}"
            )
        if ckpt.model.size != self.dim:
            raise CheckpointError(
                f"the checkpoint's model has {ckpt.model.size} parameters, this training {self.dim}"
            )
        try:
            self.pipeline.load_state_dict(ckpt.pipeline)
        except KeyError as exc:
            raise CheckpointError(
                f"the checkpoint in {self.checkpoint_dir} is not valid: its pipeline state has "
                f"no {exc.args[0]!r}"
            ) from exc
        self.model = ckpt.model
        self.model_digest = tensor_digest(self.model)
        self.rounds_done = ckpt.round
        self._banned = {c: self.pipeline.ban_reason(c) or "banned" for c in self.pipeline.banned}
        self._nonces = {r: {bytes.fromhex(n) for n in ns} for r, ns in ckpt.nonces.items()}
        self._fates = {c: ClientFate.from_dict(f) for c, f in ckpt.fates.items()}
        self._revocations = list(ckpt.revocations)
        self.participation = ParticipationHistory.from_dict(ckpt.extra.get("participation"))
        if ckpt.last_round is not None:
            event = event_from_dict(ckpt.last_round)
            assert isinstance(event, RoundFinished)
            self.last_round = event
        if ckpt.finished is not None:
            self.finished = TrainingFinished(**ckpt.finished)
        for record in self._revocations:
            self._apply_revocation(record)
        self.metrics.round.set(self.rounds_done)
        self.metrics.epsilon.set(self.pipeline.epsilon)
        self.metrics.clients_banned.set(len(self._banned))
        self.reporter.resume(self.last_round)
        log.info(
            "resumed from the checkpoint of round %d (ε = %.4g)", ckpt.round, self.pipeline.epsilon
        )

    def _refuse_to_spend_again(self) -> None:
        """No checkpoint: a new training, unless a durable record says ε was spent already. A
        fresh accountant would then spend the whole budget a second time, so the training ends
        here (:class:`PrivacyStateLostError`), told to the reporters first."""
        if self.pipeline.config.privacy.mode == "none":
            return
        record = self.reporter.recorded_progress()
        if record is None or (record.rounds == 0 and not record.epsilon):
            return
        where = (
            "no checkpoint is kept"
            if self.checkpoint_dir is None
            else (f"there is no checkpoint in {self.checkpoint_dir}")
        )
        message = (
            f"privacy state lost: {record.where} shows ε = {record.epsilon or 0:.4g} spent in "
            f"{record.rounds} rounds, but {where}; a fresh accountant would spend the budget "
            "again, so this aggregator does not train (restore the checkpoint volume, or start "
            "a new training)"
        )
        self._emit(
            TrainingFinished(
                status="privacy-state-lost",
                message=message,
                rounds=record.rounds,
                epsilon=record.epsilon or 0.0,
                delta=self._delta(),
                banned={},
            )
        )
        raise PrivacyStateLostError(message)

    async def _save(self, model: F32, rounds_done: int, last_round: RoundFinished | None) -> None:
        """The checkpoint, then the export (in a worker thread); report the export."""
        exported = await asyncio.to_thread(self._checkpoint, model, rounds_done, last_round)
        if exported is not None:
            self._emit(exported)

    def _checkpoint(
        self, model: F32, rounds_done: int, last_round: RoundFinished | None
    ) -> ModelExported | None:
        if last_round is not None:
            self.participation.record(last_round)
        if self.checkpoint_dir is not None:
            self._write_checkpoint(model, rounds_done, last_round)
        if self.exporter is None:
            return None
        try:
            facts = provenance_facts(
                training_uid=self.training_uid,
                identity=self.training.uri,
                status="running" if self.finished is None else self.finished.status,
                rounds_done=rounds_done,
                settings=self.config,
                pipeline=self.pipeline,
                participation=self.participation,
                bans=self.banned(),
            )
            return self.exporter.export(model, facts)
        except (OSError, PKIError, ValueError) as exc:
            # the training goes on; the next checkpoint exports again
            log.error("could not export the model of round %d: %s", rounds_done, exc)
            return None

    def _write_checkpoint(
        self, model: F32, rounds_done: int, last_round: RoundFinished | None
    ) -> None:
        assert self.checkpoint_dir is not None
        keep = rounds_done + 1 - self.config.nonce_rounds
        ckpt = Checkpoint(
            training_uid=self.training_uid,
            round=rounds_done,
            model=model,
            pipeline=self.pipeline.state_dict(),
            revocations=list(self._revocations),
            nonces={r: sorted(n.hex() for n in ns) for r, ns in self._nonces.items() if r >= keep},
            fates=self.fates(),
            last_round=None if last_round is None else last_round.to_dict(),
            finished=None if self.finished is None else _fields(self.finished),
            extra={"participation": self.participation.to_dict()},
        )
        save_checkpoint(self.checkpoint_dir, ckpt)

    # --- the round loop ------------------------------------------------------------------

    async def _training(self) -> TrainingFinished:
        if self.finished is not None:
            log.info("the training already ended (%s); telling clients", self.finished.status)
            self._emit(self.finished)
            await self._linger()
            return self.finished
        while self.rounds_done < self.config.rounds:
            if self._sites_budget_spent():
                return await self._finish(
                    "budget-exhausted",
                    f"every site's record-level privacy budget is spent (largest ε = "
                    f"{self.pipeline.epsilon:.4g}) after {self.rounds_done} rounds",
                )
            number = self.rounds_done + 1
            await self._wait_for_clients()
            rnd = self._open_round(number)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rnd.all_final.wait(), max(0.0, rnd.deadline - self._now()))
            self._close_round(rnd)
            try:
                record = await self._complete_round(rnd)
            except PrivacyBudgetExhaustedError as exc:
                return await self._finish("budget-exhausted", str(exc))
            self._emit(record)
        return await self._finish("completed", f"all {self.config.rounds} rounds completed")

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _wait_changed(self, timeout: float) -> None:
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def available(self) -> list[str]:
        """Clients seen within ``availability_ttl`` seconds, not banned, and (record-level DP)
        not out of budget: a site that reported its budget spent would refuse to train."""
        if self._loop is None:
            return []
        horizon = self._now() - self.config.availability_ttl
        spent = self.pipeline.sites_budget_spent
        return sorted(
            c
            for c, t in self._last_seen.items()
            if t >= horizon and c not in self._banned and c not in spent
        )

    @property
    def min_available(self) -> int:
        """``min_available`` less the clients banned or out of budget since: such a client can
        never be available again, and a training whose minimum was its whole population must
        not wait for it forever."""
        gone = len(self._banned) + len(self.pipeline.sites_budget_spent - set(self._banned))
        return max(1, self.config.min_available - gone)

    def _sites_budget_spent(self) -> bool:
        """Record-level DP: every site ever seen (the fates are checkpointed) and not banned
        reported its budget spent."""
        spent = self.pipeline.sites_budget_spent
        sites = set(self._fates) - set(self._banned)
        return bool(spent) and sites <= spent

    async def _wait_for_clients(self) -> None:
        while len(available := self.available()) < self.min_available:
            self.metrics.clients_available.set(len(available))
            await self._wait_changed(1.0)
        self.metrics.clients_available.set(len(available))

    def _open_round(self, number: int) -> _Round:
        attempt = self._attempts[number]
        self._attempts[number] += 1
        available = self.available()
        cohort, rate = self.sampler.sample(available, number, attempt)
        now = self._now()
        rnd = _Round(
            number=number,
            attempt=attempt,
            token=secrets.token_bytes(ROUND_TOKEN_BYTES),
            sampled=cohort,
            sample_rate=rate,
            base_model=self.model,
            base_digest=self.model_digest,
            opened=now,
            deadline=now + self.config.round_timeout,
            matrix=np.empty((len(cohort), self.dim), dtype=np.float32),
            rows={c: i for i, c in enumerate(cohort)},
        )
        if not cohort:
            rnd.all_final.set()
        for client in cohort:
            self._fate(client).sampled += 1
        self._nonces.setdefault(number, set())
        self.round = rnd
        self._emit(
            RoundStarted(
                round=number,
                attempt=rnd.token.hex()[:8],
                sampled=list(cohort),
                available=len(available),
                deadline_seconds=self.config.round_timeout,
            )
        )
        self._notify()
        return rnd

    def _close_round(self, rnd: _Round) -> None:
        rnd.closed = True
        self._notify()

    def _run_pipeline(self, rnd: _Round) -> tuple[RoundResult, F32, bytes]:
        """In a worker thread: the accepted updates through the pipeline; the new model."""
        ids = [c for c in rnd.sampled if c in rnd.accepted]
        rows = [rnd.accepted[c].row for c in ids]
        matrix = rnd.matrix
        for j, i in enumerate(rows):  # rows ascend, so moving each down is safe in place
            if i != j:
                matrix[j] = matrix[i]
        cohort = matrix[: len(ids)]
        examples = np.array([rnd.accepted[c].envelope.num_examples for c in ids], np.float64)
        weights = examples if len(examples) and (examples > 0).all() else None
        reports = {
            c: SiteReport(
                rnd.accepted[c].envelope.site_epsilon, rnd.accepted[c].envelope.site_budget_spent
            )
            for c in ids
        }
        result = self.pipeline.run_round(
            cohort, ids, weights=weights, sample_rate=rnd.sample_rate, site_reports=reports
        )
        new_model = (rnd.base_model + result.aggregate).astype(np.float32)
        return result, new_model, tensor_digest(new_model)

    async def _complete_round(self, rnd: _Round) -> RoundFinished:
        participants = [c for c in rnd.sampled if c in rnd.accepted]
        rejected: dict[str, dict[str, str]] = {
            c: {"stage": s, "reason": r, "message": m}
            for c, (s, r, m) in rnd.refusals.items()
            if c not in rnd.accepted
        }
        banned: dict[str, str] = {}
        result: RoundResult | None = None
        if participants or self.pipeline.releases_every_round:
            ran, new_model, digest = await asyncio.to_thread(self._run_pipeline, rnd)
            result, skipped = ran, ran.skipped
        else:
            new_model, digest = rnd.base_model, rnd.base_digest
            skipped = (
                "no client was sampled"
                if not rnd.sampled
                else "no update arrived before the deadline"
            )
        metrics: dict[str, float] = {}
        if result is not None:
            for client, reason in result.rejected.items():
                code = pipeline_reason_code(reason)
                rejected[client] = {"stage": "pipeline", "reason": code, "message": reason}
                self.metrics.reject_update(code)
                self._refusal_fate(client, code, reason)
                self._emit(Rejection(rnd.number, client, "pipeline", code, reason))
            for client in result.accepted:
                self._fate(client).aggregated += 1
            for client in result.newly_banned:
                banned[client] = self.pipeline.ban_reason(client) or "banned"
            if result.clip_norm is not None:
                metrics["clip_norm"] = float(result.clip_norm)
            metrics["noise_std"] = float(result.noise_std)
            metrics["update_norm"] = float(np.linalg.norm(result.aggregate))
        for client, (stage, reason, message) in rnd.refusals.items():
            # an update that was forged, altered, replayed or sent under another name is no
            # accident: it strikes like a poisoned one, and repeat offenders are banned
            if (
                stage == "update"
                and reason in STRIKING_REASONS
                and client not in rnd.accepted
                and self.pipeline.strike(client, f"{reason}: {message}", rnd.number)
            ):
                banned[client] = self.pipeline.ban_reason(client) or reason
        # one strike per round at most for a flood of refused requests: a client that keeps
        # sending what is refused (say, after its attempts are used up) is banned in the end
        flooders = self._flooders()
        self._refusals.clear()
        for client, count in flooders.items():
            message = (
                f"{FLOODING}: {count} refused requests in round {rnd.number} (at most "
                f"{self.config.max_refusals_per_round} are reported)"
            )
            if self.pipeline.strike(client, message, rnd.number):
                banned[client] = self.pipeline.ban_reason(client) or FLOODING
        if self.evaluator is not None:
            evaluated = await asyncio.to_thread(self.evaluator, new_model)
            if evaluated is not None:
                metrics.update({k: float(v) for k, v in evaluated.metrics.items()})
        elif result is not None:
            # the clients evaluated the model they downloaded: this round's base model
            reports = [
                Evaluation(
                    rnd.accepted[c].envelope.eval_examples,
                    dict(rnd.accepted[c].envelope.eval_metrics),
                )
                for c in result.accepted
            ]
            federated = combine_client_evaluations(reports)
            if federated:
                metrics.update(federated, evaluated_round=float(rnd.number - 1))
        duration = self._now() - rnd.opened
        strikes = self.pipeline.strikes
        record = RoundFinished(
            round=rnd.number,
            epsilon=self.pipeline.epsilon,
            delta=self._delta(),
            sampled=list(rnd.sampled),
            participants=participants,
            accepted=[] if result is None else list(result.accepted),
            rejected=rejected,
            banned=banned,
            skipped=skipped,
            metrics=metrics,
            duration_seconds=duration,
            model_digest=digest.hex(),
            strikes={c: strikes.get(c, 0) for c in sorted({*rnd.sampled, *flooders})},
            scores={} if result is None else {c: float(v) for c, v in result.contribution.items()},
            rounds_participated={
                c: self._fate(c).aggregated for c in ([] if result is None else result.accepted)
            },
            site_epsilon={
                c: eps for c in rnd.sampled if (eps := self.pipeline.site_epsilon(c)) is not None
            },
        )
        for client, reason in banned.items():
            cert = self._certs.get(client)
            self._revocations.append(
                {
                    "client": client,
                    "round": rnd.number,
                    "reason": reason,
                    "certificate": None if cert is None else certificate_pem(cert).decode(),
                    "serial": None if cert is None else f"{cert.serial_number:x}",
                }
            )
            self._banned[client] = reason
            self._fate(client).banned = reason
        # the point of no return: once this file is renamed into place the round is done
        await self._save(new_model, rnd.number, record)
        self.model = new_model
        self.model_digest = digest
        self.rounds_done = rnd.number
        horizon = rnd.number + 1 - self.config.nonce_rounds
        self._nonces = {r: n for r, n in self._nonces.items() if r >= horizon}
        self.last_round = record
        self.round = None
        for client in banned:
            await asyncio.to_thread(self._apply_revocation, self._revocations_of(client))
        self.metrics.rounds.inc()
        self.metrics.round.set(self.rounds_done)
        self.metrics.epsilon.set(record.epsilon)
        if record.delta is not None:
            self.metrics.delta.set(record.delta)
        self.metrics.clients_banned.set(len(self._banned))
        self.metrics.round_duration.observe(duration)
        self._notify()
        return record

    def _revocations_of(self, client: str) -> dict[str, Any]:
        return next(r for r in reversed(self._revocations) if r["client"] == client)

    def _apply_revocation(self, record: dict[str, Any]) -> None:
        pem = record.get("certificate")
        cert = None if pem is None else load_certificate(pem.encode())
        try:
            outcome = self.revoker.revoke(record["client"], cert, record["reason"])
        except Exception as exc:
            log.error("could not revoke %s's certificate: %s", record["client"], exc)
            return
        record["done"] = True
        with self._lock:
            self._fate(record["client"]).revoked = outcome
        log.info("revoked: %s", outcome)

    async def _finish(self, status: str, message: str) -> TrainingFinished:
        event = TrainingFinished(
            status=status,
            message=message,
            rounds=self.rounds_done,
            epsilon=self.pipeline.epsilon,
            delta=self._delta(),
            banned=dict(self._banned),
            metrics=dict(self.last_round.metrics) if self.last_round is not None else {},
        )
        self.finished = event
        self.round = None
        await self._save(self.model, self.rounds_done, self.last_round)
        self._emit(event)
        self._notify()
        await self._linger()
        return event

    async def _linger(self) -> None:
        """Answer DONE for a while, so that clients learn the training ended."""
        deadline = self._now() + self.config.finish_grace
        while self._now() < deadline:
            horizon = self._now() - self.config.availability_ttl
            recent = {c for c, t in self._last_seen.items() if t >= horizon}
            if self._told_done and recent <= self._told_done:
                return
            await self._wait_changed(min(1.0, max(0.0, deadline - self._now())))

    def _delta(self) -> float | None:
        privacy = self.pipeline.config.privacy
        return None if privacy.mode == "none" else privacy.delta

    # --- reporting and bookkeeping -------------------------------------------------------

    def _emit(self, event: Event) -> None:
        dispatch(self.reporter, event)

    def _fate(self, client: str) -> ClientFate:
        fate = self._fates.get(client)
        if fate is None:
            with self._lock:
                fate = self._fates.setdefault(client, ClientFate())
        return fate

    def _reportable(self, client: str) -> bool:
        """Count a refusal of ``client`` in this round: True for the first
        ``max_refusals_per_round`` (reported one by one); at the next the client is flagged for
        flooding, once; past it False (only counted, so that the report stays bounded)."""
        self._refusals[client] += 1
        count, limit = self._refusals[client], self.config.max_refusals_per_round
        if count == limit + 1:
            number = self._open_round_number()
            self.metrics.flag(FLOODING)
            with self._lock:
                fate = self._fate(client)
                fate.flagged[FLOODING] = fate.flagged.get(FLOODING, 0) + 1
            self._emit(
                ClientFlagged(
                    number,
                    client,
                    FLOODING,
                    f"more than {limit} refused requests in round {number}: the rest are only "
                    "counted, and the round counts as a strike",
                )
            )
        return count <= limit

    def _flooders(self) -> dict[str, int]:
        """Clients refused more than ``max_refusals_per_round`` times since the last round."""
        limit = self.config.max_refusals_per_round
        return {
            c: n for c, n in sorted(self._refusals.items()) if n > limit and not c.startswith("?")
        }

    def _refusal_fate(self, client: str, reason: str, message: str) -> None:
        with self._lock:
            fate = self._fate(client)
            fate.rejected[reason] = fate.rejected.get(reason, 0) + 1
            fate.last_refusal = f"{reason}: {message}"

    def fates(self) -> dict[str, dict[str, Any]]:
        """Each client's fate so far (safe to call from any thread)."""
        with self._lock:
            return {c: f.to_dict() for c, f in sorted(self._fates.items())}

    def banned(self) -> dict[str, str]:
        return dict(self._banned)

    @property
    def ready(self) -> bool:
        return self._ready

    # --- gRPC ----------------------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Join": grpc.unary_unary_rpc_method_handler(
                    self._join, response_serializer=pb.JoinReply.SerializeToString
                ),
                "Poll": grpc.unary_unary_rpc_method_handler(
                    self._poll, response_serializer=pb.Instruction.SerializeToString
                ),
                "GetModel": grpc.unary_stream_rpc_method_handler(
                    self._get_model, response_serializer=pb.TensorChunk.SerializeToString
                ),
                "SubmitUpdate": grpc.stream_unary_rpc_method_handler(
                    self._submit_update, response_serializer=pb.SubmitReply.SerializeToString
                ),
                "FetchModel": grpc.unary_stream_rpc_method_handler(
                    self._fetch_model, response_serializer=pb.FileChunk.SerializeToString
                ),
            },
        )

    async def _abort(self, context: Any, reason: str, message: str) -> None:
        await context.abort(
            status_for(reason),
            f"{reason}: {message}",
            trailing_metadata=((REASON_METADATA_KEY, reason),),
        )

    def _open_round_number(self) -> int:
        return self.round.number if self.round is not None else self.rounds_done + 1

    async def _authorise(self, context: Any) -> tuple[str, x509.Certificate]:
        """The client behind the TLS peer certificate, or abort the RPC (nothing read yet)."""
        pem = peer_certificate_pem(context)
        if pem is None:
            await self._refuse_peer(context, None, "no-certificate", "no client certificate")
            raise _Refused
        try:
            cert = load_certificate(pem, "peer certificate")
        except PKIError as exc:
            await self._refuse_peer(context, None, "bad-certificate", exc.message)
            raise _Refused from exc
        try:
            identity = self.verifier.verify(cert)
        except CertificateProblem as exc:
            await self._refuse_peer(context, self._name_of(cert), exc.reason, exc.message)
            raise _Refused from exc
        client = identity.client
        if client in self._banned:
            await self._refuse_peer(
                context, client, "banned", f"{client} is banned: {self._banned[client]}"
            )
            raise _Refused
        self._certs[client] = cert
        if client not in self._last_seen:
            self._last_seen[client] = self._now()
            self._notify()  # a newcomer may complete the quorum
        self._last_seen[client] = self._now()
        self._fate(client)
        return client, cert

    def _name_of(self, cert: x509.Certificate) -> str:
        try:
            return identity_from_certificate(cert, self.training).client
        except PKIError:
            cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            return f"?{cns[0].value!s}" if cns else f"?serial:{cert.serial_number:x}"

    async def _refuse_peer(
        self, context: Any, client: str | None, reason: str, message: str
    ) -> None:
        self.metrics.refuse_peer(reason)
        name = client or "?"
        if client is not None and not client.startswith("?"):
            self._refusal_fate(client, reason, message)
            rnd = self.round
            if rnd is not None and not rnd.closed and client in rnd.rows:
                rnd.refusals[client] = ("peer", reason, message)
                rnd.settle(client)
        if self._reportable(name):
            self._emit(Rejection(self._open_round_number(), name, "peer", reason, message))
        code = (
            grpc.StatusCode.PERMISSION_DENIED
            if reason in _PEER_PERMISSION
            else grpc.StatusCode.UNAUTHENTICATED
        )
        await context.abort(
            code, f"{reason}: {message}", trailing_metadata=((REASON_METADATA_KEY, reason),)
        )

    async def _refuse_request(self, context: Any, client: str, reason: str, message: str) -> None:
        self.metrics.refuse_peer(reason)
        self._refusal_fate(client, reason, message)
        if self._reportable(client):
            self._emit(Rejection(self._open_round_number(), client, "peer", reason, message))
        await self._abort(context, reason, message)

    async def _join(self, request: bytes, context: Any) -> pb.JoinReply:
        try:
            client, _ = await self._authorise(context)
        except _Refused:
            return pb.JoinReply()
        try:
            req = pb.JoinRequest.FromString(request)
        except DecodeError as exc:
            await self._refuse_request(context, client, "malformed-request", f"Join: {exc}")
            return pb.JoinReply()
        if req.training_uid and req.training_uid != self.training_uid:
            await self._refuse_request(
                context,
                client,
                "wrong-training",
                f"this aggregator runs {self.training_uid!r}, not {req.training_uid!r}",
            )
        if req.num_parameters and req.num_parameters != self.dim:
            await self._refuse_request(
                context,
                client,
                "wrong-size",
                f"the model has {self.dim} parameters, the client's {req.num_parameters}",
            )
        return pb.JoinReply(
            training_uid=self.training_uid,
            num_parameters=self.dim,
            task_json=json.dumps(self.announcement),
            max_chunk_bytes=self.config.chunk_bytes,
            max_update_bytes=self.max_update_bytes,
            client_id=client,
            round=self.rounds_done,
            poll_timeout_seconds=self.config.poll_timeout,
        )

    def _instruction(
        self, client: str, last_round: int, last_token: bytes
    ) -> pb.Instruction | None:
        if self.finished is not None:
            self._told_done.add(client)
            return pb.Instruction(
                kind=pb.Instruction.DONE,
                round=self.rounds_done,
                reason=self.finished.status,
                message=self.finished.message,
            )
        if client in self._banned:
            return pb.Instruction(
                kind=pb.Instruction.REFUSED, reason="banned", message=self._banned[client]
            )
        rnd = self.round
        if (
            rnd is not None
            and not rnd.closed
            and client in rnd.rows
            and client not in rnd.final
            and client not in rnd.accepted
            and (last_round, last_token) != (rnd.number, rnd.token)
        ):
            return pb.Instruction(
                kind=pb.Instruction.TRAIN,
                round=rnd.number,
                round_token=rnd.token,
                base_digest=rnd.base_digest,
                num_parameters=self.dim,
                deadline_seconds=max(0.0, rnd.deadline - self._now()),
            )
        return None

    async def _poll(self, request: bytes, context: Any) -> pb.Instruction:
        try:
            client, _ = await self._authorise(context)
        except _Refused:
            return pb.Instruction()
        try:
            req = pb.PollRequest.FromString(request)
        except DecodeError as exc:
            await self._refuse_request(context, client, "malformed-request", f"Poll: {exc}")
            return pb.Instruction()
        budget = self.config.poll_timeout
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, max(0.0, remaining - 1.0))
        deadline = self._now() + budget
        while True:
            self._last_seen[client] = self._now()
            instruction = self._instruction(client, req.last_round, req.last_round_token)
            if instruction is not None:
                return instruction
            left = deadline - self._now()
            if left <= 0:
                return pb.Instruction(kind=pb.Instruction.WAIT, retry_after_seconds=0.0)
            await self._wait_changed(left)

    async def _refuse_model(
        self, context: Any, client: str, reason: str, message: str, *, flag: bool
    ) -> None:
        self.metrics.refuse_model(reason)
        self._refusal_fate(client, reason, message)
        number = self._open_round_number()
        reported = self._reportable(client)
        if reported:
            self._emit(Rejection(number, client, "model", reason, message))
        if flag:
            self.metrics.flag(reason)
            with self._lock:
                fate = self._fate(client)
                fate.flagged[reason] = fate.flagged.get(reason, 0) + 1
            if reported:
                self._emit(ClientFlagged(number, client, reason, message))
        await self._abort(context, reason, message)

    async def _get_model(self, request: bytes, context: Any) -> None:
        try:
            client, _ = await self._authorise(context)
        except _Refused:
            return
        try:
            req = pb.ModelRequest.FromString(request)
        except DecodeError as exc:
            await self._refuse_request(context, client, "malformed-request", f"GetModel: {exc}")
            return
        rnd = self.round
        if rnd is None or rnd.closed:
            await self._refuse_model(
                context, client, "model-wrong-round", "no round is open", flag=False
            )
            return
        if client not in rnd.rows:
            await self._refuse_model(
                context,
                client,
                "model-not-sampled",
                f"{client} is not sampled for round {rnd.number}; the model is served only to "
                "the round's cohort",
                flag=True,
            )
            return
        if (req.round, req.round_token) != (rnd.number, rnd.token):
            await self._refuse_model(
                context,
                client,
                "model-wrong-round",
                f"asked for round {req.round}, the open round is {rnd.number}",
                flag=False,
            )
            return
        if rnd.downloads[client] >= self.config.max_downloads_per_round:
            await self._refuse_model(
                context,
                client,
                "throttled",
                f"{client} already downloaded the model {rnd.downloads[client]} times in round "
                f"{rnd.number} (at most {self.config.max_downloads_per_round})",
                flag=True,
            )
            return
        rnd.downloads[client] += 1
        self.metrics.model_downloads.inc()
        self.metrics.count("model_downloads")
        with self._lock:
            self._fate(client).downloads += 1
        total = rnd.base_model.size
        for offset, data in iter_chunks(rnd.base_model, self.config.chunk_bytes):
            if rnd.closed:
                await self._refuse_model(
                    context, client, "model-wrong-round", "the round closed", flag=False
                )
                return
            chunk = pb.TensorChunk(offset=offset, data=bytes(data), total=total)
            try:
                await asyncio.wait_for(context.write(chunk), self.config.stall_timeout)
            except TimeoutError:
                self.metrics.refuse_model("stalled")
                self._refusal_fate(client, "stalled", "the model download stalled")
                await self._abort(context, "stalled", "the client stopped reading the model")
                return
            self.metrics.sent(len(data))

    async def _fetch_model(self, request: bytes, context: Any) -> None:
        """The last export, to a reader of the training only (see wire/fetch.py)."""
        await serve_export(
            context,
            self.verifier,
            self.exporter.open_pair if self.exporter is not None else lambda: None,
            no_model="no model was exported yet"
            if self.exporter is not None
            else "this aggregator exports no model (it runs without --output-model)",
            chunk_bytes=self.config.chunk_bytes,
            stall_timeout=self.config.stall_timeout,
            refused=self._fetch_refused,
        )

    def _fetch_refused(self, refusal: WireError) -> None:
        self.metrics.refuse_model(refusal.reason)
        number = self._open_round_number()
        self._emit(Rejection(number, "?reader", "model", refusal.reason, refusal.message))

    # --- receiving an update -------------------------------------------------------------

    async def _next_message(self, iterator: Any, rnd: _Round | None) -> bytes | None:
        timeout = self.config.stall_timeout
        if rnd is not None and not rnd.closed:
            timeout = min(timeout, max(0.0, rnd.deadline - self._now()) + 0.05)
        try:
            message: bytes = await asyncio.wait_for(iterator.__anext__(), timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if rnd is not None and (rnd.closed or self._now() >= rnd.deadline):
                raise WireError(
                    "round-closed", f"round {rnd.number}'s deadline passed during the upload"
                ) from None
            raise WireError(
                "stalled", f"nothing arrived for {timeout:.3g} s; the stream was cut"
            ) from None
        return message

    @staticmethod
    def _parse(message: bytes) -> pb.UpdateMessage:
        try:
            parsed: pb.UpdateMessage = pb.UpdateMessage.FromString(message)
            return parsed
        except DecodeError as exc:
            raise WireError(
                "malformed-message", f"a stream message is not an UpdateMessage ({exc})"
            ) from exc

    async def _submit_update(self, iterator: Any, context: Any) -> pb.SubmitReply:
        try:
            client, cert = await self._authorise(context)
        except _Refused:
            return pb.SubmitReply()
        rnd = self.round
        try:
            return await self._receive(client, cert, iterator, rnd)
        except WireError as exc:
            self._reject_update(client, rnd, exc)
            await self._abort(context, exc.reason, exc.message)
            return pb.SubmitReply()

    def _reject_update(self, client: str, rnd: _Round | None, exc: WireError) -> None:
        self.metrics.reject_update(exc.reason)
        self._refusal_fate(client, exc.reason, exc.message)
        number = rnd.number if rnd is not None else self._open_round_number()
        if rnd is not None and client in rnd.rows and client not in rnd.accepted:
            rnd.refusals[client] = ("update", exc.reason, exc.message)
            if exc.reason != "duplicate":
                rnd.attempts[client] += 1
            info = REASONS.get(exc.reason)
            retryable = info is not None and info.retryable
            if not retryable or rnd.attempts[client] >= self.config.max_attempts_per_round:
                rnd.settle(client)
        if self._reportable(client):
            self._emit(Rejection(number, client, "update", exc.reason, exc.message))

    async def _receive(
        self, client: str, cert: x509.Certificate, iterator: Any, rnd: _Round | None
    ) -> pb.SubmitReply:
        first = await self._next_message(iterator, rnd)
        if first is None:
            raise WireError("missing-header", "the stream ended before the header")
        message = self._parse(first)
        if message.WhichOneof("body") != "header":
            raise WireError("missing-header", "the first message is not the signed header")
        # 1. the signature, with the key of the TLS certificate, before decoding the envelope
        env = open_envelope(cert, message.header.envelope, message.header.signature)
        # 2. the envelope against the connection and the round
        self._check_envelope(client, env, rnd)
        assert rnd is not None
        rnd.in_flight.add(client)
        try:
            return await self._receive_payload(client, env, iterator, rnd)
        finally:
            rnd.in_flight.discard(client)

    async def _receive_payload(
        self, client: str, env: Envelope, iterator: Any, rnd: _Round
    ) -> pb.SubmitReply:
        row = rnd.rows[client]
        assembler = TensorAssembler(
            env.num_values, rnd.matrix[row], max_chunk_bytes=self.config.chunk_bytes
        )
        # 3. the payload, chunk by chunk into the round's matrix, hashed as it arrives
        while True:
            raw = await self._next_message(iterator, rnd)
            if raw is None:
                break
            if rnd.closed:
                raise WireError("round-closed", f"round {rnd.number} closed during the upload")
            message = self._parse(raw)
            if message.WhichOneof("body") != "chunk":
                raise WireError("malformed-chunk", "a second header in the middle of the payload")
            assembler.add(message.chunk)
            self.metrics.received(len(message.chunk))
        assembler.finish()
        if assembler.digest() != env.payload_digest:
            raise WireError(
                "tampered",
                "the payload's SHA-256 differs from the digest in the signed envelope: it was "
                "altered in transit (or the client signed something else)",
            )
        if rnd.closed:
            raise WireError("round-closed", f"round {rnd.number} closed during the upload")
        rnd.accepted[client] = _Submission(env, row)
        rnd.refusals.pop(client, None)
        rnd.settle(client)
        self.metrics.accept_update()
        with self._lock:
            self._fate(client).submitted += 1
        return pb.SubmitReply(
            accepted=True,
            reason="accepted",
            message=f"update for round {rnd.number} verified; it enters the round's pipeline",
            round=rnd.number,
        )

    def _check_envelope(self, client: str, env: Envelope, rnd: _Round | None) -> None:
        """The checks after the signature, in order (docs/runtime.md); raises WireError."""
        if env.training_uid != self.training_uid:
            raise WireError(
                "wrong-training",
                f"the envelope is for training {env.training_uid!r}, this is {self.training_uid!r}",
            )
        if env.client_id != client:
            raise WireError(
                "identity-mismatch",
                f"the envelope claims to come from {env.client_id!r} but the TLS certificate "
                f"is {client!r}'s",
            )
        if any(env.nonce in seen for seen in self._nonces.values()):
            raise WireError(
                "replay",
                f"this envelope (round {env.round}, nonce {env.nonce.hex()[:12]}…) was seen before",
            )
        if rnd is None or rnd.closed:
            raise WireError("round-closed", "no round is open for updates")
        if env.round != rnd.number or env.round_token != rnd.token:
            which = "an earlier attempt at" if env.round == rnd.number else "round"
            raise WireError(
                "wrong-round",
                f"the envelope is for {which} {env.round}, the open round is {rnd.number} "
                f"(attempt {rnd.token.hex()[:8]})",
            )
        if client not in rnd.rows:
            raise WireError("not-sampled", f"{client} is not sampled for round {rnd.number}")
        if client in rnd.accepted:
            raise WireError("duplicate", f"{client}'s update for round {rnd.number} is already in")
        if client in rnd.in_flight:
            raise WireError(
                "duplicate", f"another upload from {client} for round {rnd.number} is under way"
            )
        if rnd.attempts[client] >= self.config.max_attempts_per_round:
            raise WireError(
                "too-many-attempts",
                f"{client} made {rnd.attempts[client]} refused submissions in round {rnd.number}",
            )
        if env.base_digest != rnd.base_digest:
            raise WireError(
                "wrong-base-model",
                f"the update was computed from model {env.base_digest.hex()[:12]}…, round "
                f"{rnd.number}'s model is {rnd.base_digest.hex()[:12]}…",
            )
        if env.dtype != "float32":
            raise WireError("unsupported-dtype", f"dtype {env.dtype!r}; only float32 is accepted")
        if env.num_values * 4 > self.max_update_bytes:
            raise WireError(
                "oversized",
                f"an update of {env.num_values} values ({env.num_values * 4} bytes) exceeds the "
                f"maximum of {self.max_update_bytes} bytes",
            )
        if env.num_values != self.dim:
            raise WireError(
                "wrong-size", f"an update of {env.num_values} values; the model has {self.dim}"
            )
        # only now, so that at most max_attempts_per_round nonces per sampled client and round
        # are kept: an envelope refused above cannot be accepted later anyway
        self._nonces.setdefault(rnd.number, set()).add(env.nonce)


def check_can_listen(listen: str) -> None:
    """Raise :class:`OSError` naming ``listen`` when its port is taken (or the host is not a
    local address), before gRPC tries: gRPC's own failure is a log line from its core and an
    exception without the reason."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {listen}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise OSError(f"cannot listen on {listen}: {exc.strerror}") from exc


def _fields(event: Event) -> dict[str, Any]:
    data = event.to_dict()
    data.pop("event", None)
    return data


_PIPELINE_CODES = (
    ("banned", "banned"),
    ("invalid update", "invalid-update"),
    ("statistical outlier", "outlier"),
    ("free-riding", "free-riding"),
    ("poisoning", "poisoning"),
)


def pipeline_reason_code(reason: str) -> str:
    """The reason code of a pipeline refusal (its message starts with the category)."""
    for prefix, code in _PIPELINE_CODES:
        if reason.startswith(prefix):
            return code
    return "pipeline"
