"""Prometheus metrics of the operator (served by ``fedwarden operator --metrics-address``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram

T = TypeVar("T")

RECONCILIATIONS = Counter(
    "fedwarden_operator_reconciliations_total",
    "Reconciliations by resource kind and result.",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "fedwarden_operator_reconcile_seconds", "Time of one reconciliation.", ["kind"]
)
API_REQUESTS = Gauge(
    "fedwarden_operator_api_requests", "API requests made by the operator's client since start."
)


def measured(kind: str, work: Callable[[], T], requests: Callable[[], int]) -> T:
    started = time.perf_counter()
    try:
        result = work()
    except Exception:
        RECONCILIATIONS.labels(kind, "error").inc()
        raise
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
        API_REQUESTS.set(requests())
    RECONCILIATIONS.labels(kind, "ok").inc()
    return result


__all__ = ["measured"]
