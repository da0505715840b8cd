"""Tampered, forged, impersonating, replayed and stale updates are each refused with their reason
and counted, while a training of six honest clients (digits, logistic regression) converges.

Five enrolled adversaries take part in every round next to the honest clients. Each is sampled,
downloads the model, trains honestly, and then cheats in its own way:

- ``tamperer``: flips a payload byte after signing (a man in the middle would) -> tampered
- ``forger``: signs its envelope with a key that is not its certificate's -> bad-signature
- ``poser``: signs, with its own key, an envelope naming ``site-0`` -> identity-mismatch
- ``replayer``: sends an honest update in its first round, then replays it -> replay
- ``stale``: names the digest of another base model -> wrong-base-model
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from runtime_helpers import (
    TIMEOUT,
    ClientThreads,
    RawClient,
    RuntimePKI,
    honest_update,
    make_aggregator,
)

from fedwarden.aggregator import Rejection, RoundFinished
from fedwarden.pki import generate_key
from fedwarden.wire import pb

Attack = Callable[[RawClient, pb.Instruction, np.ndarray, int], list[bytes]]


def tamper(raw: RawClient, instruction: pb.Instruction, update: np.ndarray, n: int) -> list[bytes]:
    messages = raw.signed_messages(raw.envelope(instruction, update), update)
    chunk = pb.UpdateMessage.FromString(messages[1])
    data = bytearray(chunk.chunk)
    data[5] ^= 0x01  # one bit of one value, after signing
    messages[1] = pb.UpdateMessage(chunk=bytes(data)).SerializeToString()
    return messages


def forge(raw: RawClient, instruction: pb.Instruction, update: np.ndarray, n: int) -> list[bytes]:
    return raw.signed_messages(raw.envelope(instruction, update), update, key=generate_key())


def pose(raw: RawClient, instruction: pb.Instruction, update: np.ndarray, n: int) -> list[bytes]:
    return raw.signed_messages(raw.envelope(instruction, update, client_id="site-0"), update)


def stale(raw: RawClient, instruction: pb.Instruction, update: np.ndarray, n: int) -> list[bytes]:
    envelope = raw.envelope(instruction, update, base_digest=bytes(32))
    return raw.signed_messages(envelope, update)


class Replayer:
    def __init__(self) -> None:
        self.first: list[bytes] | None = None

    def __call__(
        self, raw: RawClient, instruction: pb.Instruction, update: np.ndarray, n: int
    ) -> list[bytes]:
        if self.first is None:
            self.first = raw.signed_messages(raw.envelope(instruction, update), update)
            return self.first
        return self.first


class Adversary(threading.Thread):
    def __init__(self, raw: RawClient, attack: Attack, index: int) -> None:
        super().__init__(daemon=True)
        self.raw, self.attack, self.index = raw, attack, index
        self.outcomes: list[tuple[int, str | None]] = []
        self.error: BaseException | None = None
        self.banned = False

    def run(self) -> None:
        try:
            self.raw.join()
            last = (0, b"")
            while True:
                instruction = self.raw.poll_until_train(last)
                if instruction.kind in (pb.Instruction.DONE, pb.Instruction.REFUSED):
                    self.banned = instruction.kind == pb.Instruction.REFUSED
                    return
                last = (instruction.round, instruction.round_token)
                model = self.raw.get_model(instruction.round, instruction.round_token)
                update = honest_update(model, self.index, 11)
                messages = self.attack(self.raw, instruction, update, instruction.round)
                outcome = self.raw.submit(messages)
                self.outcomes.append((instruction.round, outcome.reason))
        except grpc.RpcError as exc:
            # a banned client's next call is refused (banned, then revoked): the end the test
            # expects for the adversaries that strike
            details = exc.details() or ""
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED and details.startswith(
                ("banned", "revoked")
            ):
                self.banned = True
            else:
                self.error = exc
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.mark.slow
def test_attacks_are_refused_and_training_converges(runtime_pki: RuntimePKI) -> None:
    honest = [f"site-{i}" for i in range(6)]
    attacks: dict[str, Attack] = {
        "tamperer": tamper,
        "forger": forge,
        "poser": pose,
        "replayer": Replayer(),
        "stale": stale,
    }
    agg, reporter = make_aggregator(
        # the forger, tamperer, poser and replayer are banned on the way: the rounds must not
        # wait for them
        runtime_pki,
        rounds=8,
        min_available=len(honest),
        round_timeout=30.0,
    )
    try:
        assert agg.port is not None
        adversaries = [
            Adversary(RawClient(runtime_pki.client(name), agg.port), attack, 6 + i)
            for i, (name, attack) in enumerate(attacks.items())
        ]
        clients = ClientThreads(runtime_pki, agg.port, honest).start()
        for adversary in adversaries:
            adversary.start()
        result = agg.wait(timeout=240)
        assert result is not None, "the training did not finish"
        clients.join(TIMEOUT)
        for adversary in adversaries:
            adversary.join(TIMEOUT)
            adversary.raw.close()
            assert adversary.error is None, adversary.error
    finally:
        agg.stop()

    assert result.status == "completed"
    rounds = reporter.of(RoundFinished)
    assert [r.round for r in rounds] == list(range(1, 9))
    # the training converged despite the attacks: digits has 10 classes (chance 0.1)
    assert rounds[-1].metrics["accuracy"] > 0.8
    assert rounds[-1].metrics["accuracy"] > rounds[0].metrics["accuracy"] - 0.05

    striking = {
        "tamperer": "tampered",
        "forger": "bad-signature",
        "poser": "identity-mismatch",
    }
    by_client: dict[str, Counter[str]] = {}
    for event in reporter.of(Rejection):
        by_client.setdefault(event.client, Counter())[event.reason] += 1
    banned = agg.banned()
    # forged, altered and impersonating updates strike: three rounds, then a ban
    for name, reason in striking.items():
        assert by_client[name][reason] == 3, (name, by_client.get(name))
        assert agg.fates()[name]["submitted"] == 0
        assert reason in banned[name]
    # the replayer's first update is genuine and accepted; three replays after it ban it
    assert by_client["replayer"]["replay"] == 3
    assert agg.fates()["replayer"]["submitted"] == 1
    assert "replay" in banned["replayer"]
    # an update for an old model is refused but does not strike: honest clients can be late
    assert by_client["stale"]["wrong-base-model"] == agg.fates()["stale"]["sampled"] >= 7
    assert "stale" not in banned
    counts = agg.metrics.snapshot()["updates_rejected"]
    for reason in (*striking.values(), "replay"):
        assert counts[reason] >= 3, counts
    last = rounds[-1]
    assert last.rejected["stale"]["reason"] == "wrong-base-model"
    assert not set(last.sampled) & set(banned)
    # the honest clients took part throughout
    for name in honest:
        assert clients.results[name].status == "done"
        # every round it was sampled for (a round may open before a late joiner is available)
        fate = agg.fates()[name]
        assert fate["submitted"] == fate["sampled"] >= 7
