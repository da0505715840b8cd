"""Hot reload of the aggregator's certificate: new handshakes get the new certificate, an
established connection goes on, and the training is not dropped."""

from __future__ import annotations

from runtime_helpers import RawClient, RuntimePKI, make_aggregator, wait_for

from fedwarden.pki import diagnose_endpoint


def served_serial(pki: RuntimePKI, port: int) -> int:
    tls = pki.client("prober")
    report = diagnose_endpoint(
        "127.0.0.1", port, tls.ca.read_bytes(), tls.cert, tls.key, "localhost", timeout=10.0
    )
    assert report.handshake, report.problems
    assert report.server_certificate is not None
    return int(report.server_certificate.serial_number)


def test_server_certificate_reloads_without_dropping_connections(runtime_pki: RuntimePKI) -> None:
    agg, _ = make_aggregator(runtime_pki, rounds=1, min_available=50, dim=4)
    raw = None
    try:
        assert agg.port is not None
        first = served_serial(runtime_pki, agg.port)
        raw = RawClient(runtime_pki.client("site-1"), agg.port)
        assert raw.join().client_id == "site-1"
        renewed = runtime_pki.pki.issue_server(["localhost"], ["127.0.0.1"], keep_key=True)
        assert renewed.certificate.serial_number != first
        assert wait_for(
            lambda: served_serial(runtime_pki, agg.port) == renewed.certificate.serial_number
        )
        assert raw.join().client_id == "site-1"  # the established channel still works
    finally:
        if raw is not None:
            raw.close()
        agg.stop()
