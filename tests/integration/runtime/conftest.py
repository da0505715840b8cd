"""Fixtures of the runtime's integration tests (see runtime_helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_helpers import RuntimePKI


@pytest.fixture
def runtime_pki(tmp_path: Path) -> RuntimePKI:
    return RuntimePKI.create(tmp_path)
