"""The aggregator's export of the trained model (``--output-model DIR``) and what it records.

At each checkpoint and at the end of the training, after the checkpoint is on disk, the
aggregator writes ``DIR/model.safetensors`` and the signed ``DIR/provenance.json``
(:func:`fedwarden.model.export_model`) from the state the checkpoint holds: the export never
shows a round the checkpoint does not, so a restart never takes back a model that left.

:class:`ParticipationHistory` is who took part in which round. It lives in the checkpoint (a
restart keeps it) and is bounded: the last :data:`ROUNDS_KEPT` rounds are kept client by client,
older rounds only as each client's count of aggregated rounds and the number of rounds left out.

:class:`ModelExporter` writes the export and hands out a consistent pair of files to the
``FetchModel`` RPC (docs/apps.md): it holds a lock over the two renames and over opening the two
files, and a file opened before a later export's rename keeps its old content. Only a reader of
the training (:func:`fedwarden.wire.fetch.reader_of`) may fetch; clients may not, so the model
is still served to clients only as FL04 requires (sampled, counted, throttled).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fedwarden.aggregator.reporting import ModelExported, RoundFinished
from fedwarden.model import Signer, export_model
from fedwarden.pipeline import ParameterLayout
from fedwarden.wire.fetch import ExportPair, open_export

if TYPE_CHECKING:
    from fedwarden.aggregator.config import AggregatorConfig
    from fedwarden.pipeline.round import Pipeline

log = logging.getLogger("fedwarden.aggregator")

ROUNDS_KEPT = 1000
"""Rounds whose participants the history keeps by name (about 1000 × cohort names)."""


@dataclass
class ParticipationHistory:
    """Who took part in which round; see the module docstring."""

    rounds: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """``{"round", "aggregated", "rejected"}`` of the last rounds, oldest first."""
    aggregated_rounds: dict[str, int] = dataclasses.field(default_factory=dict)
    """client -> rounds whose aggregate included its update, over the whole training."""
    rounds_left_out: int = 0
    """Older rounds no longer kept by name."""
    keep: int = ROUNDS_KEPT

    def record(self, event: RoundFinished) -> None:
        """Add a completed round; recording a round again (a redone round) replaces it."""
        for index, entry in enumerate(self.rounds):
            if entry["round"] == event.round:
                for client in entry["aggregated"]:
                    self.aggregated_rounds[client] -= 1
                del self.rounds[index]
                break
        self.rounds.append(
            {
                "round": event.round,
                "aggregated": sorted(event.accepted),
                "rejected": sorted(event.rejected),
            }
        )
        for client in event.accepted:
            self.aggregated_rounds[client] = self.aggregated_rounds.get(client, 0) + 1
        while len(self.rounds) > self.keep:
            self.rounds.pop(0)
            self.rounds_left_out += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": [dict(r) for r in self.rounds],
            "aggregated_rounds": dict(sorted(self.aggregated_rounds.items())),
            "rounds_left_out": self.rounds_left_out,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | None, keep: int = ROUNDS_KEPT
    ) -> ParticipationHistory:
        if not data:
            return cls(keep=keep)
        return cls(
            rounds=[dict(r) for r in data.get("rounds", [])],
            aggregated_rounds={
                str(k): int(v) for k, v in data.get("aggregated_rounds", {}).items()
            },
            rounds_left_out=int(data.get("rounds_left_out", 0)),
            keep=keep,
        )


def _json_safe(value: Any) -> Any:
    """``value`` with tuples as lists and non-finite floats as strings (JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def provenance_facts(
    *,
    training_uid: str,
    identity: str,
    status: str,
    rounds_done: int,
    settings: AggregatorConfig,
    pipeline: Pipeline,
    participation: ParticipationHistory,
    bans: Mapping[str, str],
) -> dict[str, Any]:
    """What the aggregator knows of how its model was made, for ``provenance.json``."""
    config = pipeline.config
    privacy = config.privacy
    private = privacy.mode != "none"
    facts: dict[str, Any] = _json_safe(
        {
            "training": {"uid": training_uid, "identity": identity},
            "status": status,
            "rounds_completed": rounds_done,
            "rounds_planned": settings.rounds,
            "privacy": {
                "mode": privacy.mode,
                "epsilon": pipeline.epsilon if private else None,
                "delta": privacy.delta if private else None,
                "target_epsilon": privacy.target_epsilon,
                "accountant": privacy.accountant if private else None,
                "noise_multiplier": pipeline.noise_multiplier if private else None,
                "noise_seeded": pipeline.seeded,
            },
            "aggregation": {
                "method": config.aggregator,
                "params": dict(config.aggregator_params),
                "validation": dataclasses.asdict(config.validation),
                "free_riders": dataclasses.asdict(config.free_riders),
                "strikes_to_ban": config.strikes_to_ban,
            },
            "clipping": dataclasses.asdict(config.clipping),
            "sampling": {
                "sampling": settings.sampling,
                "fraction": settings.fraction,
                "min_per_round": settings.min_per_round,
                "min_available": settings.min_available,
            },
            "participation": participation.to_dict(),
            "bans": dict(sorted(bans.items())),
        }
    )
    return facts


class ModelExporter:
    """Writes the export into ``directory``, signed with the key of the aggregator's server
    certificate (read again at each export: the operator renews it while the training runs)."""

    def __init__(
        self, directory: Path | str, layout: ParameterLayout, cert: Path, key: Path
    ) -> None:
        self.directory = Path(directory)
        self.layout = layout
        self.cert = cert
        self.key = key
        self._lock = threading.Lock()

    def export(self, model: npt.NDArray[np.float32], facts: Mapping[str, Any]) -> ModelExported:
        exported = export_model(
            self.directory,
            model,
            self.layout,
            facts,
            Signer.from_files(self.cert, self.key),
            lock=self._lock,
        )
        log.info("exported the model of round %d (sha256 %s)", exported.round, exported.sha256)
        return ModelExported(
            round=exported.round, sha256=exported.sha256, directory=str(self.directory)
        )

    def open_pair(self) -> ExportPair | None:
        """The last export (:func:`fedwarden.wire.fetch.open_export`), never a half-renamed
        pair: the lock is the one held over an export's two renames."""
        with self._lock:
            return open_export(self.directory)
