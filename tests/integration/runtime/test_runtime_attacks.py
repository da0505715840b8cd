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

    def run(self) -> None:
        try:
            self.raw.join()
            last = (0, b"")
            while True:
                instruction = self.raw.poll_until_train(last)
                if instruction.kind == pb.Instruction.DONE:
                    return
                last = (instruction.round, instruction.round_token)
                model = self.raw.get_model(instruction.round, instruction.round_token)
                update = honest_update(model, self.index, 11)
                messages = self.attack(self.raw, instruction, update, instruction.round)
                outcome = self.raw.submit(messages)
                self.outcomes.append((instruction.round, outcome.reason))
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
        runtime_pki, rounds=8, min_available=len(honest) + len(attacks), round_timeout=30.0
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

    expected = {
        "tamperer": "tampered",
        "forger": "bad-signature",
        "poser": "identity-mismatch",
        "stale": "wrong-base-model",
    }
    by_client: dict[str, Counter[str]] = {}
    for event in reporter.of(Rejection):
        by_client.setdefault(event.client, Counter())[event.reason] += 1
    for name, reason in expected.items():
        assert by_client[name][reason] == 8, (name, by_client.get(name))
        assert agg.fates()[name]["submitted"] == 0
    # the replayer's first update is genuine and accepted; every replay after it is refused
    assert by_client["replayer"]["replay"] == 7
    assert agg.fates()["replayer"]["submitted"] == 1
    counts = agg.metrics.snapshot()["updates_rejected"]
    for reason in (*expected.values(), "replay"):
        assert counts[reason] >= 7, counts
    # each round reports the adversaries among its refusals, with the reason
    last = rounds[-1]
    assert {c: last.rejected[c]["reason"] for c in expected} == expected
    assert last.rejected["replayer"]["reason"] == "replay"
    # the honest clients took part throughout
    for name in honest:
        assert clients.results[name].status == "done"
        assert agg.fates()[name]["submitted"] == 8
