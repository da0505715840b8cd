"""The client process: dials out to the aggregator over mutual TLS, trains a task on local data,
signs its update and streams it in chunks. See :mod:`fedwarden.client.runtime` and
docs/runtime.md.

It uses :mod:`fedwarden.pipeline` (local DP), :mod:`fedwarden.pki`, :mod:`fedwarden.wire` and
:mod:`fedwarden.sim` (the built-in tasks); nothing imports it but the command line.
"""

from fedwarden.client.flower import NumPyClientTask
from fedwarden.client.runtime import (
    EXIT_CODES,
    Backoff,
    ClientConfig,
    ClientResult,
    FederationClient,
    RoundOutcome,
    explain_handshake_failure,
)
from fedwarden.client.tasks import (
    TASKS,
    BuiltinTask,
    FitResult,
    PartitionSpec,
    Task,
    split_task_name,
)

__all__ = [
    "EXIT_CODES",
    "TASKS",
    "Backoff",
    "BuiltinTask",
    "ClientConfig",
    "ClientResult",
    "FederationClient",
    "FitResult",
    "NumPyClientTask",
    "PartitionSpec",
    "RoundOutcome",
    "Task",
    "explain_handshake_failure",
    "split_task_name",
]
