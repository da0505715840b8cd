"""``fedwarden demo``'s text table and ``--json``: whole reasons, rounded numbers, no repeated
prefix, the victim's refusals counted, and nothing but JSON from ``--json``."""

from __future__ import annotations

import io
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from fedwarden.commands import demo as demo_command
from fedwarden.demo.run import DemoResult, refusal_text

BAN = (
    "3 strikes, the last in round 5: statistical outlier: norm 27.38 has robust z-score 20.8 > "
    "14.0 against the cohort"
)


def _result() -> DemoResult:
    client: dict[str, Any] = {
        "client": "site-07", "role": "poisoner", "accepted_rounds": 1, "refusals": 4,
        "last_refusal": None, "banned": BAN, "epsilon": None, "exit": "refused",
    }  # fmt: skip
    return DemoResult(
        accuracy=0.6511111111111111,
        reference_accuracy=0.936,
        epsilon=0.9999904893974685,
        delta=1e-5,
        guarantee="example-level",
        rounds=10,
        status="completed",
        clients=[client],
        defences={"model learned": {"held": True, "detail": "accuracy 0.651"}},
        relay={},
        workdir=None,
        seconds=20.0,
    )


def test_the_table_keeps_whole_reasons_and_rounds_its_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(demo_command, "console", Console(file=out, width=100))
    demo_command._print(_result())
    text = " ".join(out.getvalue().split())
    assert "14.0" in text.replace("│", "")  # the threshold, on a wrapped line
    assert "0.651 " in text
    assert "0.6511" not in text
    assert "1.000" in text  # ε rounded up, never shown as less than spent
    assert "0.99999" not in text


def test_a_reason_the_message_starts_with_is_not_repeated() -> None:
    assert refusal_text("free-riding", "free-riding: replay") == "free-riding: replay"
    assert refusal_text("tampered", "the digest differs") == "tampered: the digest differs"


def test_json_writes_nothing_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    def run_demo(config: Any, on_event: Any) -> DemoResult:
        on_event({"event": "round_started", "round": 1, "sampled": ["a"]})
        return _result()

    monkeypatch.setattr(demo_command, "run_demo", run_demo)
    result = CliRunner().invoke(demo_command.demo, ["--rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
