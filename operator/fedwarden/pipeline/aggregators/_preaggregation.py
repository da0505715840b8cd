"""Pre-aggregation: replace the cohort by mixtures of its rows, then run any aggregator on them.

A mixer turns ``n`` rows into ``k`` rows, each an average of some of the originals (a row-
stochastic ``k × n`` matrix). The mixed rows stay lazy (:mod:`._cohort`), so pre-aggregation
adds no ``(n, d)`` copy, and the inner aggregator's distances come from the same Gram matrix.
"""

from __future__ import annotations

from typing import Protocol

from fedwarden.pipeline.aggregators._base import Aggregator, Float64Array
from fedwarden.pipeline.aggregators._cohort import Cohort


class Mixer(Protocol):
    name: str

    @property
    def params(self) -> dict[str, object]: ...

    def min_clients(self, inner: Aggregator) -> int:
        """The smallest ``n`` whose mixed cohort ``inner`` accepts."""
        ...

    def requirement(self, inner: Aggregator) -> str: ...

    def mix(self, cohort: Cohort) -> Cohort: ...


class PreAggregated(Aggregator):
    """``inner`` applied to the rows that ``mixer`` makes of the cohort."""

    def __init__(self, inner: Aggregator, mixer: Mixer) -> None:
        super().__init__(**{**inner.params, **mixer.params, "preaggregation": mixer.name})
        self.name = inner.name
        self._inner = inner
        self._mixer = mixer

    @property
    def min_clients(self) -> int:
        return self._mixer.min_clients(self._inner)

    @property
    def requirement(self) -> str:
        return self._mixer.requirement(self._inner)

    @property
    def label(self) -> str:
        return f"{self.name} with {self._mixer.name} pre-aggregation"

    def aggregate(self, cohort: Cohort) -> Float64Array:
        return self._inner.aggregate(self._mixer.mix(cohort))
