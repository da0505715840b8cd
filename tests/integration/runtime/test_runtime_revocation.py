"""Revocation as the aggregator lives it: a CRL file absent at start is watched, so a later
``pki revoke`` takes effect; a stale CRL stays in force for the aggregator (its revocations are
final) while honest clients, which read no CRL, train on."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from runtime_helpers import ClientThreads, RawClient, RuntimePKI, make_aggregator


def test_a_crl_absent_at_start_is_watched(runtime_pki: RuntimePKI) -> None:
    runtime_pki.client("site-1")
    runtime_pki.pki.dir.crl.unlink()
    agg, _ = make_aggregator(runtime_pki, rounds=1, min_available=2, dim=4, revoke=False)
    try:
        assert agg.port is not None
        raw = RawClient(runtime_pki.client("site-1"), agg.port)
        raw.join()
        runtime_pki.pki.revoke_client("site-1", "key-compromise")  # writes crl.pem
        with pytest.raises(grpc.RpcError) as refused:
            raw.join()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "revoked" in (refused.value.details() or "")
        raw.close()
    finally:
        agg.stop()


def test_a_stale_crl_keeps_refusing_the_revoked_and_honest_clients_train(
    runtime_pki: RuntimePKI,
) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=20)
    runtime_pki.client("site-9")
    runtime_pki.pki.revoke_client("site-9", "privilege-withdrawn", now=long_ago)
    assert runtime_pki.pki.revocations().stale()  # its nextUpdate passed 13 days ago
    agg, _ = make_aggregator(runtime_pki, rounds=1, min_available=2, revoke=False)
    try:
        assert agg.port is not None
        revoked = RawClient(runtime_pki.client("site-9"), agg.port)
        with pytest.raises(grpc.RpcError) as refused:
            revoked.join()
        assert "revoked" in (refused.value.details() or "")
        revoked.close()
        honest = ClientThreads(runtime_pki, agg.port, ["site-0", "site-1"])
        honest.start()
        result = agg.wait(timeout=120)
        honest.join()
    finally:
        agg.stop()
    assert result is not None
    assert result.status == "completed"
    assert all(r.status == "done" for r in honest.results.values())
