"""The Kubernetes status reporter: the aggregator's progress onto the custom resources.

:class:`KubernetesReporter` writes what the aggregator knows onto the ``status`` of its
``FederatedTraining`` and of the ``FLClient`` resources of its clients, with **server-side
apply** on the status subresource under the field manager ``fedwarden-aggregator``. It applies
only the fields the aggregator owns, so that the operator (field manager ``fedwarden-operator``:
phase, conditions, enrolled clients, endpoint, observed generation, message, times) never
conflicts with it:

- ``FederatedTraining.status``: ``round`` (rounds completed), ``epsilonSpent`` (under
  record-level DP the largest ε over the sites), ``privacyUnit`` (``record`` or ``client``: whom
  that ε protects), ``delta``, ``noiseMultiplier``, ``participants`` (of the last round),
  ``rejectedUpdates`` (so far),
  ``bannedClients`` (sorted names), ``bannedCount``, ``lastMetrics`` (``accuracy``, ``loss``,
  ``updateNorm``, those known; under federated evaluation also ``evaluatedBy``, the number of
  clients whose claimed metrics were combined, and ``evaluatedRound``, the round whose model
  they evaluated), ``model`` (``round`` and ``sha256`` of the last export), and
  ``privacyStateLost`` (why this aggregator refuses to train: no checkpoint, though the status
  shows ε spent; see :meth:`KubernetesReporter.recorded_progress`);
- ``FLClient.status`` (the client id is the FLClient's name, in the training's namespace):
  ``strikes``, ``lastScore``, ``roundsParticipated``, under record-level DP ``epsilonSpent`` (the
  largest ε the site signed), and on a ban ``phase: Banned`` with ``banReason``
  (``<code>: <reason>``).

How it works: the events update an in-memory :class:`StatusState` (cheap, on the caller's
thread); a writer thread applies the latest state (a coalescing slot: a burst of events is one
write) after ``TrainingStarted``, each ``RoundFinished`` (bans are decided at the end of a round
and arrive with it), ``ModelExported`` and ``TrainingFinished``. An FLClient is patched only
when its desired status differs from what was last written. The API server's failures never
reach the training: the writer logs, backs off and retries; :meth:`KubernetesReporter.close`
flushes with a deadline.

Server-side apply removes a field that a manager applied before and omits now, so every apply
carries the full set of fields known. Before its first write the reporter reads the training's
status once: what an earlier aggregator process wrote seeds the state (ε, cumulative counters,
bans), and ε never goes down on the resource (a restarted aggregator that lost its checkpoint
would report less: the larger value is kept and a warning logged). When that status shows an
earlier process (``round`` > 0), each FLClient's status is read once before its first write, for
the same reason.

Permissions (the operator's Role for the aggregator): ``get`` and ``patch`` on
``federatedtrainings/status`` and ``flclients/status`` with ``resourceNames`` of the training and
of its clients, and ``get`` on ``federatedtrainings`` with the training's name. Nothing is listed
or watched. A client refused with 403 (say, enrolled after the Role was rendered) is logged once
and skipped until its status changes again.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fedwarden.aggregator.reporting import (
    Event,
    ModelExported,
    RecordedProgress,
    Reporter,
    RoundFinished,
    TrainingFinished,
    TrainingStarted,
)
from fedwarden.k8s.credentials import SERVICE_ACCOUNT_DIR, NoServiceAccount, ServiceAccount

log = logging.getLogger("fedwarden.aggregator.kubernetes")

GROUP = "fedwarden.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "fedwarden-aggregator"
APPLY_PATCH = "application/apply-patch+yaml"
TRAININGS = "federatedtrainings"
CLIENTS = "flclients"

TRAINING_FIELDS = (
    "round",
    "epsilonSpent",
    "privacyUnit",
    "delta",
    "noiseMultiplier",
    "participants",
    "rejectedUpdates",
    "bannedClients",
    "bannedCount",
    "lastMetrics",
    "privacyStateLost",
    "model",
)
"""The FederatedTraining status fields this reporter owns (and only these)."""

NOT_CARRIED_OVER = frozenset({"privacyStateLost"})
"""Fields an aggregator process writes only about itself: one that resumed from a restored
checkpoint clears an earlier process's ``privacyStateLost``."""


def displayed_epsilon(epsilon: float) -> float:
    """ε as the resource shows it (``kubectl get ft``): four decimals, rounded *up*, so the status
    never understates what was spent."""
    return math.ceil(epsilon * 1e4 - 1e-9) / 1e4


CLIENT_FIELDS = (
    "strikes",
    "lastScore",
    "roundsParticipated",
    "epsilonSpent",
    "phase",
    "banReason",
)
"""The FLClient status fields this reporter owns; ``phase`` only ever as ``Banned``."""

_METRICS = (
    ("accuracy", "accuracy"),
    ("loss", "loss"),
    ("update_norm", "updateNorm"),
    ("evaluated_by", "evaluatedBy"),
    ("evaluated_round", "evaluatedRound"),
)
_COUNTS = frozenset({"evaluatedBy", "evaluatedRound"})
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_resource_name(name: str) -> bool:
    """True when ``name`` can be an FLClient's name (a DNS-1123 subdomain)."""
    return len(name) <= 253 and _DNS_SUBDOMAIN.match(name) is not None


def parse_target(value: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` -> (namespace, name); ValueError naming what is wrong."""
    namespace, sep, name = value.partition("/")
    if not sep or not is_resource_name(namespace) or not is_resource_name(name) or "/" in name:
        raise ValueError(f"{value!r} is not NAMESPACE/NAME (for example team-a/mnist)")
    return namespace, name


# --- the state: what the aggregator knows, from its events (pure, no I/O) -----------------


@dataclass
class ClientFacts:
    strikes: int | None = None
    score: float | None = None
    rounds_participated: int | None = None
    epsilon: float | None = None
    ban_reason: str | None = None


@dataclass
class StatusState:
    """What the events told; composed with the resource's earlier status by
    :func:`training_status` and :func:`client_status`.

    ``rejected`` counts the refusals of the rounds completed in this process; a round replayed
    from the checkpoint at start (``resume``) is counted only if the resource's ``round`` does
    not already include it (``replay_round``).
    """

    round: int | None = None
    epsilon: float | None = None
    privacy_unit: str | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    participants: int | None = None
    rejected: int = 0
    replay_round: int | None = None
    replay_rejected: int = 0
    banned: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float | int] = field(default_factory=dict)
    clients: dict[str, ClientFacts] = field(default_factory=dict)
    privacy_state_lost: str | None = None
    model: dict[str, Any] | None = None
    """``{"round", "sha256"}`` of the last export."""

    def copy(self) -> StatusState:
        return copy.deepcopy(self)

    def _client(self, name: str) -> ClientFacts | None:
        if not is_resource_name(name):
            return None  # "?cn" of an unknown peer, or not an FLClient's name
        return self.clients.setdefault(name, ClientFacts())

    def _privacy(self, epsilon: float, delta: float | None) -> None:
        if delta is None:  # no DP: no ε to report
            return
        self.epsilon = epsilon if self.epsilon is None else max(self.epsilon, epsilon)
        self.delta = delta

    def _ban(self, banned: Mapping[str, str]) -> None:
        for name, reason in banned.items():
            self.banned.setdefault(name, reason)
            facts = self._client(name)
            if facts is not None and facts.ban_reason is None:
                facts.ban_reason = reason

    def _metrics(self, metrics: Mapping[str, float]) -> None:
        known: dict[str, float | int] = {
            ours: int(metrics[theirs]) if ours in _COUNTS else float(metrics[theirs])
            for theirs, ours in _METRICS
            if theirs in metrics and math.isfinite(float(metrics[theirs]))
        }
        if known:
            self.metrics = known

    def training_started(self, event: TrainingStarted) -> None:
        self.round = (
            event.resumed_from_round
            if self.round is None
            else max(self.round, event.resumed_from_round)
        )
        delta = event.privacy.get("delta")
        self._privacy(event.epsilon, None if delta is None else float(delta))
        noise = event.privacy.get("noise_multiplier")
        if noise is not None and math.isfinite(float(noise)):
            self.noise_multiplier = float(noise)
        self.privacy_unit = event.privacy.get("unit")
        self._ban(event.banned)

    def round_finished(self, event: RoundFinished, *, replayed: bool = False) -> None:
        self.round = event.round if self.round is None else max(self.round, event.round)
        self._privacy(event.epsilon, event.delta)
        self.participants = len(event.participants)
        if replayed:
            self.replay_round, self.replay_rejected = event.round, len(event.rejected)
        else:
            self.rejected += len(event.rejected)
        self._metrics(event.metrics)
        for name, strikes in event.strikes.items():
            if (facts := self._client(name)) is not None:
                facts.strikes = int(strikes)
        for name, score in event.scores.items():
            if (facts := self._client(name)) is not None and math.isfinite(score):
                facts.score = float(score)
        for name, count in event.rounds_participated.items():
            if (facts := self._client(name)) is not None:
                facts.rounds_participated = int(count)
        for name, epsilon in event.site_epsilon.items():
            if (facts := self._client(name)) is not None and math.isfinite(epsilon):
                facts.epsilon = max(float(epsilon), facts.epsilon or 0.0)
        self._ban(event.banned)

    def model_exported(self, event: ModelExported) -> None:
        self.model = {"round": event.round, "sha256": event.sha256}

    def training_finished(self, event: TrainingFinished) -> None:
        if event.status == "privacy-state-lost":
            self.privacy_state_lost = event.message
        self.round = event.rounds if self.round is None else max(self.round, event.rounds)
        self._privacy(event.epsilon, event.delta)
        self._metrics(event.metrics)
        self._ban(event.banned)


def ban_reason_code(reason: str) -> str:
    """A short code for a ban: the category of the refusal that decided it (``outlier``,
    ``invalid-update``, ``free-riding``, ``poisoning``, ``tampered``, ...), else ``banned``."""
    from fedwarden.aggregator.server import FLOODING, STRIKING_REASONS, pipeline_reason_code

    last = re.sub(r"^\d+ strikes?, the last in round \d+: ", "", reason)
    code = pipeline_reason_code(last)
    if code != "pipeline":
        return code
    head = last.split(":", 1)[0].strip()
    return head if head in STRIKING_REASONS | {FLOODING} else "banned"


def training_status(
    seed: Mapping[str, Any] | None,
    state: StatusState,
    *,
    warn: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """The FederatedTraining status fields to apply: the resource's earlier values of our fields
    (``seed``) overlaid with what this process knows. ε is the larger of the two; ``warn(key,
    message)`` is told when this process knows less than the resource shows."""
    seed = seed or {}
    out: dict[str, Any] = {
        k: copy.deepcopy(seed[k])
        for k in TRAINING_FIELDS
        if k in seed and k not in NOT_CARRIED_OVER
    }
    seed_round = int(seed.get("round") or 0)
    if state.round is not None:
        if state.round < seed_round and warn is not None:
            warn(
                "round",
                f"the aggregator reports round {state.round} but the resource says "
                f"{seed_round}: was the checkpoint lost?",
            )
        out["round"] = state.round
    if state.epsilon is not None:
        spent = displayed_epsilon(state.epsilon)
        seeded = seed.get("epsilonSpent")
        if seeded is not None and float(seeded) > spent:
            if warn is not None:
                warn(
                    "epsilon",
                    f"the aggregator's ε ({state.epsilon:.6g}) is below the ε on the resource "
                    f"({float(seeded):.6g}); keeping the larger (was the checkpoint lost?)",
                )
            out["epsilonSpent"] = float(seeded)
        else:
            out["epsilonSpent"] = spent
    if state.privacy_unit is not None:
        out["privacyUnit"] = state.privacy_unit
    if state.delta is not None:
        out["delta"] = state.delta
    if state.noise_multiplier is not None:
        out["noiseMultiplier"] = state.noise_multiplier
    if state.participants is not None:
        out["participants"] = state.participants
    rejected = int(seed.get("rejectedUpdates") or 0) + state.rejected
    if state.replay_round is not None and state.replay_round > seed_round:
        rejected += state.replay_rejected
    if rejected or "rejectedUpdates" in out or state.round is not None:
        out["rejectedUpdates"] = rejected
    banned = set(seed.get("bannedClients") or ()) | set(state.banned)
    if banned or "bannedClients" in out or state.round is not None:
        out["bannedClients"] = sorted(banned)
        out["bannedCount"] = len(banned)
    if state.metrics:
        out["lastMetrics"] = dict(state.metrics)
    if state.privacy_state_lost is not None:
        out["privacyStateLost"] = state.privacy_state_lost
    if state.model is not None:
        out["model"] = dict(state.model)
    return out


def client_status(seed: Mapping[str, Any] | None, facts: ClientFacts) -> dict[str, Any]:
    """The FLClient status fields to apply: the earlier values of our fields overlaid with what
    this process knows; a ban is final."""
    seed = seed or {}
    out: dict[str, Any] = {}
    for key in ("strikes", "lastScore", "roundsParticipated", "epsilonSpent"):
        if key in seed and seed[key] is not None:
            out[key] = seed[key]
    if facts.strikes is not None:
        out["strikes"] = facts.strikes
    if facts.score is not None:
        out["lastScore"] = facts.score
    if facts.rounds_participated is not None:
        out["roundsParticipated"] = max(
            facts.rounds_participated, int(out.get("roundsParticipated") or 0)
        )
    if facts.epsilon is not None:  # a site's ε never goes down on the resource either
        out["epsilonSpent"] = max(
            displayed_epsilon(facts.epsilon), float(out.get("epsilonSpent") or 0.0)
        )
    if facts.ban_reason is not None:
        out["phase"] = "Banned"
        out["banReason"] = f"{ban_reason_code(facts.ban_reason)}: {facts.ban_reason}"
    elif seed.get("phase") == "Banned" and seed.get("banReason"):
        out["phase"] = "Banned"
        out["banReason"] = seed["banReason"]
    return out


def apply_body(kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """The server-side-apply document for a status subresource."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "status": dict(status),
    }


# --- talking to the API server ------------------------------------------------------------


class StatusApiError(Exception):
    """A failed request: ``status`` is the HTTP status (``None``: no answer at all)."""

    def __init__(self, status: int | None, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in (404, 408, 409, 429) or self.status >= 500


class StatusApi(Protocol):
    """The four requests the reporter makes (get and apply the status of one object)."""

    def get_status(self, plural: str, name: str) -> dict[str, Any]: ...

    def apply_status(self, plural: str, kind: str, name: str, status: dict[str, Any]) -> None: ...


class KubernetesStatusApi:
    """:class:`StatusApi` with the official client's ``CustomObjectsApi``.

    Credentials: the pod's service account by default (``token`` and ``ca.crt`` in
    ``service_account_dir``, the API server from ``KUBERNETES_SERVICE_HOST`` and ``_PORT``; the
    token is read again as the kubelet rotates it; :mod:`fedwarden.k8s.credentials`), or a
    kubeconfig file, or a ready ``kubernetes.client.Configuration`` (e.g. a bearer token and the
    API server's CA).
    """

    def __init__(
        self,
        namespace: str,
        *,
        kubeconfig: Path | str | None = None,
        configuration: Any | None = None,
        service_account_dir: Path | str = SERVICE_ACCOUNT_DIR,
        request_timeout: float = 10.0,
    ) -> None:
        from kubernetes import client
        from kubernetes import config as _config

        config: Any = _config  # untyped functions
        if configuration is None and kubeconfig is not None:
            configuration = client.Configuration()
            try:
                config.load_kube_config(
                    config_file=str(kubeconfig), client_configuration=configuration
                )
            except config.ConfigException as exc:
                raise ValueError(f"{kubeconfig}: {exc}") from exc
        elif configuration is None:
            try:
                configuration = ServiceAccount.read(service_account_dir).configuration()
            except NoServiceAccount as exc:
                raise ValueError(
                    f"no in-cluster credentials in {service_account_dir} ({exc}); outside a "
                    "cluster give a kubeconfig"
                ) from exc
        configuration.retries = 0  # the reporter retries itself, with backoff
        self.namespace = namespace
        self.request_timeout = request_timeout
        self._client = client.ApiClient(configuration)
        self._api = client.CustomObjectsApi(self._client)

    def get_status(self, plural: str, name: str) -> dict[str, Any]:
        obj = self._call(
            self._api.get_namespaced_custom_object_status,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
        )
        status = obj.get("status") if isinstance(obj, dict) else None
        return status if isinstance(status, dict) else {}

    def apply_status(self, plural: str, kind: str, name: str, status: dict[str, Any]) -> None:
        self._call(
            self._api.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
            apply_body(kind, self.namespace, name, status),
            field_manager=FIELD_MANAGER,
            force=True,
            # the client's default is merge-patch; the apply-patch content type makes it a
            # server-side apply (the client sends the dict as JSON, which is valid YAML)
            _content_type=APPLY_PATCH,
        )

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return method(*args, _request_timeout=self.request_timeout, **kwargs)
        except ApiException as exc:
            raise StatusApiError(exc.status, _api_message(exc), _retry_after(exc)) from exc
        except Exception as exc:  # connection refused, TLS, timeouts: urllib3's errors
            raise StatusApiError(None, f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        client: Any = self._client
        client.close()


def _api_message(exc: Any) -> str:
    import json

    try:
        body = json.loads(exc.body)
        return f"{exc.status} {body.get('reason', '')}: {body.get('message', '')}"
    except (TypeError, ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"


def _retry_after(exc: Any) -> float | None:
    try:
        value = exc.headers.get("Retry-After") if exc.headers else None
        return None if value is None else float(value)
    except (TypeError, ValueError, AttributeError):
        return None


# --- the reporter -----------------------------------------------------------------------


class _Retry(Exception):
    """Something is left to write; try again after a backoff."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class KubernetesReporter(Reporter):
    """See the module docstring. ``api`` defaults to :class:`KubernetesStatusApi`.

    Args:
        namespace, name: the FederatedTraining (its FLClients are in the same namespace).
        kubeconfig: a kubeconfig file instead of the pod's service account.
        configuration: a ready ``kubernetes.client.Configuration`` instead of either.
        service_account_dir: where the pod's service account token and CA are mounted.
        api: any :class:`StatusApi` (tests).
        flush_timeout: how long :meth:`close` waits for the last state to be written.
        backoff_initial, backoff_max: seconds between retries after a failure, doubling.
        request_timeout: of each request.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        kubeconfig: Path | str | None = None,
        configuration: Any | None = None,
        service_account_dir: Path | str = SERVICE_ACCOUNT_DIR,
        api: StatusApi | None = None,
        flush_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        request_timeout: float = 10.0,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.api: StatusApi = (
            api
            if api is not None
            else KubernetesStatusApi(
                namespace,
                kubeconfig=kubeconfig,
                configuration=configuration,
                service_account_dir=service_account_dir,
                request_timeout=request_timeout,
            )
        )
        self.flush_timeout = flush_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.requests = 0
        """Requests made so far (gets and applies), for benchmarks and tests."""
        self.writes = 0
        """Successful applies so far."""
        self._state = StatusState()
        self._cond = threading.Condition()
        self._dirty = False
        self._busy = False
        self._closing = False
        self._deadline: float | None = None
        self._seeded = False
        self._seed: dict[str, Any] | None = None
        self._client_seeds: dict[str, dict[str, Any] | None] = {}
        self._written_training: dict[str, Any] | None = None
        self._written_clients: dict[str, dict[str, Any]] = {}
        self._refused: dict[str, dict[str, Any]] = {}
        """Clients refused with 403/404 -> the status refused; tried again when it changes."""
        self._warned: set[str] = set()
        self._thread = threading.Thread(
            target=self._run, name=f"fedwarden-status-{namespace}/{name}", daemon=True
        )
        self._thread.start()

    # --- events (the aggregator's thread: update the state, wake the writer) -------------

    def _update(self, change: Callable[[StatusState], None], *, write: bool) -> None:
        with self._cond:
            change(self._state)
            if write:
                self._dirty = True
                self._cond.notify_all()

    def resume(self, last_round: RoundFinished | None) -> None:
        if last_round is not None:
            self._update(lambda s: s.round_finished(last_round, replayed=True), write=False)

    def training_started(self, event: TrainingStarted) -> None:
        self._update(lambda s: s.training_started(event), write=True)

    def round_finished(self, event: RoundFinished) -> None:
        self._update(lambda s: s.round_finished(event, replayed=event.replayed), write=True)

    def training_finished(self, event: TrainingFinished) -> None:
        self._update(lambda s: s.training_finished(event), write=True)

    def model_exported(self, event: ModelExported) -> None:
        self._update(lambda s: s.model_exported(event), write=True)

    def event(self, event: Event) -> None:
        """Round starts, refusals and flags change nothing the resources show."""

    def recorded_progress(self) -> RecordedProgress | None:
        """The rounds and ε on the training's status: the durable record of what was spent,
        which survives the loss of the aggregator's checkpoint volume. ``None`` when the Role
        may not read it (logged). Raises :class:`OSError` when the API server cannot be asked:
        without the answer, spending privacy could spend it twice."""
        try:
            status = self._request(lambda: self.api.get_status(TRAININGS, self.name))
        except StatusApiError as exc:
            if exc.status == 403:
                log.warning(
                    "%s/%s: may not read the training's status (%s); cannot check that no "
                    "privacy budget was spent before",
                    self.namespace,
                    self.name,
                    exc.message,
                )
                return None
            raise OSError(
                f"cannot read FederatedTraining {self.namespace}/{self.name}'s status to check "
                f"what privacy budget was spent: {exc.message}"
            ) from exc
        epsilon = status.get("epsilonSpent")
        return RecordedProgress(
            rounds=int(status.get("round") or 0),
            epsilon=None if epsilon is None else float(epsilon),
            where=f"FederatedTraining {self.namespace}/{self.name}'s status",
        )

    def state(self) -> StatusState:
        """A copy of the state the events built."""
        with self._cond:
            return self._state.copy()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the latest state is written (or given up on); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._dirty or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        """Write the last state, waiting at most ``flush_timeout`` seconds, and stop."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + self.flush_timeout
            self._cond.notify_all()
        self._thread.join(self.flush_timeout + 1.0)
        if self._thread.is_alive() or self._dirty:
            log.warning(
                "%s/%s: the last status was not written within %.3g s",
                self.namespace,
                self.name,
                self.flush_timeout,
            )
        closer = getattr(self.api, "close", None)
        if callable(closer):
            closer()

    # --- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.backoff_initial
        failing = False
        while True:
            with self._cond:
                while not self._dirty and not self._closing:
                    self._cond.wait()
                if not self._dirty:
                    return  # closing, nothing left
                if self._closing and self._past_deadline():
                    return
                self._dirty = False
                self._busy = True
                state = self._state.copy()
            try:
                self._sync(state)
            except _Retry as exc:
                wait = max(backoff, exc.retry_after or 0.0)
                (log.debug if failing else log.warning)(
                    "%s/%s: status not written (%s); retrying in %.3g s",
                    self.namespace,
                    self.name,
                    exc.reason,
                    wait,
                )
                failing = True
                backoff = min(2 * backoff, self.backoff_max)
                with self._cond:
                    self._dirty = True
                    self._busy = False
                    self._cond.notify_all()
                    end = time.monotonic() + wait
                    while True:  # events arriving meanwhile coalesce into the next attempt
                        limit = end if self._deadline is None else min(end, self._deadline)
                        left = limit - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    if self._closing and self._past_deadline():
                        return
                continue
            except Exception:  # a bug must not kill the writer
                log.exception("%s/%s: the status writer failed", self.namespace, self.name)
            else:
                if failing:
                    log.info("%s/%s: status written again", self.namespace, self.name)
                failing = False
                backoff = self.backoff_initial
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            log.debug("%s", message)
            return
        self._warned.add(key)
        log.warning("%s", message)

    def _request(self, call: Callable[[], Any]) -> Any:
        self.requests += 1
        return call()

    def _sync(self, state: StatusState) -> None:
        """Write what differs from the last write; raise _Retry if something is left."""
        if not self._seeded:
            try:
                self._seed = self._request(lambda: self.api.get_status(TRAININGS, self.name))
            except StatusApiError as exc:
                if exc.status == 403:
                    self._warn_once(
                        "seed-403",
                        f"{self.namespace}/{self.name}: may not read the training's status "
                        f"({exc.message}); writing without the earlier values",
                    )
                    self._seed = None
                else:
                    raise _Retry(f"reading the training: {exc.message}", exc.retry_after) from exc
            self._seeded = True
        desired = training_status(self._seed, state, warn=self._warn_once)
        if desired != self._written_training:
            try:
                self._request(
                    lambda: self.api.apply_status(
                        TRAININGS, "FederatedTraining", self.name, desired
                    )
                )
            except StatusApiError as exc:
                if exc.retryable or exc.status == 403:
                    raise _Retry(f"FederatedTraining: {exc.message}", exc.retry_after) from exc
                log.error(
                    "%s/%s: the API server refused the status %s: %s",
                    self.namespace,
                    self.name,
                    desired,
                    exc.message,
                )
            else:
                self.writes += 1
            self._written_training = desired
        left: list[str] = []
        # bans first: they matter most, and a later failure must not hold them back
        names = sorted(state.clients, key=lambda c: (state.clients[c].ban_reason is None, c))
        for client in names:
            if self._closing and self._past_deadline():
                raise _Retry("the flush deadline passed")
            problem = self._sync_client(client, state.clients[client])
            if problem is not None:
                left.append(problem)
        if left:
            raise _Retry(
                "; ".join(left[:3]) + (f" (and {len(left) - 3} more)" if len(left) > 3 else "")
            )

    def _sync_client(self, client: str, facts: ClientFacts) -> str | None:
        """Write one FLClient if its status changed; a message if it should be retried."""
        seed_needed = self._seed is not None and int(self._seed.get("round") or 0) > 0
        if seed_needed and client not in self._client_seeds:
            try:
                self._client_seeds[client] = self._request(
                    lambda: self.api.get_status(CLIENTS, client)
                )
            except StatusApiError as exc:
                if exc.status in (403, 404):
                    self._client_seeds[client] = None
                else:
                    return f"FLClient {client}: {exc.message}"
        desired = client_status(self._client_seeds.get(client), facts)
        if not desired or desired == self._written_clients.get(client):
            return None
        if self._refused.get(client) == desired:
            return None
        try:
            self._request(lambda: self.api.apply_status(CLIENTS, "FLClient", client, desired))
        except StatusApiError as exc:
            if exc.status in (403, 404):
                self._refused[client] = desired
                self._warn_once(
                    f"client:{client}",
                    f"{self.namespace}/{client}: FLClient status not written ({exc.message}); "
                    + (
                        "the aggregator's Role does not name it (enrolled later?)"
                        if exc.status == 403
                        else "no such FLClient"
                    ),
                )
                return None
            if exc.retryable:
                return f"FLClient {client}: {exc.message}"
            log.error(
                "%s/%s: the API server refused the status %s: %s",
                self.namespace,
                client,
                desired,
                exc.message,
            )
            self._refused[client] = desired
            return None
        self.writes += 1
        self._written_clients[client] = desired
        self._refused.pop(client, None)
        return None
