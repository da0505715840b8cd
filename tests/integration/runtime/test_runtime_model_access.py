"""Limiting model access (FL04): the global model is served only to clients sampled for the open
round; downloads are counted and excess ones throttled and flagged. Also the metrics and health
endpoints that report it."""

from __future__ import annotations

import urllib.request

import grpc
from runtime_helpers import TIMEOUT, RawClient, RuntimePKI, make_aggregator, wait_for

from fedwarden.aggregator import ClientFlagged


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_model_served_only_to_sampled_clients_and_throttled(runtime_pki: RuntimePKI) -> None:
    names = ["site-a", "site-b", "site-c", "site-d"]
    agg, reporter = make_aggregator(
        runtime_pki,
        rounds=1,
        min_available=4,
        fraction=0.5,
        max_downloads_per_round=2,
        round_timeout=60.0,
        metrics=True,
    )
    raws = {}
    try:
        assert agg.port is not None
        assert agg.metrics_port is not None
        status, _body = http_get(agg.metrics_port, "/healthz")
        assert status == 200
        assert http_get(agg.metrics_port, "/readyz")[0] == 200
        raws = {n: RawClient(runtime_pki.client(n), agg.port) for n in names}
        for raw in raws.values():
            raw.join()
        assert wait_for(lambda: agg.round is not None)
        open_round = agg.round
        assert open_round is not None
        sampled = list(open_round.sampled)
        assert len(sampled) == 2
        outsider = next(n for n in names if n not in sampled)
        insider = sampled[0]

        # not sampled: refused, even with the right round number, and flagged as probing
        refused = raws[outsider].try_get_model(open_round.number, open_round.token)
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED
        assert refused.reason == "model-not-sampled"

        # sampled: told to train, allowed two downloads, then throttled and flagged
        instruction = raws[insider].poll_until_train()
        assert instruction.round == open_round.number
        wrong = raws[insider].try_get_model(instruction.round, b"\x00" * 16)
        assert wrong.reason == "model-wrong-round"
        for _ in range(2):
            model = raws[insider].get_model(instruction.round, instruction.round_token)
            assert model.size == agg.dim
        throttled = raws[insider].try_get_model(instruction.round, instruction.round_token)
        assert throttled.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert throttled.reason == "throttled"

        counts = agg.metrics.snapshot()
        assert counts["model_requests_refused"] == {
            "model-not-sampled": 1,
            "model-wrong-round": 1,
            "throttled": 1,
        }
        assert counts["clients_flagged"] == {"model-not-sampled": 1, "throttled": 1}
        assert counts["model_downloads"] == {"": 2}
        fates = agg.fates()
        assert fates[outsider]["flagged"] == {"model-not-sampled": 1}
        assert fates[insider]["flagged"] == {"throttled": 1}
        assert fates[insider]["downloads"] == 2
        flagged = {(e.client, e.reason) for e in reporter.of(ClientFlagged)}
        assert flagged == {(outsider, "model-not-sampled"), (insider, "throttled")}

        status, metrics = http_get(agg.metrics_port, "/metrics")
        assert status == 200
        assert 'fedwarden_model_requests_refused_total{reason="throttled"} 1.0' in metrics
        assert 'fedwarden_clients_flagged_total{reason="model-not-sampled"} 1.0' in metrics
        assert "fedwarden_model_downloads_total 2.0" in metrics
        assert http_get(agg.metrics_port, "/nothing")[0] == 404
    finally:
        for raw in raws.values():
            raw.close()
        agg.stop()
