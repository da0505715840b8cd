"""``fedwarden aggregator`` and ``fedwarden client`` as processes: help, clean errors, exit codes,
the aggregator's metrics server, and a short training between separate processes."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from runtime_helpers import TIMEOUT, RuntimePKI, free_port, make_aggregator

from fedwarden.aggregator import Checkpoint, save_checkpoint
from fedwarden.cli import main
from fedwarden.client import BuiltinTask, FederationClient
from fedwarden.pki import TrainingPKI, TrainingRef

RUN = [sys.executable, "-c", "from fedwarden.cli import main; main()"]


def test_help_and_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    for command in ("aggregator", "client"):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "Exit codes" in result.output
    result = runner.invoke(main, ["aggregator", "--rounds", "1", "--task", "digits-logreg"])
    assert result.exit_code == 2
    assert "--pki-dir" in result.output
    result = runner.invoke(
        main, ["aggregator", "--rounds", "1", "--pki-dir", str(tmp_path), "--task", "x"]
    )
    assert result.exit_code == 1
    assert "does not exist" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["client", "--server", "127.0.0.1:1", "--task", "digits-logreg"])
    assert result.exit_code == 2
    result = runner.invoke(
        main,
        [
            "client",
            "--tls-dir",
            str(tmp_path),
            "--server",
            "127.0.0.1:1",
            "--task",
            "digits-logreg",
        ],
    )
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_bad_settings_are_clean_errors(runtime_pki: RuntimePKI) -> None:
    runner = CliRunner()
    base = ["aggregator", "--pki-dir", str(runtime_pki.ca_dir), "--rounds", "1"]
    result = runner.invoke(main, [*base, "--task", "digits-cnn"])
    assert result.exit_code == 1
    assert "unknown task" in result.output
    result = runner.invoke(main, [*base, "--task", "digits-logreg", "--noise-multiplier", "1"])
    assert result.exit_code == 1
    assert "need --dp" in result.output
    result = runner.invoke(
        main,
        [
            *base,
            "--task",
            "digits-logreg",
            "--dp",
            "central",
            "--sampling",
            "fixed",
            "--noise-multiplier",
            "1",
        ],
    )
    assert result.exit_code == 1
    assert "poisson" in result.output


def test_metrics_address_port_0_serves_metrics_where_the_aggregator_says(
    runtime_pki: RuntimePKI,
) -> None:
    aggregator = subprocess.Popen(
        [*RUN, "aggregator", "--pki-dir", str(runtime_pki.ca_dir), "--listen", "127.0.0.1:0",
         "--metrics-address", "127.0.0.1:0", "--rounds", "1", "--num-parameters", "4",
         "--min-available", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(3 * TIMEOUT, aggregator.kill)  # a bound against hangs
    watchdog.start()
    try:
        assert aggregator.stderr is not None
        seen = []
        for line in aggregator.stderr:  # until the start-up message (EOF: it exited)
            seen.append(line)
            if found := re.search(r"metrics on (http://127\.0\.0\.1:(\d+))/metrics", line):
                break
        else:
            raise AssertionError("no 'metrics on' line:\n" + "".join(seen))
        assert int(found.group(2)) != 0  # the port the server picked
        with urllib.request.urlopen(f"{found.group(1)}/metrics", timeout=TIMEOUT) as response:
            assert response.status == 200
            assert "fedwarden_" in response.read().decode()
        with urllib.request.urlopen(f"{found.group(1)}/readyz", timeout=TIMEOUT) as response:
            assert response.status == 200
        aggregator.terminate()
        assert aggregator.wait(TIMEOUT) == 3  # stopped before the end
    finally:
        watchdog.cancel()
        if aggregator.poll() is None:
            aggregator.kill()
            aggregator.wait()


def test_processes_train_and_a_revoked_client_exits_3(runtime_pki: RuntimePKI) -> None:
    port = free_port()
    names = ["site-0", "site-1"]
    dirs = [runtime_pki.client(n).root for n in names]
    revoked = runtime_pki.client("site-9").root
    runtime_pki.pki.revoke_client("site-9", "key-compromise")
    aggregator = subprocess.Popen(
        [*RUN, "aggregator", "--pki-dir", str(runtime_pki.ca_dir), "--listen",
         f"127.0.0.1:{port}", "--rounds", "2", "--task", "digits-logreg", "--min-available", "2",
         "--poll-timeout", "1", "--quiet", "--json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    clients = [
        subprocess.Popen(
            [
                *RUN,
                "client",
                "--tls-dir",
                str(d),
                "--server",
                f"127.0.0.1:{port}",
                "--task",
                "digits-logreg",
                "--partition",
                "iid",
                "--client-index",
                str(i),
                "--num-clients",
                "2",
                "--json",
                "--backoff-max",
                "0.5",
                "--give-up-after",
                "60",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i, d in enumerate(dirs)
    ]
    try:
        outputs = [c.communicate(timeout=180) for c in clients]
        agg_out, agg_err = aggregator.communicate(timeout=180)
    finally:
        for p in (aggregator, *clients):
            if p.poll() is None:
                p.kill()
    assert aggregator.returncode == 0, agg_err.decode()[-2000:]
    summary = json.loads(agg_out)
    assert summary["status"] == "completed"
    assert summary["rounds"] == 2
    assert summary["fates"]["site-0"]["aggregated"] == 2
    for client, (out, err) in zip(clients, outputs, strict=True):
        assert client.returncode == 0, err.decode()[-2000:]
        result = json.loads(out)
        assert result["status"] == "done"
        assert [r["status"] for r in result["rounds"]] == ["accepted", "accepted"]

    # a revoked client against a running aggregator: refused, with the reason, exit code 3
    agg, _ = make_aggregator(runtime_pki, rounds=1, min_available=5, dim=4)
    try:
        done = subprocess.run(
            [*RUN, "client", "--tls-dir", str(revoked), "--server", f"127.0.0.1:{agg.port}",
             "--task", "digits-logreg", "--json"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        agg.stop()
    assert done.returncode == 3, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout)
    assert result["status"] == "refused"
    assert result["reason"] == "revoked"
    assert "key-compromise" in done.stderr.decode()


def test_user_mistakes_at_start_are_one_line_errors(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    base = [*RUN, "aggregator", "--pki-dir", str(runtime_pki.ca_dir), "--rounds", "1",
            "--task", "digits-logreg"]  # fmt: skip

    def refused(*args: str) -> str:
        done = subprocess.run(
            [*base, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        return lines[0]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused("--listen", f"127.0.0.1:{port}")
    assert line == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"

    # a checkpoint of this training whose pipeline state lacks the noise multiplier
    state = tmp_path / "state"
    pipeline = {"round": 1, "clipper": {}, "accountant": None, "strikes": {}}
    size = BuiltinTask("digits-logreg").num_parameters
    uri = runtime_pki.training.uri
    save_checkpoint(state, Checkpoint(uri, 1, np.zeros(size, np.float32), pipeline))
    line = refused("--checkpoint-dir", str(state))
    assert str(state) in line
    assert "'noise_multiplier'" in line


def test_demo_workdir_that_cannot_be_written_is_a_one_line_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    result = CliRunner().invoke(main, ["demo", "--workdir", str(blocked / "work")])
    assert result.exit_code == 1
    assert (
        result.output.strip() == f"Error: cannot use --workdir {blocked / 'work'}: Not a directory"
    )


def test_an_aggregator_whose_certificate_is_of_another_training_refuses_to_start(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    other = TrainingPKI.init(tmp_path / "other", TrainingRef("team-b", "cifar"))
    ours = runtime_pki.pki.dir
    done = subprocess.run(
        [*RUN, "aggregator", "--pki-dir", str(other.dir.root), "--cert", str(ours.server_cert),
         "--key", str(ours.server_key), "--rounds", "1", "--task", "digits-logreg"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(ours.server_cert) in line
    assert str(other.dir.bundle) in line
    assert runtime_pki.pki.ca.subject in line  # the issuer it has
    assert other.ca.subject in line  # the CA it would trust


def test_a_client_given_another_trainings_ca_names_the_issuer_it_saw(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    other = TrainingPKI.init(tmp_path / "other", TrainingRef("team-b", "cifar"))
    agg, _ = make_aggregator(runtime_pki, rounds=1, min_available=1, dim=4)
    try:
        assert agg.port is not None
        config = runtime_pki.client_config(
            "site-1", agg.port, ca=other.dir.bundle, give_up_after=0.5
        )
        client = FederationClient(config, BuiltinTask("digits-logreg"))
        result = client.run()
    finally:
        agg.stop()
    assert result.status == "unreachable"
    issuer = [p for p in client.last_problems if p.code == "unknown-issuer"]
    assert issuer, client.last_problems
    assert runtime_pki.pki.ca.subject in issuer[0].message
    assert runtime_pki.pki.ca.subject in result.message


def test_record_level_dp_between_processes_ends_when_the_sites_budgets_are_spent(
    runtime_pki: RuntimePKI,
) -> None:
    # `fedwarden aggregator --dp record --target-epsilon 1`: each site's budget, announced; the
    # built-in clients train with DP-SGD for two rounds' worth of it, then the training ends
    port = free_port()
    aggregator = subprocess.Popen(
        [*RUN, "aggregator", "--pki-dir", str(runtime_pki.ca_dir), "--listen",
         f"127.0.0.1:{port}", "--rounds", "5", "--task", "wine-logreg", "--min-available", "2",
         "--dp", "record", "--target-epsilon", "1", "--poll-timeout", "1", "--quiet", "--json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    clients = [
        subprocess.Popen(
            [
                *RUN,
                "client",
                "--tls-dir",
                str(runtime_pki.client(f"site-{i}").root),
                "--server",
                f"127.0.0.1:{port}",
                "--task",
                "wine-logreg",
                "--client-index",
                str(i),
                "--num-clients",
                "2",
                "--app-config",
                "dp-epsilon=1",
                "--app-config",
                "dp-rounds=2",
                "--json",
                "--backoff-max",
                "0.5",
                "--give-up-after",
                "60",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    try:
        outputs = [c.communicate(timeout=240) for c in clients]
        agg_out, agg_err = aggregator.communicate(timeout=240)
    finally:
        for p in (aggregator, *clients):
            if p.poll() is None:
                p.kill()
    assert aggregator.returncode == 0, agg_err.decode()[-2000:]
    summary = json.loads(agg_out)
    assert summary["status"] == "budget-exhausted"
    assert summary["rounds"] == 2
    assert 0.9 < summary["epsilon"] <= 1.0  # the largest ε a site signed
    for client, (out, err) in zip(clients, outputs, strict=True):
        assert client.returncode == 0, err.decode()[-2000:]
        result = json.loads(out)
        assert result["reason"] == "budget-exhausted"
        assert [r["status"] for r in result["rounds"]] == ["accepted", "accepted"]
