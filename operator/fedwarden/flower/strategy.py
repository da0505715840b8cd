"""A Flower strategy that aggregates with fedwarden's robust-plus-DP pipeline.

Flower's own strategies aggregate whatever arrives: a NaN, a boosted update or a free rider's
zeros go straight into the mean (FedTrimmedAvg trims ⌊β·n⌋ per side, which is zero for β = 0.1
and five clients). :class:`FedwardenStrategy` keeps Flower's sampling, messaging and metrics
(it is a ``FedAvg`` in Flower's Message API) and replaces the aggregation: each reply's arrays
become an update against the round's global model, the cohort goes through
:class:`fedwarden.pipeline.round.Pipeline` (validation, free-rider tests, clipping, robust
aggregation, optional DP and accounting, strikes and bans), and banned nodes are no longer
sampled.

Record-level DP (``PrivacyConfig(mode="record")``): each client app trains with DP-SGD and
reports its ε in its train metrics (``epsilon``, and ``budget_spent`` = 1 when another round
would exceed its budget, as fedwarden's runtime reads them); the pipeline keeps each node's
largest ε and refuses a reply without one or past the budget. Under Flower these reports are
not signed.

What it cannot add under Flower: client certificates (Flower's SuperLink does not require
them) and signed updates. Those need fedwarden's own runtime (``fedwarden aggregator``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedwarden.pipeline import flatten, unflatten
from fedwarden.pipeline.round import Pipeline, PipelineConfig, RoundResult
from fedwarden.pipeline.site_privacy import SiteReport


class FedwardenStrategy(FedAvg):
    """FedAvg's sampling and messaging, fedwarden's pipeline for aggregation.

    Args:
        pipeline: the pipeline configuration; ``PipelineConfig.recommended()`` by default.
        seed: fixes the pipeline's DP noise, for reproducible experiments only.
        **fedavg_options: Flower's ``FedAvg`` options (``fraction_train``, ``min_train_nodes``,
            ``min_available_nodes``, ``weighted_by_key``, ...). ``num-examples`` reported by
            clients reaches only ``fedavg`` without DP: it is attacker-controlled.
    """

    def __init__(
        self,
        pipeline: PipelineConfig | None = None,
        *,
        seed: int | None = None,
        **fedavg_options: Any,
    ) -> None:
        super().__init__(**fedavg_options)
        self.pipeline_config = pipeline or PipelineConfig.recommended()
        self.seed = seed
        self.pipeline: Pipeline | None = None
        self.history: list[RoundResult] = []
        self._global: np.ndarray | None = None
        self._layout: list[tuple[str, tuple[int, ...]]] = []
        self._population = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the round's global model; sample only nodes that are not banned."""
        self._layout = [(key, arrays[key].numpy().shape) for key in arrays]
        self._global = flatten(arrays.to_numpy_ndarrays())
        self._population = len(list(grid.get_node_ids()))
        banned = set() if self.pipeline is None else self.pipeline.banned
        messages = list(super().configure_train(server_round, arrays, config, grid))
        return [m for m in messages if str(m.metadata.dst_node_id) not in banned]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Turn replies into updates, run the pipeline, return the new global model."""
        # Flower's consistency check would abort the whole round on one malformed reply;
        # the pipeline refuses that reply alone, with a reason, and the round goes on.
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        if not valid or self._global is None:
            return None, None
        pipeline = self._ensure_pipeline()
        client_ids: list[str] = []
        updates: list[object] = []
        weights: list[float] = []
        reports: dict[str, SiteReport] = {}
        for reply in valid:
            client_ids.append(str(reply.metadata.src_node_id))
            updates.append(self._update_of(reply))
            weights.append(self._weight_of(reply))
            reports[client_ids[-1]] = SiteReport(
                self._metric_of(reply, "epsilon"), bool(self._metric_of(reply, "budget_spent"))
            )
        result = pipeline.run_round(
            updates,
            client_ids,
            weights=np.asarray(weights, dtype=np.float64),
            sample_rate=self.fraction_train,
            site_reports=reports,
        )
        self.history.append(result)
        new_global = self._global + result.aggregate
        shapes = [shape for _, shape in self._layout]
        arrays = ArrayRecord(
            {
                key: Array(value)
                for (key, _), value in zip(self._layout, unflatten(new_global, shapes), strict=True)
            }
        )
        accepted = set(result.accepted)
        contents = [r.content for r in valid if str(r.metadata.src_node_id) in accepted]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None
        return arrays, metrics

    def _ensure_pipeline(self) -> Pipeline:
        if self.pipeline is None:
            assert self._global is not None
            self.pipeline = Pipeline(
                self.pipeline_config,
                dim=self._global.size,
                population=self._population or None,
                seed=self.seed,
            )
        return self.pipeline

    def _update_of(self, reply: Message) -> object:
        """The reply's arrays minus the global model; what was sent, if it does not fit, for the
        pipeline to refuse with the reason (wrong size, not numeric)."""
        assert self._global is not None
        record = reply.content.array_records.get(self.arrayrecord_key)
        if record is None:
            return f"no ArrayRecord under {self.arrayrecord_key!r}"
        sent = [array.numpy() for array in record.values()]
        if [a.shape for a in sent] != [shape for _, shape in self._layout]:
            return np.concatenate([np.ravel(a) for a in sent]) if sent else np.zeros(0)
        return flatten(sent) - self._global

    def _weight_of(self, reply: Message) -> float:
        weight = self._metric_of(reply, self.weighted_by_key)
        return 1.0 if weight is None else weight

    @staticmethod
    def _metric_of(reply: Message, key: str) -> float | None:
        for record in reply.content.metric_records.values():
            if key in record:
                return float(record[key])  # type: ignore[arg-type]
        return None
