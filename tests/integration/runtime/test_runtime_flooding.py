"""An authenticated client cannot grow the aggregator's state: after its attempts are used up it
sends 10,000 signed envelopes, each refused; the nonces kept, the checkpoint and the report stay
bounded, the flood is flagged once and counts as one strike per round, and a client that floods
round after round is banned."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from runtime_helpers import RawClient, RuntimePKI, make_aggregator

from fedwarden.aggregator import JsonlReporter, RoundFinished, load_checkpoint, read_jsonl
from fedwarden.aggregator.server import FLOODING

DIM = 10
ENVELOPES = 10_000


def _flood(flooder: RawClient, instruction: object, update: np.ndarray, count: int) -> set[str]:
    def send(_: int) -> str | None:
        envelope = flooder.envelope(instruction, update)  # type: ignore[arg-type]
        return flooder.submit(flooder.signed_messages(envelope, update)).reason

    with ThreadPoolExecutor(8) as pool:
        return {reason for reason in pool.map(send, range(count)) if reason is not None}


def test_ten_thousand_refused_envelopes_leave_the_state_bounded(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    report = tmp_path / "report.jsonl"
    agg, recording = make_aggregator(
        runtime_pki,
        rounds=3,
        min_available=2,
        dim=DIM,
        reporter=JsonlReporter(report),
        checkpoint_dir=tmp_path / "state",
        round_timeout=600.0,  # the round closes when both clients are settled
    )
    assert agg.port is not None
    limit = agg.config.max_refusals_per_round
    flooder = RawClient(runtime_pki.client("flooder"), agg.port)
    honest = RawClient(runtime_pki.client("honest"), agg.port)
    rng = np.random.default_rng(0)
    last = (0, b"")
    try:
        flooder.join()
        honest.join()
        for number in (1, 2, 3):
            instruction = flooder.poll_until_train(last)
            assert instruction.round == number
            honest_turn = honest.poll_until_train(last)
            update = (0.01 * rng.standard_normal(DIM)).astype(np.float32)
            # its attempts used up (the wrong base model, three times) ...
            for _ in range(agg.config.max_attempts_per_round):
                stale = flooder.envelope(instruction, update, base_digest=b"\0" * 32)
                outcome = flooder.submit(flooder.signed_messages(stale, update))
                assert outcome.reason == "wrong-base-model"
            # ... it keeps sending
            count = ENVELOPES if number == 1 else limit + 1
            assert _flood(flooder, instruction, update, count) == {"too-many-attempts"}
            envelope = honest.envelope(honest_turn, update)
            assert honest.submit(honest.signed_messages(envelope, update)).accepted
            last = (number, instruction.round_token)
            recorded = [r for r in recording.of(RoundFinished) if r.round == number]
            while not recorded and agg.wait(0.05) is None:
                recorded = [r for r in recording.of(RoundFinished) if r.round == number]
            (finished,) = recorded
            assert finished.strikes["flooder"] == number  # one strike per round, not per refusal
            if number == 1:
                ckpt = load_checkpoint(tmp_path / "state")
                assert ckpt is not None
                # only envelopes that passed the round's checks: the honest one
                assert sum(len(n) for n in ckpt.nonces.values()) == 1
                assert (tmp_path / "state" / "checkpoint.npz").stat().st_size < 16_000
                events = read_jsonl(report)
                refusals = [e for e in events if getattr(e, "client", None) == "flooder"]
                assert len(refusals) <= agg.config.max_attempts_per_round + limit + 1
                assert report.stat().st_size < 40_000
        assert "flooder" in finished.banned
        assert finished.banned["flooder"].startswith(f"3 strikes, the last in round 3: {FLOODING}")
        fates = agg.fates()
        assert fates["flooder"]["flagged"][FLOODING] == 3
        assert fates["flooder"]["rejected"]["too-many-attempts"] == ENVELOPES + 2 * (limit + 1)
    finally:
        flooder.close()
        honest.close()
        agg.stop()
