"""The aggregator process: the mutual-TLS gRPC server, the round loop, atomic checkpoints,
status reporters, Prometheus metrics and health endpoints. See :mod:`fedwarden.aggregator.server`
and docs/runtime.md.

It uses :mod:`fedwarden.pipeline`, :mod:`fedwarden.pki`, :mod:`fedwarden.wire` and
:mod:`fedwarden.k8s` (the service account's credentials); only the command line and the
benchmarks import it (docs/architecture.md).
"""

from fedwarden.aggregator.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from fedwarden.aggregator.config import AggregatorConfig, Sampler
from fedwarden.aggregator.metrics import AggregatorMetrics, HealthServer
from fedwarden.aggregator.reporting import (
    ClientFlagged,
    ConsoleReporter,
    Event,
    JsonlReporter,
    ModelExported,
    MultiReporter,
    RecordingReporter,
    Rejection,
    Reporter,
    RoundAbandoned,
    RoundFinished,
    RoundStarted,
    TrainingFinished,
    TrainingStarted,
    read_jsonl,
)
from fedwarden.aggregator.revocation import (
    CallbackRevoker,
    CRLRevoker,
    LogOnlyRevoker,
    Revoker,
)
from fedwarden.aggregator.server import Aggregator, ClientFate, pipeline_reason_code
from fedwarden.aggregator.tls import ServerTLS, training_from_bundle

__all__ = [
    "Aggregator",
    "AggregatorConfig",
    "AggregatorMetrics",
    "CRLRevoker",
    "CallbackRevoker",
    "Checkpoint",
    "CheckpointError",
    "ClientFate",
    "ClientFlagged",
    "ConsoleReporter",
    "Event",
    "HealthServer",
    "JsonlReporter",
    "LogOnlyRevoker",
    "ModelExported",
    "MultiReporter",
    "RecordingReporter",
    "Rejection",
    "Reporter",
    "Revoker",
    "RoundAbandoned",
    "RoundFinished",
    "RoundStarted",
    "Sampler",
    "ServerTLS",
    "TrainingFinished",
    "TrainingStarted",
    "load_checkpoint",
    "pipeline_reason_code",
    "read_jsonl",
    "save_checkpoint",
    "training_from_bundle",
]
