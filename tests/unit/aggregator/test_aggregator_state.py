"""Checkpoints, the JSON-lines reporter, sampling and settings of the aggregator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fedwarden.aggregator import (
    AggregatorConfig,
    Checkpoint,
    CheckpointError,
    JsonlReporter,
    RecordingReporter,
    RoundFinished,
    Sampler,
    TrainingFinished,
    load_checkpoint,
    pipeline_reason_code,
    read_jsonl,
    save_checkpoint,
)
from fedwarden.aggregator.checkpoint import remove_stale_temporaries
from fedwarden.pipeline.round import Pipeline, PipelineConfig, PrivacyConfig


def round_record(n: int, epsilon: float = 0.5) -> RoundFinished:
    return RoundFinished(
        round=n,
        epsilon=epsilon,
        delta=1e-5,
        sampled=["a", "b"],
        participants=["a", "b"],
        accepted=["a"],
        rejected={"b": {"stage": "pipeline", "reason": "outlier", "message": "far"}},
        banned={},
        skipped=None,
        metrics={"accuracy": 0.5},
        duration_seconds=0.1,
        model_digest="00" * 32,
    )


def test_checkpoint_round_trip_with_pipeline_state(tmp_path: Path) -> None:
    privacy = PrivacyConfig(mode="central", noise_multiplier=1.1, sample_rate=0.5)
    pipe = Pipeline(PipelineConfig.recommended(privacy), dim=20, population=10, seed=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        pipe.run_round(rng.standard_normal((6, 20)).astype(np.float32), list("abcdef"))
    model = rng.standard_normal(20).astype(np.float32)
    ckpt = Checkpoint(
        training_uid="uid",
        round=3,
        model=model,
        pipeline=pipe.state_dict(),
        revocations=[{"client": "x", "round": 2, "reason": "r", "certificate": None}],
        nonces={3: ["ab" * 16]},
        fates={"a": {"sampled": 3}},
        last_round=round_record(3).to_dict(),
    )
    path = save_checkpoint(tmp_path, ckpt)
    assert path.name == "checkpoint.npz"
    assert not list(tmp_path.glob(".checkpoint.*"))
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.model, model)
    assert loaded.round == 3
    assert loaded.nonces == {3: ["ab" * 16]}
    assert loaded.revocations == ckpt.revocations
    assert loaded.last_round == ckpt.last_round
    fresh = Pipeline(PipelineConfig.recommended(privacy), dim=20, population=10, seed=1)
    fresh.load_state_dict(loaded.pipeline)
    assert fresh.epsilon == pytest.approx(pipe.epsilon)
    assert fresh.state_dict()["accountant"] == pipe.state_dict()["accountant"]


def test_checkpoint_replaced_atomically_and_temporaries_cleaned(tmp_path: Path) -> None:
    model = np.zeros(4, np.float32)
    save_checkpoint(tmp_path, Checkpoint("uid", 1, model, {}))
    save_checkpoint(tmp_path, Checkpoint("uid", 2, model + 1, {}))
    (tmp_path / ".checkpoint.abc.tmp").write_bytes(b"half a file")
    assert remove_stale_temporaries(tmp_path) == 1
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert loaded.round == 2
    assert load_checkpoint(tmp_path / "nothing-here") is None


def test_a_corrupt_checkpoint_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path)


def test_jsonl_repairs_a_cut_line_and_replays_a_missed_round(tmp_path: Path) -> None:
    path = tmp_path / "report.jsonl"
    reporter = JsonlReporter(path)
    reporter.round_finished(round_record(1))
    reporter.close()
    with open(path, "a") as f:
        f.write('{"event": "round_finished", "round": 2, "eps')  # killed mid-write
    reporter = JsonlReporter(path)
    assert reporter.rounds_recorded == {1}
    reporter.resume(round_record(1))  # already there: not written again
    reporter.resume(round_record(2))  # the checkpoint has round 2, the report missed it
    reporter.training_finished(TrainingFinished("completed", "done", 2, 0.5, 1e-5, {}))
    reporter.close()
    records = read_jsonl(path)
    assert [(r["event"], r.get("round", r.get("rounds"))) for r in records] == [
        ("round_finished", 1),
        ("round_finished", 2),
        ("training_finished", 2),
    ]
    assert records[1]["replayed"] is True
    assert path.read_text().endswith("\n")
    assert os.path.getsize(path) > 0


def test_recording_reporter_and_reason_codes() -> None:
    rec = RecordingReporter()
    rec.round_finished(round_record(1))
    assert [e.round for e in rec.of(RoundFinished)] == [1]
    assert pipeline_reason_code("invalid update: update has 3 non-finite values") == (
        "invalid-update"
    )
    assert pipeline_reason_code("statistical outlier: norm 9") == "outlier"
    assert pipeline_reason_code("free-riding: zero update") == "free-riding"
    assert pipeline_reason_code("poisoning: opposes the cohort: cosine -0.9") == "poisoning"
    assert pipeline_reason_code("banned: 3 strikes") == "banned"


def test_sampling_fixed_poisson_and_seeded() -> None:
    pool = [f"c{i}" for i in range(10)]
    fixed = Sampler("fixed", 0.3, min_per_round=4, seed=5)
    cohort, rate = fixed.sample(pool, 1)
    assert len(cohort) == 4
    assert rate == pytest.approx(0.4)
    assert fixed.sample(pool, 1) == (cohort, rate)  # seeded: the same round draws the same
    assert fixed.sample(pool, 1, attempt=1) != fixed.sample(pool, 2)
    poisson = Sampler("poisson", 0.5, seed=1)
    sizes = [len(poisson.sample(pool, r)[0]) for r in range(1, 200)]
    assert 3 < np.mean(sizes) < 7
    assert poisson.sample(pool, 1)[1] == 0.5
    assert Sampler("fixed", 1.0).sample([], 1) == ([], 1.0)
    unseeded = Sampler("fixed", 0.5)
    assert not unseeded.seeded
    assert len(unseeded.sample(pool, 1)[0]) == 5


def test_config_refuses_impossible_settings() -> None:
    with pytest.raises(ValueError, match="rounds"):
        AggregatorConfig(rounds=0)
    with pytest.raises(ValueError, match="fraction"):
        AggregatorConfig(rounds=1, fraction=0)
    with pytest.raises(ValueError, match="cannot exceed min_available"):
        AggregatorConfig(rounds=1, min_per_round=5, min_available=2)
    with pytest.raises(ValueError, match="chunk size"):
        AggregatorConfig(rounds=1, chunk_bytes=3)


def _write_npz(directory: Path, meta: dict[str, object], **arrays: np.ndarray) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "checkpoint.npz"
    raw = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, meta=raw, **arrays)
    return path


def test_a_damaged_checkpoint_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    good = Checkpoint("uid", 2, np.zeros(3, np.float32), {"round": 2})
    save_checkpoint(tmp_path / "good", good)
    with np.load(tmp_path / "good" / "checkpoint.npz") as data:
        meta = json.loads(bytes(data["meta"]).decode())
    model = np.zeros(3, np.float32)
    cases = {
        "no-uid": ({k: v for k, v in meta.items() if k != "training_uid"}, {"model": model}),
        "no-model": (meta, {}),
        "round": ({**meta, "round": "three"}, {"model": model}),
    }
    for name, (broken, arrays) in cases.items():
        path = _write_npz(tmp_path / name, broken, **arrays)
        with pytest.raises(CheckpointError) as refused:
            load_checkpoint(path.parent)
        message = str(refused.value)
        assert str(path) in message, name
        assert "\n" not in message
    assert "'training_uid' is missing" in _error(tmp_path / "no-uid")
    assert "'model' is missing" in _error(tmp_path / "no-model")
    assert "three" in _error(tmp_path / "round")


def _error(directory: Path) -> str:
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(directory)
    return str(refused.value)
