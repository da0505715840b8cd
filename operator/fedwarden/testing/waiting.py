"""Polling until something holds, for tests against the control plane."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    check: Callable[[], Any], timeout: float = 60.0, what: str = "", interval: float = 0.1
) -> Any:
    """Call ``check`` every ``interval`` seconds until it returns something truthy, and return
    that; after ``timeout`` seconds raise ``AssertionError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)
