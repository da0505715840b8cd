"""Fixtures shared by the unit tests."""

from __future__ import annotations

from typing import Any

import click
import pytest

from fedwarden.commands import aggregator as aggregator_command


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options ``fedwarden aggregator``'s ``_build`` receives; the command stops there
    (exit 0), so a test sees what the flags and ``--config`` make of the settings."""
    captured: dict[str, Any] = {}

    def build(options: dict[str, Any]) -> Any:
        captured.update(options)
        raise click.exceptions.Exit(0)

    monkeypatch.setattr(aggregator_command, "_build", build)
    return captured
