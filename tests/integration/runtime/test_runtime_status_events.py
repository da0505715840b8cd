"""What the status reporters get from a real run: each round's standing strikes, contribution
scores and rounds participated, so that a status (the Kubernetes reporter's) can show them."""

from __future__ import annotations

import threading

from runtime_helpers import TASK, TIMEOUT, ClientThreads, RuntimePKI, make_aggregator

from fedwarden.aggregator import RoundFinished, TrainingFinished, TrainingStarted
from fedwarden.client import BuiltinTask, FederationClient
from fedwarden.demo.participant import PoisoningTask


def test_round_events_carry_strikes_scores_and_participation(runtime_pki: RuntimePKI) -> None:
    honest = ["site-0", "site-1", "site-2", "site-3"]
    agg, reporter = make_aggregator(runtime_pki, rounds=4, min_available=5, round_timeout=30.0)
    try:
        assert agg.port is not None
        clients = ClientThreads(runtime_pki, agg.port, honest).start()
        poisoner = FederationClient(
            runtime_pki.client_config("poisoner", agg.port),
            PoisoningTask(BuiltinTask(TASK, partition="iid", client_index=4, num_clients=5)),
        )
        thread = threading.Thread(target=poisoner.run, daemon=True)
        thread.start()
        result = agg.wait(timeout=240)
        assert result is not None, "the training did not finish"
        clients.join(TIMEOUT)
        thread.join(TIMEOUT)
    finally:
        agg.stop()
    rounds: list[RoundFinished] = reporter.of(RoundFinished)
    assert [r.round for r in rounds] == [1, 2, 3, 4]
    assert [r.strikes["poisoner"] for r in rounds[:3]] == [1, 2, 3]
    assert "poisoner" in rounds[2].banned
    assert all(r.strikes[c] == 0 for r in rounds for c in honest)
    assert [r.rounds_participated["site-0"] for r in rounds] == [1, 2, 3, 4]
    assert "poisoner" not in rounds[0].rounds_participated
    assert set(rounds[0].scores) >= set(honest)
    assert all(0.0 < rounds[0].scores[c] <= 1.0 for c in honest)
    assert rounds[-1].metrics["update_norm"] > 0
    assert reporter.of(TrainingStarted)[0].banned == {}
    finished: TrainingFinished = reporter.of(TrainingFinished)[0]
    assert set(finished.banned) == {"poisoner"}
