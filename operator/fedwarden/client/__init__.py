"""The client process: dials out to the aggregator over mutual TLS, trains an app on local data,
signs its update and streams it in chunks. See :mod:`fedwarden.client.runtime` and
docs/runtime.md.

It uses :mod:`fedwarden.pipeline` (local DP), :mod:`fedwarden.pki`, :mod:`fedwarden.wire` and
:mod:`fedwarden.sim` (the built-in tasks); only the command line, the demo and the benchmarks
import it (docs/architecture.md).
"""

from fedwarden.client.apps import (
    App,
    AppError,
    FitResult,
    NumPyClientApp,
    Task,
    load_app,
    parse_app_config,
)
from fedwarden.client.runtime import (
    EXIT_CODES,
    Backoff,
    ClientConfig,
    ClientResult,
    FederationClient,
    RoundOutcome,
    explain_handshake_failure,
)
from fedwarden.client.tasks import TASKS, BuiltinTask, PartitionSpec, builtin_app, split_task_name
from fedwarden.pipeline.evaluation import Evaluation

__all__ = [
    "EXIT_CODES",
    "TASKS",
    "App",
    "AppError",
    "Backoff",
    "BuiltinTask",
    "ClientConfig",
    "ClientResult",
    "Evaluation",
    "FederationClient",
    "FitResult",
    "NumPyClientApp",
    "PartitionSpec",
    "RoundOutcome",
    "Task",
    "builtin_app",
    "explain_handshake_failure",
    "load_app",
    "parse_app_config",
    "split_task_name",
]
