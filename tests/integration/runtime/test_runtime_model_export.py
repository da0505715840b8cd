"""The trained model out of a real run: ``--output-model`` exports after each checkpoint and at
the end, the export verifies against the training's CA, and who took part survives a restart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from runtime_helpers import TIMEOUT, ClientThreads, RuntimePKI, make_aggregator

from fedwarden.aggregator import ModelExported, RoundFinished, load_checkpoint
from fedwarden.model import MODEL_FILE, PROVENANCE_FILE, read_tensors, verify_model
from fedwarden.pki import TrustBundle

CLIENTS = ["site-0", "site-1", "site-2"]


def test_the_model_is_exported_signed_at_each_checkpoint_and_at_the_end(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    out, state = tmp_path / "model", tmp_path / "state"
    agg, reporter = make_aggregator(
        runtime_pki, rounds=2, min_available=3, checkpoint_dir=state, output_model_dir=out
    )
    try:
        assert agg.port is not None
        clients = ClientThreads(runtime_pki, agg.port, CLIENTS).start()
        result = agg.wait(timeout=240)
        assert result is not None, "the training did not finish"
        clients.join(TIMEOUT)
    finally:
        agg.stop()
    exports: list[ModelExported] = reporter.of(ModelExported)
    assert [e.round for e in exports] == [1, 2, 2]  # each round's checkpoint, then the end
    verified = verify_model(out, TrustBundle.load(runtime_pki.tls().ca))
    assert verified.sha256 == exports[-1].sha256
    assert verified.signer == runtime_pki.training.aggregator_uri
    body = verified.provenance
    assert body["status"] == "completed"
    assert body["rounds_completed"] == 2
    assert body["training"]["uid"] == agg.training_uid
    rounds: list[RoundFinished] = reporter.of(RoundFinished)
    assert [r["round"] for r in body["participation"]["rounds"]] == [1, 2]
    assert body["participation"]["rounds"][1]["aggregated"] == sorted(rounds[1].accepted)
    tensors = read_tensors(out / MODEL_FILE)
    np.testing.assert_array_equal(tensors["params"], agg.model)
    assert json.loads((out / PROVENANCE_FILE).read_text())["signature"]["certificates"]
    ckpt = load_checkpoint(state)
    assert ckpt is not None
    assert ckpt.extra["participation"] == body["participation"]
