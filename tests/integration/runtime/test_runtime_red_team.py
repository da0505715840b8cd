"""The red-team participant (``python -m fedwarden.demo.participant``) that the examples run as
an FLClient's Job: it must outlast an aggregator restart as long as an honest ``fedwarden
client`` does, and a participant that gave up must fail its pod so that the Job restarts it.
Otherwise a poisoner drops out unbanned while the aggregator pod is replaced (the flaky
``test_examples_train_to_succeeded_and_survive_restarts_and_deletion``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from runtime_helpers import RuntimePKI, free_port

from fedwarden.client.runtime import ClientResult
from fedwarden.commands.client import client as client_command
from fedwarden.demo import participant


def _args(pki: RuntimePKI, port: int, result: Path, *extra: str) -> list[str]:
    tls = pki.client("site-8")
    return [
        "--role", "poisoner", "--tls-dir", str(tls.root), "--server", f"127.0.0.1:{port}",
        "--index", "8", "--num-clients", "10", "--rounds", "6", "--result", str(result),
        *extra,
    ]  # fmt: skip


def test_a_participant_waits_for_the_aggregator_as_long_as_an_honest_client(
    runtime_pki: RuntimePKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    class Recording:
        def __init__(self, config: Any, task: Any) -> None:
            seen["give_up_after"] = config.give_up_after

        def run(self) -> ClientResult:
            return ClientResult("site-8", "done", "completed", "all rounds completed")

    monkeypatch.setattr(participant, "FederationClient", Recording)
    assert participant.main(_args(runtime_pki, free_port(), tmp_path / "r.json")) == 0
    (option,) = [p for p in client_command.params if p.name == "give_up_after"]
    assert isinstance(option, click.Option)
    assert seen["give_up_after"] == option.default


def test_a_participant_that_gives_up_fails_so_that_its_job_restarts_it(
    runtime_pki: RuntimePKI, tmp_path: Path
) -> None:
    result = tmp_path / "r.json"
    code = participant.main(_args(runtime_pki, free_port(), result, "--give-up-after", "0.5"))
    assert code == 4  # fedwarden client's exit code for "unreachable"
    assert json.loads(result.read_text())["result"]["status"] == "unreachable"
