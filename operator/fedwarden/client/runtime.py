"""The client runtime: dial out to the aggregator over mutual TLS and take part in rounds.

One :class:`FederationClient` runs the loop::

    Join -> Poll (long) -> GetModel -> task.fit -> [local DP] -> sign -> SubmitUpdate -> Poll

- **mTLS**: the client presents its certificate and key and trusts the training's CA bundle
  (``grpc.ssl_channel_credentials``); the server's certificate must carry the address's name
  (``server_name`` overrides it only when the address is not one of its names).
- **Retries**: UNAVAILABLE (the aggregator restarting, a network cut) and lost streams are retried
  with exponential backoff and jitter; the client gives up after ``give_up_after`` seconds of
  consecutive failures.
- **Certificate reload**: before each call the client checks whether its certificate, key or CA
  bundle changed on disk (a renewal, a CA rotation) and reconnects with the new ones.
- **Diagnosis**: a failed handshake is explained with :func:`fedwarden.pki.explain_tls_error`
  (and, when the TLS library's alert is not specific, a probe with
  :func:`fedwarden.pki.diagnose_endpoint`): the log says *expired on …*, *unknown issuer …*, not
  just "handshake failed". A refusal by the aggregator logs its reason code.
- **Verification**: the downloaded model must have the digest the round announced.
- **The app**: the task is any :class:`~fedwarden.client.apps.Task`; an
  :class:`~fedwarden.client.apps.App` also learns the model's layout from the aggregator (a
  Flower client whose ``get_parameters`` returns nothing) and, when the aggregator asks for
  federated evaluation, evaluates each round's global model on its held-out data; the metrics
  travel in the signed envelope. What the app returns is checked (size, finiteness) before it is
  signed; an app that fails ends the run with status ``failed`` and reason ``app-error``.
- **Local DP** (optional, or required by the aggregator): the update is clipped and noised with
  :func:`fedwarden.pipeline.local_dp.privatize_locally` before it is signed.
- **Record-level DP** (when the aggregator announces ``record_dp``: a target ε and δ per site):
  the app trains with DP-SGD under its own accountant and reports the ε it has spent in its fit
  metrics (``epsilon``, and ``budget_spent`` = 1 when another round would exceed its budget);
  the runtime signs both into the envelope. An app that reports no ε fails the run; an update
  whose ε is above the announced budget is never sent, and an app that refuses to train
  (:class:`~fedwarden.pipeline.errors.PrivacyBudgetExhaustedError`) ends the run: status
  ``done``, reason ``budget-exhausted``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from fedwarden.client.apps import App, AppError, Task, check_finite
from fedwarden.pipeline import ParameterLayout
from fedwarden.pipeline.dp import noise_generator
from fedwarden.pipeline.errors import PrivacyBudgetExhaustedError
from fedwarden.pipeline.local_dp import privatize_locally
from fedwarden.pki import (
    KeyPairWatcher,
    PKIError,
    Problem,
    diagnose_endpoint,
    explain_tls_error,
    load_certificate,
    load_private_key,
)
from fedwarden.wire import (
    MAX_EVAL_METRICS,
    METRIC_NAME,
    REASON_METADATA_KEY,
    REASONS,
    Envelope,
    TensorAssembler,
    as_wire_array,
    channel_credentials,
    channel_options,
    fedwarden_pb2_grpc,
    iter_chunks,
    new_nonce,
    pb,
    reason_of_details,
    sign_envelope,
    tensor_digest,
)

log = logging.getLogger("fedwarden.client")

F32 = npt.NDArray[np.float32]


GIVE_UP_AFTER = 600.0
"""Seconds a client keeps trying to reach its aggregator by default: long enough to outlast an
aggregator pod's replacement (the Job's backoff, scheduling, start) on a busy cluster."""


@dataclass(frozen=True)
class ClientConfig:
    """How a client connects and behaves.

    Attributes:
        server: ``host:port`` of the aggregator.
        cert, key, ca: the client's certificate and key, and the training's CA bundle.
        server_name: the name the server's certificate must carry, when the address is not one
            of its names (``grpc.ssl_target_name_override``).
        training_uid: the training to join (empty: whichever the server runs).
        rpc_timeout: deadline of short calls, and the margin added to long ones.
        backoff_initial, backoff_max: exponential backoff between retries, with jitter.
        give_up_after: seconds of consecutive failures to reach the server before giving up
            (``None``: never).
        local_dp_clip, local_dp_noise: clip norm C and noise multiplier σ of local DP; the
            aggregator's announced settings take precedence when it announces any.
        dp_seed: seeds the local-DP noise (tests only; ``None`` uses the OS CSPRNG).
        max_rounds: stop after training this many rounds (``None``: until the server says DONE).
        submit_attempts: attempts at submitting one round's update when the stream is lost.
    """

    server: str
    cert: Path
    key: Path
    ca: Path
    server_name: str | None = None
    training_uid: str = ""
    rpc_timeout: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 15.0
    give_up_after: float | None = GIVE_UP_AFTER
    local_dp_clip: float | None = None
    local_dp_noise: float | None = None
    dp_seed: int | None = None
    max_rounds: int | None = None
    submit_attempts: int = 3

    def __post_init__(self) -> None:
        host, sep, port = self.server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"the server address must be host:port, got {self.server!r}")
        if (self.local_dp_clip is None) != (self.local_dp_noise is None):
            raise ValueError("local DP needs both a clip norm and a noise multiplier")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_initial must be > 0 and <= backoff_max")


@dataclass
class RoundOutcome:
    """What became of the client's part in one round."""

    round: int
    status: str  # "accepted" | "rejected" | "skipped"
    reason: str
    message: str


EXIT_CODES = {"done": 0, "stopped": 0, "failed": 1, "refused": 3, "unreachable": 4}


@dataclass
class ClientResult:
    """How the client's run ended."""

    client_id: str | None
    status: str  # "done" | "refused" | "unreachable" | "stopped" | "failed"
    reason: str
    message: str
    rounds: list[RoundOutcome] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "exit_code": self.exit_code,
            "rounds": [vars(r) for r in self.rounds],
        }


class Backoff:
    """Exponential backoff with "equal jitter": a wait in [d/2, d], d doubling up to a cap."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial, self.maximum = initial, maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2.0**self.attempt)
        self.attempt += 1
        return self._rng.uniform(ceiling / 2.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class _Stop(Exception):
    pass


class _Finished(Exception):
    def __init__(self, result: ClientResult) -> None:
        super().__init__(result.message)
        self.result = result


_TLS_TOKEN = re.compile(r"\b([A-Z][A-Z0-9_]{5,})\b")
_VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"


def explain_handshake_failure(
    details: str,
    *,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    server: str,
    server_name: str | None = None,
    probe: bool = True,
) -> list[Problem]:
    """The specific reasons behind a gRPC handshake failure (``details`` of UNAVAILABLE).

    gRPC reports the TLS library's reason (``CERTIFICATE_VERIFY_FAILED``,
    ``SSLV3_ALERT_CERTIFICATE_EXPIRED``, ...) in the status details; it is mapped with
    :func:`fedwarden.pki.explain_tls_error`, and our own certificate is examined when the server's
    alert says it refused it. When that names no specific cause, ``probe`` connects once more
    with Python's ``ssl`` (:func:`fedwarden.pki.diagnose_endpoint`), which sees the server's
    certificate and says what is wrong with it.
    """
    host, _, port = server.rpartition(":")
    name = server_name or host
    tokens = [t for t in _TLS_TOKEN.findall(details) if t not in ("SSL_ERROR_SSL", "UNKNOWN")]
    error: ssl.SSLError
    if _VERIFY_FAILED in tokens:
        error = ssl.SSLCertVerificationError(1, details)
        error.verify_code = 0
        error.verify_message = "the server's certificate failed verification"
    else:
        error = ssl.SSLError(1, details)
        error.reason = tokens[-1] if tokens else ""
    problems = explain_tls_error(
        error,
        side="client",
        ca_bundle=ca_pem,
        own_certificate=cert_pem,
        own_key=key_pem,
        expected_name=name,
    )
    generic = {"handshake-failed", "verify-failed", "certificate-rejected"}
    if probe and all(p.code in generic for p in problems):
        try:
            report = diagnose_endpoint(
                host.strip("[]"), int(port), ca_pem, cert_pem, key_pem, name, timeout=5.0
            )
        except (PKIError, OSError, ValueError) as exc:
            log.debug("endpoint probe failed: %s", exc)
        else:
            specific = [p for p in report.problems if p.code not in generic]
            if specific:
                return specific
    return problems


def _looks_like_tls(details: str) -> bool:
    lowered = details.lower()
    return any(w in lowered for w in ("handshake", "ssl", "tls", "certificate", "verification"))


class FederationClient:
    """One client of a training. See the module docstring.

    ``run()`` blocks until the server says the training is over, the client is refused, the
    server cannot be reached for ``give_up_after`` seconds, or :meth:`stop` is called.
    """

    def __init__(self, config: ClientConfig, task: Task) -> None:
        self.config = config
        self.task = task
        self.client_id: str | None = None
        self.outcomes: list[RoundOutcome] = []
        self._stop = threading.Event()
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)
        self._channel: grpc.Channel | None = None
        self._stub: Any = None
        self._watcher: KeyPairWatcher | None = None
        self._ca_state: tuple[int, int, int] | None = None
        self._ca_pem = b""
        self._key: PrivateKeyTypes | None = None
        self._cert: x509.Certificate | None = None
        self._joined = False
        self._join: pb.JoinReply | None = None
        self._last_round = 0
        self._last_token = b""
        self._rounds_trained = 0
        self._failing_since: float | None = None
        self._last_explained: str | None = None
        self._dp_rng = noise_generator(config.dp_seed)
        self.last_problems: list[Problem] = []
        """The specific reasons of the failed handshakes since the last call that went through
        (``pki check``'s codes)."""
        self._channel_lock = threading.Lock()

    # --- the loop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end; in-flight calls are cancelled."""
        self._stop.set()
        with self._channel_lock:
            if self._channel is not None:
                self._channel.close()

    def run(self) -> ClientResult:
        try:
            while True:
                self._check_stop()
                try:
                    self._ensure_channel()
                    if not self._joined:
                        self._do_join()
                    instruction = self._poll()
                    self._succeeded()
                    self._handle(instruction)
                except grpc.RpcError as exc:
                    self._on_rpc_error(exc, "poll")
                except _Retry:
                    continue
        except _Finished as finished:
            return finished.result
        except AppError as exc:
            log.error("the app failed: %s", exc)
            return self._result("failed", "app-error", str(exc))
        except PrivacyBudgetExhaustedError as exc:
            log.warning("this site's privacy budget is spent; leaving: %s", exc)
            return self._result("done", "budget-exhausted", str(exc))
        except _Stop:
            return self._result("stopped", "stopped", "stopped on request")
        except ValueError:
            if self._stop.is_set():  # stop() closed the channel under a call in flight
                return self._result("stopped", "stopped", "stopped on request")
            raise
        finally:
            self._close_channel()

    def _result(self, status: str, reason: str, message: str) -> ClientResult:
        return ClientResult(self.client_id, status, reason, message, list(self.outcomes))

    def _finish(self, status: str, reason: str, message: str) -> None:
        raise _Finished(self._result(status, reason, message))

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stop

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(max(0.0, seconds)):
            raise _Stop

    def _succeeded(self) -> None:
        self._failing_since = None
        self._backoff.reset()
        self._last_explained = None
        self.last_problems = []

    def _handle(self, instruction: pb.Instruction) -> None:
        kind = instruction.kind
        if kind == pb.Instruction.DONE:
            log.info("the aggregator ended the training: %s", instruction.message)
            self._finish("done", instruction.reason or "done", instruction.message)
        if kind == pb.Instruction.REFUSED:
            log.error("the aggregator refuses us: %s (%s)", instruction.message, instruction.reason)
            self._finish("refused", instruction.reason or "refused", instruction.message)
        if kind == pb.Instruction.WAIT:
            if instruction.retry_after_seconds > 0:
                self._sleep(instruction.retry_after_seconds)
            return
        if kind == pb.Instruction.TRAIN:
            self._take_part(instruction)
            if (
                self.config.max_rounds is not None
                and self._rounds_trained >= self.config.max_rounds
            ):
                self._finish("done", "max-rounds", f"trained {self._rounds_trained} rounds")

    # --- channel and credentials ---------------------------------------------------------

    def _files_changed(self) -> bool:
        if self._watcher is None:
            return True
        try:
            pair = self._watcher.changed()
            st = os.stat(self.config.ca)
        except (PKIError, OSError) as exc:
            log.warning("keeping the current certificate: %s", exc)
            return False
        ca_changed = (st.st_mtime_ns, st.st_size, st.st_ino) != self._ca_state
        return pair is not None or ca_changed

    def _ensure_channel(self) -> None:
        if self._channel is not None and not self._files_changed():
            return
        if self._channel is not None:
            log.info("certificate files changed; reconnecting with the new ones")
        self._close_channel()
        watcher = self._watcher or KeyPairWatcher(self.config.cert, self.config.key)
        self._watcher = watcher
        ca_pem = Path(self.config.ca).read_bytes()
        st = os.stat(self.config.ca)
        self._ca_state = (st.st_mtime_ns, st.st_size, st.st_ino)
        self._ca_pem = ca_pem
        self._cert = load_certificate(watcher.cert_pem, str(self.config.cert))
        self._key = load_private_key(watcher.key_pem, str(self.config.key))
        credentials = channel_credentials(ca_pem, watcher.cert_pem, watcher.key_pem)
        with self._channel_lock:
            self._check_stop()
            self._channel = grpc.secure_channel(
                self.config.server,
                credentials,
                options=channel_options(server_name=self.config.server_name),
            )
            self._stub = _stub(self._channel)
        self._joined = False

    def _close_channel(self) -> None:
        with self._channel_lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = None
            self._stub = None

    # --- errors --------------------------------------------------------------------------

    def _reason(self, exc: grpc.RpcError) -> str | None:
        try:
            for key, value in exc.trailing_metadata() or ():
                if key == REASON_METADATA_KEY:
                    return str(value)
        except Exception:
            pass
        return reason_of_details(exc.details())

    def _on_rpc_error(self, exc: grpc.RpcError, during: str) -> None:
        """Retry, or end the run, after a failed call."""
        self._check_stop()
        code = exc.code()
        details = exc.details() or ""
        reason = self._reason(exc)
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) and (
            reason is None or reason not in REASONS or REASONS[reason].stage == "peer"
        ):
            log.error("the aggregator refused our certificate during %s: %s", during, details)
            self._finish("refused", reason or "refused", details)
        if code == grpc.StatusCode.FAILED_PRECONDITION and during == "join":
            log.error("the aggregator refused to let us join: %s", details)
            self._finish("failed", reason or "refused", details)
        if code == grpc.StatusCode.UNAVAILABLE and _looks_like_tls(details):
            self._explain_tls(details, probe=True)
        elif code == grpc.StatusCode.UNAVAILABLE and "socket closed" in details.lower():
            # a server that refuses our certificate closes the socket without a word (TLS 1.3);
            # so does one that just died: name the cause only if our certificate has one
            if not self._explain_tls(details, probe=False):
                log.warning("the aggregator at %s closed the connection", self.config.server)
        elif code == grpc.StatusCode.UNAVAILABLE:
            log.warning("the aggregator at %s is unavailable: %s", self.config.server, details)
        else:
            log.warning("%s failed: %s %s", during, code.name, details)
        self._joined = False
        self._back_off()

    def _back_off(self) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif (
            self.config.give_up_after is not None
            and now - self._failing_since > self.config.give_up_after
        ):
            why = "; ".join(f"{p.code}: {p.message}" for p in self.last_problems)
            self._finish(
                "unreachable",
                "unreachable",
                f"could not reach the aggregator at {self.config.server} for "
                f"{now - self._failing_since:.0f} s" + (f" ({why})" if why else ""),
            )
        self._close_channel()
        self._sleep(self._backoff.next())

    def _explain_tls(self, details: str, *, probe: bool) -> bool:
        """Log why the handshake failed; False when nothing specific was found."""
        if self._watcher is None:
            return False
        problems = explain_handshake_failure(
            details,
            ca_pem=self._ca_pem,
            cert_pem=self._watcher.cert_pem,
            key_pem=self._watcher.key_pem,
            server=self.config.server,
            server_name=self.config.server_name,
            probe=probe and self._last_explained is None,
        )
        named = [p for p in problems if p.code not in ("handshake-failed", "verify-failed")]
        if not named and not probe:
            return False
        if not named and self._last_explained is not None:
            return True  # the same failure again: what the probe found still says more
        text = "; ".join(f"{p.code}: {p.message}" for p in named or problems)
        self.last_problems = named or problems
        if text != self._last_explained:
            log.error("TLS handshake with %s failed: %s", self.config.server, text or details)
            self._last_explained = text
        return True

    # --- calls ---------------------------------------------------------------------------

    def _do_join(self) -> None:
        try:
            reply: pb.JoinReply = self._stub.Join(
                pb.JoinRequest(
                    training_uid=self.config.training_uid,
                    num_parameters=self.task.num_parameters,
                ),
                timeout=self.config.rpc_timeout,
            )
        except grpc.RpcError as exc:
            self._on_rpc_error(exc, "join")
            raise _Retry from None
        self._adopt_layout(reply)
        self._join = reply
        self._joined = True
        self.client_id = reply.client_id
        log.info(
            "joined training %s as %s (%d parameters, round %d)",
            reply.training_uid,
            reply.client_id,
            reply.num_parameters,
            reply.round,
        )

    def _announced(self, reply: pb.JoinReply | None = None) -> dict[str, Any]:
        """What the aggregator asked of clients when we joined (JoinReply.task_json)."""
        reply = reply if reply is not None else self._join
        if reply is None or not reply.task_json:
            return {}
        try:
            announced = json.loads(reply.task_json)
        except ValueError:
            return {}
        return announced if isinstance(announced, dict) else {}

    def _adopt_layout(self, reply: pb.JoinReply) -> None:
        layout = self._announced(reply).get("layout")
        if isinstance(layout, dict) and hasattr(self.task, "adopt_layout"):
            self.task.adopt_layout(ParameterLayout.from_dict(layout))
        if self.task.num_parameters not in (0, reply.num_parameters):
            raise AppError(
                f"the app's model has {self.task.num_parameters} parameters, the training's "
                f"{reply.num_parameters}"
            )

    def _poll(self) -> pb.Instruction:
        wait = self._join.poll_timeout_seconds if self._join is not None else 10.0
        instruction: pb.Instruction = self._stub.Poll(
            pb.PollRequest(last_round=self._last_round, last_round_token=self._last_token),
            timeout=wait + self.config.rpc_timeout,
        )
        return instruction

    def _local_dp(self) -> tuple[float, float] | None:
        announced = self._announced().get("local_dp") or {}
        if announced:
            return float(announced["clip_norm"]), float(announced["noise_multiplier"])
        if self.config.local_dp_clip is not None and self.config.local_dp_noise is not None:
            return self.config.local_dp_clip, self.config.local_dp_noise
        return None

    def _take_part(self, instruction: pb.Instruction) -> None:
        number = instruction.round
        deadline = time.monotonic() + instruction.deadline_seconds
        self._last_round, self._last_token = number, instruction.round_token
        try:
            model = self._download(instruction)
        except grpc.RpcError as exc:
            reason = self._reason(exc) or exc.code().name.lower()
            self._record(number, "skipped", reason, exc.details() or "")
            if reason in REASONS and REASONS[reason].stage == "model":
                log.warning("round %d: the model was refused: %s", number, exc.details())
                return
            self._on_rpc_error(exc, "model download")
            return
        except _ModelMismatch as exc:
            self._record(number, "skipped", "model-mismatch", str(exc))
            log.error("round %d: %s", number, exc)
            return
        evaluation = self._evaluate(model)
        update, num_examples, metrics = self._fit(model, number)
        site_privacy = self._site_privacy(metrics, number)
        dp = self._local_dp()
        if dp is not None:
            update = privatize_locally(update, dp[0], dp[1], self._dp_rng).astype(np.float32)
        self._rounds_trained += 1
        self._submit(instruction, update, num_examples, deadline, metrics, evaluation, site_privacy)

    def _site_privacy(self, metrics: dict[str, float], number: int) -> tuple[float, bool] | None:
        """Under announced record-level DP: ``(ε spent, budget spent)`` from the app's fit
        metrics. An update past the budget is not sent: the run ends."""
        announced = self._announced().get("record_dp") or {}
        if not announced:
            return None
        target, delta = float(announced["target_epsilon"]), float(announced["delta"])
        epsilon = metrics.get("epsilon")
        if epsilon is None:
            raise AppError(
                f"the training runs record-level DP (ε = {target:g} per site at δ = {delta:g}): "
                "the app must train with DP-SGD and report the ε it has spent in its fit "
                "metrics as 'epsilon' (see docs/privacy.md)"
            )
        if epsilon > target:
            raise PrivacyBudgetExhaustedError(
                f"the app reports ε = {epsilon:.4g} after round {number}, above the training's "
                f"budget ε = {target:g} (δ = {delta:g}); the update is not sent"
            )
        return float(epsilon), bool(metrics.get("budget_spent", 0.0))

    def _fit(self, model: F32, number: int) -> tuple[F32, int, dict[str, float]]:
        try:
            fit = self.task.fit(model, number)
            update_raw, num_examples, metrics = fit[0], int(fit[1]), dict(fit[2] or {})
        except (AppError, PrivacyBudgetExhaustedError):
            raise
        except Exception as exc:
            raise AppError(f"the app's fit raised {type(exc).__name__}: {exc}") from exc
        update = as_wire_array(update_raw).astype(np.float32, copy=False)
        if update.size != model.size:
            raise AppError(
                f"the app returned an update of {update.size} values for a model of {model.size}"
            )
        check_finite(update, f"the app's update in round {number}")
        return update, num_examples, metrics

    def _evaluate(self, model: F32) -> tuple[int, dict[str, float]] | None:
        """The app's evaluation of the round's global model, when the aggregator asks for it."""
        if not self._announced().get("federated_evaluation") or not isinstance(self.task, App):
            return None
        try:
            evaluation = self.task.evaluate(model)
        except AppError:
            raise
        except Exception as exc:
            raise AppError(f"the app's evaluate raised {type(exc).__name__}: {exc}") from exc
        if evaluation is None:
            return None
        metrics = {
            name: float(value)
            for name, value in list(evaluation.metrics.items())[:MAX_EVAL_METRICS]
            if METRIC_NAME.match(name) and np.isfinite(value)
        }
        return int(evaluation.num_examples), metrics

    def _download(self, instruction: pb.Instruction) -> F32:
        total = int(instruction.num_parameters)
        timeout = self.config.rpc_timeout + 4 * total / 10e6
        assembler = TensorAssembler(total)
        stream = self._stub.GetModel(
            pb.ModelRequest(round=instruction.round, round_token=instruction.round_token),
            timeout=timeout,
        )
        for chunk in stream:
            if chunk.total != total:
                raise _ModelMismatch(
                    f"the server announced {total} parameters, then sent a model of {chunk.total}"
                )
            assembler.add(chunk.data, int(chunk.offset))
        model = assembler.finish()
        if assembler.digest() != instruction.base_digest:
            raise _ModelMismatch(
                "the model's digest differs from the one the round announced: it was altered "
                "in transit or the round changed; skipping the round"
            )
        return model

    def _messages(self, header: pb.UpdateMessage, update: F32) -> Iterator[pb.UpdateMessage]:
        yield header
        chunk_bytes = self._join.max_chunk_bytes if self._join is not None else 1 << 20
        for _, data in iter_chunks(update, chunk_bytes or (1 << 20)):
            yield pb.UpdateMessage(chunk=bytes(data))

    def _submit(
        self,
        instruction: pb.Instruction,
        update: F32,
        num_examples: int,
        deadline: float,
        metrics: dict[str, float],
        evaluation: tuple[int, dict[str, float]] | None = None,
        site_privacy: tuple[float, bool] | None = None,
    ) -> None:
        number = instruction.round
        payload_digest = tensor_digest(update)
        assert self._key is not None
        for attempt in range(1, self.config.submit_attempts + 1):
            envelope = Envelope(
                training_uid=self._join.training_uid if self._join is not None else "",
                round=number,
                round_token=instruction.round_token,
                client_id=self.client_id or "",
                base_digest=instruction.base_digest,
                payload_digest=payload_digest,
                num_values=int(update.size),
                num_examples=num_examples,
                nonce=new_nonce(),
                eval_examples=0 if evaluation is None else evaluation[0],
                eval_metrics={} if evaluation is None else evaluation[1],
                site_epsilon=None if site_privacy is None else site_privacy[0],
                site_budget_spent=site_privacy is not None and site_privacy[1],
            )
            signed = sign_envelope(self._key, envelope)
            remaining = deadline - time.monotonic()
            try:
                reply: pb.SubmitReply = self._stub.SubmitUpdate(
                    self._messages(signed.header(), update),
                    timeout=max(1.0, remaining) + self.config.rpc_timeout,
                )
            except grpc.RpcError as exc:
                code = exc.code()
                reason = self._reason(exc) or code.name.lower()
                details = exc.details() or ""
                retry = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or (
                    reason in REASONS and REASONS[reason].retryable and reason != "round-closed"
                )
                if retry and attempt < self.config.submit_attempts and time.monotonic() < deadline:
                    log.warning("round %d: submission failed (%s), retrying", number, details)
                    self._sleep(self._backoff.next())
                    if code == grpc.StatusCode.UNAVAILABLE:
                        self._close_channel()
                        self._ensure_channel()
                    continue
                self._record(number, "rejected", reason, details)
                log.warning("round %d: the update was refused: %s", number, details)
                peer_refusal = reason not in REASONS or REASONS[reason].stage == "peer"
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or (
                    peer_refusal
                    and code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
                ):
                    self._on_rpc_error(exc, "submit")
                return
            self._record(number, "accepted", reply.reason, reply.message)
            log.info(
                "round %d: update accepted (%s)",
                number,
                ", ".join(f"{k}={v:.3g}" for k, v in metrics.items()),
            )
            return

    def _record(self, number: int, status: str, reason: str, message: str) -> None:
        self.outcomes.append(RoundOutcome(number, status, reason, message))


def _stub(channel: grpc.Channel) -> Any:
    stub: Any = fedwarden_pb2_grpc.FederationStub(channel)  # type: ignore[no-untyped-call]
    return stub


class _Retry(Exception):
    pass


class _ModelMismatch(Exception):
    pass
