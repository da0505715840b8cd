"""The trained model out of a real run: ``--output-model`` exports after each checkpoint and at
the end, the export verifies against the training's CA, and a reader of the training (never a
client) fetches it over mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import TIMEOUT, ClientThreads, RuntimePKI, make_aggregator

from fedwarden.aggregator import ModelExported, Rejection, RoundFinished, load_checkpoint
from fedwarden.model import MODEL_FILE, PROVENANCE_FILE, read_tensors, verify_model
from fedwarden.pki import TrustBundle
from fedwarden.wire import WireError
from fedwarden.wire.fetch import FetchedFile, ModelServer, fetch_export

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
    assert sorted(tensors) == ["bias", "weight"]  # the task's layout names the tensors
    np.testing.assert_array_equal(agg.layout.join(tensors), agg.model)
    assert json.loads((out / PROVENANCE_FILE).read_text())["signature"]["certificates"]
    ckpt = load_checkpoint(state)
    assert ckpt is not None
    assert ckpt.extra["participation"] == body["participation"]


def test_a_reader_fetches_the_export_and_a_client_may_not(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    out, state = tmp_path / "model", tmp_path / "state"
    reader = runtime_pki.pki.ca.issue_reader("model-fetch")
    ca_pem = runtime_pki.pki.bundle().to_pem()

    def fetch(agg_port: int, cert: bytes, key: bytes, into: Path) -> list[FetchedFile]:
        return fetch_export(
            f"127.0.0.1:{agg_port}", into, ca_pem=ca_pem, cert_pem=cert, key_pem=key, timeout=30
        )

    # nothing exported yet: the reader is told so
    idle, _ = make_aggregator(
        runtime_pki, rounds=1, min_available=3, output_model_dir=out, finish_grace=60.0
    )
    try:
        assert idle.port is not None
        with pytest.raises(WireError) as nothing:
            fetch(idle.port, reader.cert_pem, reader.key_pem, tmp_path / "early")
        assert nothing.value.reason == "no-model"
    finally:
        idle.stop()
    agg, _ = make_aggregator(
        runtime_pki, rounds=1, min_available=3, checkpoint_dir=state, output_model_dir=out
    )
    try:
        assert agg.port is not None
        clients = ClientThreads(runtime_pki, agg.port, CLIENTS).start()
        assert agg.wait(timeout=240) is not None
        clients.join(TIMEOUT)
    finally:
        agg.stop()
    # a restarted aggregator of the finished training keeps serving its export for a while
    again, reporter = make_aggregator(
        runtime_pki,
        rounds=1,
        min_available=3,
        checkpoint_dir=state,
        output_model_dir=out,
        finish_grace=60.0,
    )
    try:
        assert again.port is not None
        alice = runtime_pki.client("alice")
        with pytest.raises(WireError) as refused:
            fetch(again.port, alice.cert.read_bytes(), alice.key.read_bytes(), tmp_path / "x")
        assert refused.value.reason == "not-a-reader"
        fetched = fetch(again.port, reader.cert_pem, reader.key_pem, tmp_path / "fetched")
    finally:
        again.stop()
    assert [f.path.name for f in fetched] == [PROVENANCE_FILE, MODEL_FILE]
    assert not [p for p in (tmp_path / "fetched").iterdir() if p.name.startswith(".")]
    verified = verify_model(tmp_path / "fetched", ca_pem)
    assert (tmp_path / "fetched" / MODEL_FILE).read_bytes() == (out / MODEL_FILE).read_bytes()
    assert verified.rounds_completed == 1
    refusals = [r for r in reporter.of(Rejection) if r.stage == "model"]
    assert [r.reason for r in refusals] == ["not-a-reader"]


def test_the_model_server_serves_a_finished_trainings_export_to_readers_only(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    agg, _ = make_aggregator(runtime_pki, rounds=1, min_available=3, output_model_dir=out)
    try:
        assert agg.port is not None
        clients = ClientThreads(runtime_pki, agg.port, CLIENTS).start()
        assert agg.wait(timeout=240) is not None
        clients.join(TIMEOUT)
    finally:
        agg.stop()
    tls = runtime_pki.tls()
    server = ModelServer(
        out, cert=tls.cert, key=tls.key, ca=tls.ca, verifier=tls.verifier(), listen="127.0.0.1:0"
    )
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    serving = loop.create_task(server.serve(lambda _port: ready.set()))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(serving)
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(TIMEOUT)
        ca_pem = runtime_pki.pki.bundle().to_pem()
        reader = runtime_pki.pki.ca.issue_reader("model-fetch")
        address = f"127.0.0.1:{server.port}"
        alice = runtime_pki.client("alice")
        with pytest.raises(WireError) as refused:
            fetch_export(
                address, tmp_path / "x", ca_pem=ca_pem,
                cert_pem=alice.cert.read_bytes(), key_pem=alice.key.read_bytes(),
            )  # fmt: skip
        assert refused.value.reason == "not-a-reader"
        fetch_export(
            address, tmp_path / "fetched", ca_pem=ca_pem,
            cert_pem=reader.cert_pem, key_pem=reader.key_pem,
        )  # fmt: skip
    finally:
        loop.call_soon_threadsafe(serving.cancel)
        thread.join(TIMEOUT)
    assert verify_model(tmp_path / "fetched", ca_pem).rounds_completed == 1
