"""The aggregator's plain-HTTP health and metrics server, on IPv4 and IPv6 loopback."""

from __future__ import annotations

import http.client

import pytest
from prometheus_client import CollectorRegistry

from fedwarden.aggregator.metrics import HealthServer


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_serves_health_readiness_and_metrics(address: str) -> None:
    ready = {"now": False}
    server = HealthServer(
        address, 0, CollectorRegistry(), healthy=lambda: True, ready=lambda: ready["now"]
    )
    server.start()
    try:

        def get(path: str) -> int:
            conn = http.client.HTTPConnection(address, server.port, timeout=10)
            try:
                conn.request("GET", path)
                return conn.getresponse().status
            finally:
                conn.close()

        assert get("/healthz") == 200
        assert get("/readyz") == 503
        ready["now"] = True
        assert get("/readyz") == 200
        assert get("/metrics") == 200
        assert get("/nothing") == 404
    finally:
        server.stop()
