"""`fedwarden pki` through click's CliRunner (the group is imported directly)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import stat
import threading

import pytest
from click.testing import CliRunner

from fedwarden.commands.pki import pki
from fedwarden.pki import load_certificate, server_ssl_context


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(pki, list(args))
        assert result.exit_code == code, (result.output, result.stderr, result.exception)
        assert "Traceback" not in result.output + result.stderr
        return result

    return invoke


@pytest.fixture
def ca_dir(run):
    run("init-ca", "--training", "mnist", "--namespace", "team-a", "--out", "ca")
    return "ca"


def test_every_subcommand_has_help(run):
    commands = ("init-ca", "server", "issue", "csr", "sign", "revoke", "refresh-crl", "rotate-ca")
    for command in (*commands, "check"):
        assert "Usage:" in run(command, "--help").output


def test_remote_enrolment_end_to_end(run, ca_dir, tmp_path):
    out = run(
        "csr", "--client", "site-1", "--training", "mnist", "--namespace", "team-a",
        "--out", "site",
    ).output  # fmt: skip
    assert "never leaves" in out
    key = tmp_path / "site" / "tls.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    run("sign", "--ca-dir", ca_dir, "--csr", "site/tls.csr", "--client", "site-1",
        "--out", "site/tls.crt")  # fmt: skip
    cert = load_certificate((tmp_path / "site" / "tls.crt").read_bytes())
    assert cert.subject.rfc4514_string().startswith("CN=site-1")
    assert (tmp_path / "ca" / "clients" / "site-1.crt").exists()
    assert not (tmp_path / "ca" / "clients" / "site-1.key").exists()  # the key stayed at the site
    healthy = run(
        "check", "--cert", "site/tls.crt", "--key", "site/tls.key", "--ca", "ca/ca-bundle.crt",
        "--crl", "ca/crl.pem", "--name", "site-1",
    ).output  # fmt: skip
    assert "OK: no problems found" in healthy

    run("revoke", "--ca-dir", ca_dir, "--client", "site-1", "--reason", "privilege-withdrawn")
    result = run(
        "check", "--cert", "site/tls.crt", "--ca", "ca/ca-bundle.crt", "--crl", "ca/crl.pem",
        code=1,
    )  # fmt: skip
    assert "✗ revoked" in result.output
    assert "privilege-withdrawn" in result.output
    assert "fix: " in result.output


def test_sign_refuses_a_csr_for_another_client_cleanly(run, ca_dir):
    run("csr", "--client", "site-1", "--training", "mnist", "--namespace", "team-a", "--out", "s")
    result = run(
        "sign", "--ca-dir", ca_dir, "--csr", "s/tls.csr", "--client", "site-2", "--out", "x.crt",
        code=2,
    )  # fmt: skip
    assert "CSR refused: the CSR's commonName is 'site-1', expected 'site-2'" in result.stderr
    result = run(
        "sign", "--ca-dir", ca_dir, "--csr", "s/tls.csr", "--client", "site-1", "--out", "x.crt",
        "--days", "365",
    code=2)  # fmt: skip
    assert "365 days exceeds the policy's maximum of 90 days" in result.stderr


def test_csr_does_not_overwrite_an_enrolled_key(run):
    args = ["csr", "--client", "a", "--training", "t", "--namespace", "n", "--out", "s"]
    run(*args)
    assert "already exists" in run(*args, code=2).stderr
    run(*args, "--force")


def test_in_cluster_issue_and_server_write_secret_shaped_directories(run, ca_dir, tmp_path):
    data = json.loads(
        run("issue", "--ca-dir", ca_dir, "--client", "site-9", "--out", "c9", "--json").output
    )
    assert data["identity"].endswith("/training/mnist/client/site-9")
    assert sorted(p.name for p in (tmp_path / "c9").iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    run("server", "--ca-dir", ca_dir, "--dns", "localhost", "--ip", "127.0.0.1", "--out", "srv")
    result = run(
        "check", "--cert", "srv/tls.crt", "--key", "srv/tls.key", "--ca", "srv/ca.crt",
        "--purpose", "server", "--name", "127.0.0.1",
    )  # fmt: skip
    assert "OK" in result.output
    result = run(
        "check", "--cert", "srv/tls.crt", "--key", "c9/tls.key", "--ca", "srv/ca.crt",
        "--purpose", "client", "--json", code=1,
    )  # fmt: skip
    report = json.loads(result.output)
    assert report["ok"] is False
    assert [p["code"] for p in report["problems"]] == [
        "wrong-extended-key-usage", "foreign-identity", "key-mismatch",
    ]  # fmt: skip
    assert all(p["hint"] for p in report["problems"])


def test_check_flags_a_key_readable_by_others(run, ca_dir, tmp_path):
    run("issue", "--ca-dir", ca_dir, "--client", "site-1", "--out", "c1")
    (tmp_path / "c1" / "tls.key").chmod(0o644)
    result = run("check", "--cert", "c1/tls.crt", "--key", "c1/tls.key", code=1)
    assert "✗ key-permissions" in result.output
    assert "0644" in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["check", "--cert", "missing.crt"], "missing.crt does not exist"),
        (["check", "--cert", "ca/ca.key"], "holds a PEM block of type 'PRIVATE KEY'"),
        (["check"], "give --cert FILE"),
        (["check", "--endpoint", "127.0.0.1:1"], "--endpoint needs --ca FILE"),
        (["revoke", "--ca-dir", "ca"], "exactly one of --cert FILE or --client NAME"),
        (["revoke", "--ca-dir", "ca", "--client", "nobody"], "no certificate recorded"),
        (["issue", "--ca-dir", "nowhere", "--client", "a", "--out", "x"], "does not exist"),
        (["issue", "--ca-dir", "ca", "--client", "Bad_Name", "--out", "x"], "is not valid"),
        (["server", "--ca-dir", "ca", "--out", "x"], "at least one --dns NAME or --ip"),
        (["server", "--ca-dir", "ca", "--dns", "bad name", "--out", "x"], "is not a DNS name"),
    ],
)
def test_user_mistakes_are_clean_errors(run, ca_dir, args, fragment):
    result = run(*args, code=2)
    assert fragment in result.stderr


def test_rotate_ca_in_two_steps(run, ca_dir):
    started = json.loads(run("rotate-ca", "--ca-dir", ca_dir, "--json").output)
    assert len(started["bundle"]) == 2
    assert not started["finished"]
    assert "already under way" in run("rotate-ca", "--ca-dir", ca_dir, code=2).stderr
    finished = json.loads(run("rotate-ca", "--ca-dir", ca_dir, "--finish", "--json").output)
    assert finished["bundle"] == [started["ca"]]


@contextlib.contextmanager
def _tls_server(tmp_path):
    context = server_ssl_context(
        tmp_path / "srv" / "tls.crt",
        tmp_path / "srv" / "tls.key",
        tmp_path / "srv" / "ca.crt",
        minimum_version=ssl.TLSVersion.TLSv1_3,
    )
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)  # so that the thread notices `stop` (close() does not wake accept)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(30)
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=30)
        listener.close()


def test_check_endpoint_must_be_host_port(run, ca_dir):
    result = run("check", "--endpoint", "aggregator:99999", "--ca", f"{ca_dir}/ca.crt", code=2)
    assert "Invalid value for --endpoint: 'aggregator:99999' is not HOST:PORT" in result.output


def test_check_endpoint(run, ca_dir, tmp_path):
    run("server", "--ca-dir", ca_dir, "--dns", "localhost", "--ip", "127.0.0.1", "--out", "srv")
    run("issue", "--ca-dir", ca_dir, "--client", "site-1", "--out", "c1")
    with _tls_server(tmp_path) as port:
        endpoint = f"127.0.0.1:{port}"
        result = run(
            "check", "--endpoint", endpoint, "--ca", "c1/ca.crt", "--cert", "c1/tls.crt",
            "--key", "c1/tls.key",
        )  # fmt: skip
        assert "handshake ok (TLSv1.3" in result.output
        result = run("check", "--endpoint", endpoint, "--ca", "c1/ca.crt", "--json", code=1)
        report = json.loads(result.output)
        assert report["endpoint"]["handshake"] is False
        assert [p["code"] for p in report["problems"]] == ["client-cert-required"]


def test_check_finds_the_crl_beside_the_ca_or_says_revocation_was_not_checked(run, ca_dir):
    run("issue", "--ca-dir", ca_dir, "--client", "site-1", "--out", "c1")
    run("revoke", "--ca-dir", ca_dir, "--client", "site-1", "--reason", "key-compromise")
    result = run("check", "--cert", "c1/tls.crt", "--ca", f"{ca_dir}/ca-bundle.crt", code=1)
    assert f"revocation checked against {ca_dir}/crl.pem" in result.output
    assert "✗ revoked" in result.output
    # a bundle with no crl.pem beside it (a client's TLS directory): not "OK" without a word
    result = run("check", "--cert", "c1/tls.crt", "--ca", "c1/ca.crt")
    assert "revocation NOT checked" in result.output
    assert "OK: no problems found (revocation not checked)" in result.output
    report = json.loads(run("check", "--cert", "c1/tls.crt", "--ca", "c1/ca.crt", "--json").output)
    assert report["revocation"] == {"checked": False, "crl": None}
