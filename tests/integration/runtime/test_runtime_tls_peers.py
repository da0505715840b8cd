"""A real TLS peer (``openssl s_client``) against the aggregator's gRPC port.

No client certificate, a certificate of another CA (made by openssl) and an expired one are
refused during the handshake: the server closes the connection and no RPC ever reaches the
aggregator. A revoked certificate passes the handshake (gRPC's TLS library does not read CRLs)
and is refused at the first RPC, before any update byte is read, with the reason, and counted.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from runtime_helpers import OPENSSL, RawClient, RuntimePKI, make_aggregator, run_openssl

from fedwarden.client import explain_handshake_failure
from fedwarden.pki import diagnose_endpoint

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


def s_client(port: int, ca: str, *extra: str) -> tuple[int, str]:
    """``openssl s_client`` with ALPN h2; ``-ign_eof`` waits for the server to close."""
    result = run_openssl(
        "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "h2", "-CAfile", ca,
        "-servername", "localhost", *extra,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def openssl_foreign_client(tmp) -> tuple[str, str]:
    """A CA and a clientAuth certificate made by openssl, not by the training's CA."""
    d = tmp / "foreign"
    d.mkdir()
    key, crt = str(d / "ca.key"), str(d / "ca.crt")
    run_openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    cfg = d / "ext.cnf"
    cfg.write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[ca]\nbasicConstraints=critical,CA:TRUE\n"
        "keyUsage=critical,keyCertSign,cRLSign\n[leaf]\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
        "subjectAltName=URI:spiffe://fedwarden.local/ns/team-a/training/digits/client/mallory\n"
    )
    run_openssl("req", "-x509", "-new", "-key", key, "-subj", "/CN=digits", "-days", "30",
                "-config", str(cfg), "-extensions", "ca", "-out", crt)  # fmt: skip
    leaf_key, leaf_csr, leaf_crt = str(d / "c.key"), str(d / "c.csr"), str(d / "c.crt")
    run_openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", leaf_key)
    run_openssl("req", "-new", "-key", leaf_key, "-subj", "/CN=mallory", "-config", str(cfg),
                "-out", leaf_csr)  # fmt: skip
    done = run_openssl("x509", "-req", "-in", leaf_csr, "-CA", crt, "-CAkey", key,
                       "-CAcreateserial", "-days", "30", "-extfile", str(cfg), "-extensions",
                       "leaf", "-out", leaf_crt)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return leaf_crt, leaf_key


def test_handshake_refusals_and_revocation(runtime_pki: RuntimePKI, tmp_path) -> None:
    agg, reporter = make_aggregator(runtime_pki, rounds=1, min_available=50, dim=8)
    try:
        port = agg.port
        assert port is not None
        ca = str(runtime_pki.ca_dir / "ca-bundle.crt")

        # a valid certificate: the handshake completes, in TLS 1.3
        good = runtime_pki.client("site-1")
        rc, out = s_client(port, ca, "-cert", str(good.cert), "-key", str(good.key))
        assert rc == 0, out
        assert "Verify return code: 0 (ok)" in out
        assert "TLSv1.3" in out

        # no client certificate: the server closes the connection after its handshake messages
        rc, out = s_client(port, ca, "-ign_eof")
        assert rc != 0
        assert "unexpected eof" in out.lower() or "alert" in out.lower(), out
        # ... and `pki check --endpoint` without a certificate names the cause
        report = diagnose_endpoint(
            "127.0.0.1", port, runtime_pki.pki.bundle(), server_name="localhost"
        )
        assert [p.code for p in report.problems] == ["client-cert-required"], report.problems

        # a certificate of another CA, made by openssl
        foreign_crt, foreign_key = openssl_foreign_client(tmp_path)
        rc, out = s_client(port, ca, "-cert", foreign_crt, "-key", foreign_key, "-ign_eof")
        assert rc != 0
        assert "unexpected eof" in out.lower() or "alert" in out.lower(), out

        # an expired certificate of the right CA
        expired = runtime_pki.expired_client("site-old")
        rc, out = s_client(port, ca, "-cert", str(expired.cert), "-key", str(expired.key),
                           "-ign_eof")  # fmt: skip
        assert rc != 0
        assert "unexpected eof" in out.lower() or "alert" in out.lower(), out

        # none of these reached the application: no RPC was refused, none was even seen
        assert agg.metrics.snapshot().get("peers_refused", {}) == {}
        assert agg.fates() == {}

        # gRPC clients with those certificates fail at the handshake, and the client runtime
        # names the reason from its own certificate
        raw = RawClient(expired, port)
        with pytest.raises(grpc.RpcError) as info:
            raw.join()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        problems = explain_handshake_failure(
            info.value.details(),
            ca_pem=expired.ca.read_bytes(),
            cert_pem=raw.cert_pem,
            key_pem=raw.key_pem,
            server=f"127.0.0.1:{port}",
        )
        assert "expired" in {p.code for p in problems}
        raw.close()

        # a revoked certificate: the handshake completes (TLS does not read our CRL), then the
        # first RPC is refused from the peer certificate before a byte of it is read
        victim = runtime_pki.client("site-2")
        raw = RawClient(victim, port)
        raw.join()
        runtime_pki.pki.revoke_client("site-2", "key-compromise")
        rc, out = s_client(port, ca, "-cert", str(victim.cert), "-key", str(victim.key))
        assert rc == 0, out
        before = agg.metrics.value("update_bytes_received")
        sent: list[int] = []

        def messages():
            sent.append(1)
            yield b"\x0a\x03abc"  # would be a header; it must never be read
            for _ in range(100):
                sent.append(1)
                yield b"\x12\x04" + np.zeros(1, np.float32).tobytes()

        outcome = raw.submit(messages())
        assert outcome.code == grpc.StatusCode.PERMISSION_DENIED
        assert outcome.reason == "revoked"
        assert "revoked" in outcome.details
        assert "key-compromise" in outcome.details
        assert agg.metrics.value("peers_refused", "revoked") == 1
        assert agg.metrics.value("update_bytes_received") == before
        assert agg.metrics.snapshot().get("updates_rejected", {}) == {}
        refused = [e for e in reporter.snapshot() if getattr(e, "reason", None) == "revoked"]
        assert [(e.client, e.stage) for e in refused] == [("site-2", "peer")]
        # and so is every later call
        with pytest.raises(grpc.RpcError) as info:
            raw.join()
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        raw.close()
    finally:
        agg.stop()
