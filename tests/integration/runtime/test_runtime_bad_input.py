"""Bad input on the update stream: each kind is refused with its reason and counted, while the
round completes with the honest clients' updates.

Oversized (announced above the maximum, or streaming past what was announced), truncated,
garbage instead of a protobuf message, a chunk that is not whole float32 values, a signed
header whose envelope does not parse, a wrong-sized tensor, NaN values (the pipeline's
validation), and a client that opens the stream and stalls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import grpc
import numpy as np
import pytest
from runtime_helpers import (
    TIMEOUT,
    ClientThreads,
    Outcome,
    RawClient,
    RuntimePKI,
    honest_update,
    make_aggregator,
    stalling_messages,
    wait_for,
)

from fedwarden.aggregator import Rejection, RoundFinished
from fedwarden.pki import sign_payload
from fedwarden.wire import SIGNING_CONTEXT, pb

Bad = Callable[[RawClient, pb.Instruction, np.ndarray], Iterable[bytes]]
release = threading.Event()


def oversized_announced(raw: RawClient, ins: pb.Instruction, u: np.ndarray) -> list[bytes]:
    envelope = raw.envelope(ins, u, num_values=u.size * 1000)
    return raw.signed_messages(envelope, u)


def oversized_stream(raw: RawClient, ins: pb.Instruction, u: np.ndarray) -> list[bytes]:
    longer = np.concatenate([u, np.zeros(300, np.float32)])
    envelope = raw.envelope(ins, u)  # announces the right size, then sends more
    return raw.signed_messages(envelope, longer)


def truncated(raw: RawClient, ins: pb.Instruction, u: np.ndarray) -> list[bytes]:
    messages = raw.signed_messages(raw.envelope(ins, u), u, chunk_bytes=256)
    return messages[: len(messages) // 2]


def garbage_message(raw: RawClient, ins: pb.Instruction, u: np.ndarray) -> list[bytes]:
    return [b"\xff\xfe\xfd this is not protobuf \x00\x01"]


def garbage_chunk(raw: RawClient, ins: pb.Instruction, u: np.ndarray) -> list[bytes]:
    messages = raw.signed_messages(raw.envelope(ins, u), u)
    return [
        messages[0],
        pb.UpdateMessage(chunk=b"\x01\x02\x03\x04\x05\x06\x07").SerializeToString(),
    ]


def unparsable_header(raw: RawClient, ins: pb.Instruction, u: np.ndarray) -> list[bytes]:
    junk = b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01garbage"  # signed, but no Envelope
    header = pb.UpdateMessage(
        header=pb.UpdateHeader(
            envelope=junk, signature=sign_payload(raw.key, SIGNING_CONTEXT + junk)
        )
    )
    return [header.SerializeToString()]


def wrong_size(raw: RawClient, ins: pb.Instruction, u: np.ndarray) -> list[bytes]:
    shorter = u[:-10].copy()
    return raw.signed_messages(raw.envelope(ins, shorter), shorter)


def nan_values(raw: RawClient, ins: pb.Instruction, u: np.ndarray) -> list[bytes]:
    poisoned = u.copy()
    poisoned[::7] = np.nan
    return raw.signed_messages(raw.envelope(ins, poisoned), poisoned)


def stall(raw: RawClient, ins: pb.Instruction, u: np.ndarray) -> Iterable[bytes]:
    header = raw.signed_messages(raw.envelope(ins, u), u)[:1]
    return stalling_messages(header, release, wait=TIMEOUT)


BAD: dict[str, tuple[Bad, str]] = {
    "oversizer": (oversized_announced, "oversized"),
    "overstreamer": (oversized_stream, "oversized"),
    "truncator": (truncated, "truncated"),
    "garbler": (garbage_message, "malformed-message"),
    "chunk-garbler": (garbage_chunk, "malformed-chunk"),
    "header-garbler": (unparsable_header, "malformed-envelope"),
    "misfit": (wrong_size, "wrong-size"),
    "staller": (stall, "stalled"),
}


@pytest.mark.slow
def test_bad_input_is_refused_and_the_round_proceeds(runtime_pki: RuntimePKI) -> None:
    honest = [f"site-{i}" for i in range(4)]
    names = [*BAD, "nan-sender"]
    agg, reporter = make_aggregator(
        runtime_pki,
        rounds=1,
        min_available=len(honest) + len(names),
        round_timeout=60.0,
        stall_timeout=1.5,
        max_attempts_per_round=1,  # a refused attempt settles the client: no waiting for retries
    )
    outcomes: dict[str, Outcome] = {}
    errors: list[BaseException] = []

    def misbehave(name: str) -> None:
        try:
            raw = RawClient(runtime_pki.client(name), port)
            raw.join()
            ins = raw.poll_until_train()
            model = raw.get_model(ins.round, ins.round_token)
            update = honest_update(model, names.index(name), len(names))
            attack = nan_values if name == "nan-sender" else BAD[name][0]
            outcomes[name] = raw.submit(attack(raw, ins, update))
            raw.close()
        except BaseException as exc:
            errors.append(exc)

    try:
        port = agg.port
        assert port is not None
        threads = [threading.Thread(target=misbehave, args=(n,), daemon=True) for n in names]
        for t in threads:
            t.start()
        clients = ClientThreads(runtime_pki, port, honest, max_rounds=1).start()
        result = agg.wait(timeout=120)
        release.set()
        for t in threads:
            t.join(TIMEOUT)
        clients.join()
    finally:
        release.set()
        agg.stop()
    assert not errors, errors
    assert result is not None
    assert result.status == "completed"

    # each refused on the wire with its reason, as the client saw it
    for name, (_, reason) in BAD.items():
        assert outcomes[name].reason == reason, (name, outcomes[name])
        assert not outcomes[name].accepted
    assert outcomes["staller"].code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert outcomes["oversizer"].code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # NaN passes the transport (it is well-formed) and the pipeline's validation refuses it
    assert outcomes["nan-sender"].accepted

    counts = agg.metrics.snapshot()["updates_rejected"]
    assert counts == {
        "oversized": 2,
        "truncated": 1,
        "malformed-message": 1,
        "malformed-chunk": 1,
        "malformed-envelope": 1,
        "wrong-size": 1,
        "stalled": 1,
        "invalid-update": 1,
    }
    (record,) = reporter.of(RoundFinished)
    assert sorted(record.participants) == sorted([*honest, "nan-sender"])
    assert sorted(record.accepted) == sorted(honest)
    assert record.rejected["nan-sender"]["reason"] == "invalid-update"
    assert "non-finite" in record.rejected["nan-sender"]["message"]
    for name, (_, reason) in BAD.items():
        assert record.rejected[name]["reason"] == reason
    assert wait_for(lambda: all(clients.results[n].status == "done" for n in honest))
    assert {e.reason for e in reporter.of(Rejection)} >= {r for _, r in BAD.values()}


def test_one_message_larger_than_a_chunk_is_oversized_and_settles_the_client(
    runtime_pki: RuntimePKI,
) -> None:
    agg, reporter = make_aggregator(
        runtime_pki, rounds=1, min_available=1, dim=10, round_timeout=600.0
    )
    try:
        assert agg.port is not None
        raw = RawClient(runtime_pki.client("site-1"), agg.port)
        raw.join()
        instruction = raw.poll_until_train()
        update = np.zeros(10, np.float32)
        header = raw.signed_messages(raw.envelope(instruction, update), update)[0]
        # above one chunk, below gRPC's own limit (two chunks): the handler sees it
        big = pb.UpdateMessage(chunk=b"\0" * (agg.config.chunk_bytes + 4)).SerializeToString()
        outcome = raw.submit([header, big])
        assert outcome.reason == "oversized", outcome
        # not retryable: the round does not wait for its 600 s deadline
        result = agg.wait(timeout=TIMEOUT)
        raw.close()
    finally:
        agg.stop()
    assert result is not None
    (record,) = reporter.of(RoundFinished)
    assert record.rejected["site-1"]["reason"] == "oversized"
