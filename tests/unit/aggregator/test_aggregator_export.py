"""Who took part in which round: bounded, idempotent per round, and kept across a restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedwarden.aggregator import (
    Aggregator,
    AggregatorConfig,
    Checkpoint,
    RoundFinished,
    ServerTLS,
    save_checkpoint,
)
from fedwarden.aggregator.export import ParticipationHistory, provenance_facts
from fedwarden.model import canonical_json
from fedwarden.pipeline import ParameterLayout
from fedwarden.pipeline.round import Pipeline, PipelineConfig
from fedwarden.pki import TrainingPKI, TrainingRef


def finished(n: int, accepted: list[str], rejected: tuple[str, ...] = ()) -> RoundFinished:
    return RoundFinished(
        round=n,
        epsilon=0.1 * n,
        delta=None,
        sampled=[*accepted, *rejected],
        participants=[*accepted, *rejected],
        accepted=accepted,
        rejected={
            c: {"stage": "pipeline", "reason": "outlier", "message": "far"} for c in rejected
        },
        banned={},
        skipped=None,
        metrics={},
        duration_seconds=0.1,
        model_digest="00" * 32,
    )


def test_history_keeps_the_last_rounds_by_name_and_counts_every_round() -> None:
    history = ParticipationHistory(keep=2)
    for n in (1, 2, 3):
        history.record(finished(n, ["a", "b"] if n < 3 else ["a"], ("c",)))
    assert [r["round"] for r in history.rounds] == [2, 3]
    assert history.rounds[1] == {"round": 3, "aggregated": ["a"], "rejected": ["c"]}
    assert history.aggregated_rounds == {"a": 3, "b": 2}
    assert history.rounds_left_out == 1
    assert ParticipationHistory.from_dict(history.to_dict(), keep=2) == history


def test_a_redone_round_replaces_its_record() -> None:
    history = ParticipationHistory()
    history.record(finished(1, ["a", "b"]))
    history.record(finished(1, ["a"]))
    assert history.rounds == [{"round": 1, "aggregated": ["a"], "rejected": []}]
    assert history.aggregated_rounds == {"a": 1, "b": 0}


@pytest.fixture
def tls(tmp_path: Path) -> ServerTLS:
    pki = TrainingPKI.init(tmp_path / "ca", TrainingRef("team-a", "digits"))
    pki.issue_server(["localhost"], keep_key=True)
    return ServerTLS.from_pki_dir(pki.dir.root)


def test_participation_survives_a_restart_and_enters_the_provenance(
    tmp_path: Path, tls: ServerTLS
) -> None:
    history = ParticipationHistory()
    history.record(finished(1, ["a", "b"]))
    state = tmp_path / "state"
    config = AggregatorConfig(rounds=3, training_uid="uid-1")
    pipeline = Pipeline(PipelineConfig.recommended(), dim=4)
    save_checkpoint(
        state,
        Checkpoint(
            training_uid="uid-1",
            round=1,
            model=np.ones(4, np.float32),
            pipeline=pipeline.state_dict(),
            extra={"participation": history.to_dict()},
        ),
    )
    agg = Aggregator(config, pipeline, np.zeros(4), tls=tls, checkpoint_dir=state)
    agg._restore()
    assert agg.participation == history
    facts = provenance_facts(
        training_uid=agg.training_uid,
        identity=agg.training.uri,
        status="running",
        rounds_done=1,
        settings=agg.config,
        pipeline=agg.pipeline,
        participation=agg.participation,
        bans=agg.banned(),
    )
    assert facts["participation"]["rounds"][0]["aggregated"] == ["a", "b"]
    assert facts["privacy"]["epsilon"] is None
    assert facts["aggregation"]["method"] == "block-dnc"
    canonical_json(facts)  # JSON without NaN or Inf: it can be signed


def test_a_layout_of_another_size_is_refused(tls: ServerTLS) -> None:
    with pytest.raises(ValueError, match="layout has 3 parameters"):
        Aggregator(
            AggregatorConfig(rounds=1),
            Pipeline(PipelineConfig.recommended(), dim=4),
            np.zeros(4),
            tls=tls,
            layout=ParameterLayout.single(3),
        )
