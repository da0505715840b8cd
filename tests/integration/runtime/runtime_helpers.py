"""Helpers for the runtime's integration tests: a training's PKI on disk, an in-process
aggregator, and a raw gRPC client that can send anything (forged, tampered, garbage).

A module with a unique name rather than conftest, so test files import it unambiguously.
Every call has a deadline; only 127.0.0.1 is used.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fedwarden.aggregator import (
    Aggregator,
    AggregatorConfig,
    CRLRevoker,
    RecordingReporter,
    Reporter,
    ServerTLS,
)
from fedwarden.client import BuiltinTask, ClientConfig, FederationClient
from fedwarden.pipeline import ParameterLayout
from fedwarden.pipeline.round import Pipeline, PipelineConfig
from fedwarden.pki import (
    TLSDirectory,
    TrainingPKI,
    TrainingRef,
    load_certificate,
    load_private_key,
)
from fedwarden.wire import (
    REASON_METADATA_KEY,
    Envelope,
    channel_credentials,
    channel_options,
    iter_chunks,
    method_path,
    new_nonce,
    pb,
    reason_of_details,
    sign_envelope,
    tensor_digest,
)

TIMEOUT = 30.0  # a bound against hangs, never a performance requirement
OPENSSL = shutil.which("openssl")
TASK = "digits-logreg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RuntimePKI:
    """A training's CA directory (made 30 days ago, so expired certificates can be issued)
    and a TLS directory per client, issued on demand."""

    root: Path
    pki: TrainingPKI
    training: TrainingRef
    clients: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path) -> RuntimePKI:
        training = TrainingRef("team-a", "digits")
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        pki = TrainingPKI.init(root / "ca", training, now=past)
        pki.issue_server(["localhost"], ["127.0.0.1"], keep_key=True)
        return cls(root, pki, training)

    @property
    def ca_dir(self) -> Path:
        return self.pki.dir.root

    def tls(self) -> ServerTLS:
        return ServerTLS.from_pki_dir(self.ca_dir)

    def client(self, name: str) -> TLSDirectory:
        if name not in self.clients:
            issued = self.pki.issue_client(name)
            self.clients[name] = self.root / "clients" / name
            self.pki.write_tls_directory(self.clients[name], issued)
        return TLSDirectory(self.clients[name])

    def expired_client(self, name: str) -> TLSDirectory:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
        issued = self.pki.ca.issue_client(name, now=past, duration=dt.timedelta(days=1))
        out = self.root / "expired" / name
        self.pki.write_tls_directory(out, issued)
        return TLSDirectory(out)

    def client_config(self, name: str, port: int, **overrides: Any) -> ClientConfig:
        tls = self.client(name)
        settings: dict[str, Any] = {
            "server": f"127.0.0.1:{port}",
            "cert": tls.cert,
            "key": tls.key,
            "ca": tls.ca,
            "backoff_initial": 0.1,
            "backoff_max": 1.0,
            "give_up_after": 60.0,
            "rpc_timeout": 10.0,
        }
        settings.update(overrides)
        return ClientConfig(**settings)


def make_aggregator(
    pki: RuntimePKI,
    *,
    rounds: int,
    min_available: int,
    pipeline_config: PipelineConfig | None = None,
    reporter: Reporter | None = None,
    checkpoint_dir: Path | None = None,
    revoke: bool = True,
    metrics: bool = False,
    dim: int | None = None,
    layout: ParameterLayout | None = None,
    output_model_dir: Path | None = None,
    **config: Any,
) -> tuple[Aggregator, RecordingReporter]:
    """An aggregator on 127.0.0.1:0 for the digits task (or zeros of ``dim``, laid out as
    ``layout``, evaluated by the clients), started."""
    recording = RecordingReporter()
    task = BuiltinTask(TASK) if dim is None else None
    initial = task.initial_parameters() if task is not None else np.zeros(dim or 1, np.float32)
    settings: dict[str, Any] = {
        "round_timeout": 60.0,
        "stall_timeout": 15.0,
        "poll_timeout": 1.0,
        "finish_grace": 3.0,
    }
    settings.update(config)
    pipe = Pipeline(
        pipeline_config or PipelineConfig.recommended(),
        dim=int(initial.size),
        population=max(min_available, 1),
    )
    reporters: Reporter = recording
    if reporter is not None:
        from fedwarden.aggregator import MultiReporter

        reporters = MultiReporter([recording, reporter])
    agg = Aggregator(
        AggregatorConfig(rounds=rounds, min_available=min_available, **settings),
        pipe,
        initial,
        tls=pki.tls(),
        revoker=CRLRevoker(pki.ca_dir) if revoke else None,
        reporter=reporters,
        evaluator=task.evaluate if task is not None else None,
        checkpoint_dir=checkpoint_dir,
        metrics_address=("127.0.0.1", 0) if metrics else None,
        layout=layout if layout is not None else (task.layout if task is not None else None),
        output_model_dir=output_model_dir,
    )
    agg.start(timeout=TIMEOUT)
    return agg, recording


class ClientThreads:
    """Honest clients of the digits task, each :class:`FederationClient` on its own thread."""

    def __init__(self, pki: RuntimePKI, port: int, names: list[str], **config: Any) -> None:
        self.results: dict[str, Any] = {}
        self.clients: dict[str, FederationClient] = {}
        for i, name in enumerate(names):
            task = BuiltinTask(
                TASK, partition="iid", client_index=i, num_clients=len(names), seed=i
            )
            self.clients[name] = FederationClient(pki.client_config(name, port, **config), task)
        self.threads = [
            threading.Thread(target=self._run, args=(n,), name=f"client-{n}", daemon=True)
            for n in names
        ]

    def _run(self, name: str) -> None:
        self.results[name] = self.clients[name].run()

    def start(self) -> ClientThreads:
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout: float = TIMEOUT) -> None:
        for t in self.threads:
            t.join(timeout)

    def stop(self) -> None:
        for c in self.clients.values():
            c.stop()
        self.join()


# --- a raw client: any message, however malformed -------------------------------------------


@dataclass
class Outcome:
    accepted: bool
    code: grpc.StatusCode
    reason: str | None
    details: str


class RawClient:
    """A gRPC client of the Federation service that sends what it is told to."""

    def __init__(self, tls: TLSDirectory, port: int) -> None:
        self.cert_pem = tls.cert.read_bytes()
        self.key_pem = tls.key.read_bytes()
        self.cert = load_certificate(self.cert_pem)
        self.key = load_private_key(self.key_pem)
        self.channel = grpc.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(tls.ca.read_bytes(), self.cert_pem, self.key_pem),
            options=channel_options(),
        )
        self._join = self.channel.unary_unary(
            method_path("Join"),
            request_serializer=pb.JoinRequest.SerializeToString,
            response_deserializer=pb.JoinReply.FromString,
        )
        self._poll = self.channel.unary_unary(
            method_path("Poll"),
            request_serializer=pb.PollRequest.SerializeToString,
            response_deserializer=pb.Instruction.FromString,
        )
        self._model = self.channel.unary_stream(
            method_path("GetModel"),
            request_serializer=pb.ModelRequest.SerializeToString,
            response_deserializer=pb.TensorChunk.FromString,
        )
        self._submit_raw = self.channel.stream_unary(
            method_path("SubmitUpdate"),
            request_serializer=None,  # bytes as they are
            response_deserializer=pb.SubmitReply.FromString,
        )
        self.join_reply: pb.JoinReply | None = None

    def close(self) -> None:
        self.channel.close()

    def join(self) -> pb.JoinReply:
        self.join_reply = self._join(pb.JoinRequest(), timeout=TIMEOUT)
        return self.join_reply

    def poll_until_train(self, after: tuple[int, bytes] = (0, b"")) -> pb.Instruction:
        """Poll until told to train (or that the training is over)."""
        deadline = 120.0
        import time

        end = time.monotonic() + deadline
        while time.monotonic() < end:
            instruction = self._poll(
                pb.PollRequest(last_round=after[0], last_round_token=after[1]), timeout=TIMEOUT
            )
            if instruction.kind in (pb.Instruction.TRAIN, pb.Instruction.DONE):
                return instruction
        raise TimeoutError("never sampled")

    def get_model(self, round: int, token: bytes) -> np.ndarray:
        data = b"".join(
            c.data
            for c in self._model(pb.ModelRequest(round=round, round_token=token), timeout=TIMEOUT)
        )
        return np.frombuffer(data, dtype="<f4").astype(np.float32)

    def try_get_model(self, round: int, token: bytes) -> Outcome:
        try:
            self.get_model(round, token)
        except grpc.RpcError as exc:
            return _outcome(exc)
        return Outcome(True, grpc.StatusCode.OK, None, "")

    def envelope(
        self, instruction: pb.Instruction, update: np.ndarray, **overrides: Any
    ) -> Envelope:
        assert self.join_reply is not None
        fields: dict[str, Any] = {
            "training_uid": self.join_reply.training_uid,
            "round": instruction.round,
            "round_token": instruction.round_token,
            "client_id": self.join_reply.client_id,
            "base_digest": instruction.base_digest,
            "payload_digest": tensor_digest(update),
            "num_values": int(update.size),
            "num_examples": 10,
            "nonce": new_nonce(),
        }
        fields.update(overrides)
        return Envelope(**fields)

    def signed_messages(
        self, envelope: Envelope, update: np.ndarray, *, key: Any = None, chunk_bytes: int = 1024
    ) -> list[bytes]:
        signed = sign_envelope(key if key is not None else self.key, envelope)
        messages = [signed.header().SerializeToString()]
        messages += [
            pb.UpdateMessage(chunk=bytes(data)).SerializeToString()
            for _, data in iter_chunks(update.astype(np.float32), chunk_bytes)
        ]
        return messages

    def submit(self, messages: Iterable[bytes], timeout: float = TIMEOUT) -> Outcome:
        try:
            reply = self._submit_raw(iter(messages), timeout=timeout)
        except grpc.RpcError as exc:
            return _outcome(exc)
        return Outcome(reply.accepted, grpc.StatusCode.OK, reply.reason, reply.message)


def _outcome(exc: grpc.RpcError) -> Outcome:
    reason = None
    for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == REASON_METADATA_KEY:
            reason = str(value)
    details = exc.details() or ""  # type: ignore[attr-defined]
    return Outcome(False, exc.code(), reason or reason_of_details(details), details)  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=64)
def _task(index: int, num_clients: int) -> BuiltinTask:
    return BuiltinTask(TASK, partition="iid", client_index=index, num_clients=num_clients, seed=0)


_task_lock = threading.Lock()


def honest_update(model: np.ndarray, index: int = 0, num_clients: int = 1) -> np.ndarray:
    with _task_lock:
        return _task(index, num_clients).fit(model, 1).update


def stalling_messages(first: list[bytes], stall: threading.Event, wait: float) -> Iterator[bytes]:
    """Yield ``first``, then block until ``stall`` is set or ``wait`` seconds pass."""
    yield from first
    stall.wait(wait)


def run_openssl(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        errors="replace",  # a server may send HTTP/2 frames after the handshake
        timeout=timeout,
        check=False,
        env={**os.environ, "OPENSSL_CONF": os.devnull},
    )


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT, step: float = 0.05) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
