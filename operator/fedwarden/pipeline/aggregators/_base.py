"""What every aggregator shares: the call protocol, parameters, and the minimum cohort size."""

from __future__ import annotations

import abc

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.aggregators import _params
from fedwarden.pipeline.aggregators._cohort import Cohort
from fedwarden.pipeline.aggregators._validation import client_weights, updates_matrix
from fedwarden.pipeline.errors import InvalidCohortError

FloatArray = npt.NDArray[np.floating]
Float64Array = npt.NDArray[np.float64]


class Aggregator(abc.ABC):
    """A rule that turns ``n`` client updates ``(n, d)`` into one update ``(d,)``.

    Call it as ``agg(updates, weights=None)``. The result has the dtype of ``updates``; all
    arithmetic is float64. ``params`` are the effective parameters, ``min_clients`` is the
    smallest cohort this configuration accepts (a smaller one raises ``InvalidCohortError``).
    """

    name: str

    def __init__(self, **params: object) -> None:
        self._params = params

    @property
    def params(self) -> dict[str, object]:
        return dict(self._params)

    @property
    @abc.abstractmethod
    def min_clients(self) -> int:
        """The smallest number of clients these parameters accept."""

    @property
    def requirement(self) -> str:
        """The rule behind ``min_clients``, as shown in errors, e.g. ``n >= 2f + 3 = 7 clients``."""
        return f"n >= {self.min_clients} clients"

    @abc.abstractmethod
    def aggregate(self, cohort: Cohort) -> Float64Array:
        """The aggregate of a cohort that is valid and large enough, in float64."""

    def __call__(self, updates: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> FloatArray:
        matrix = updates_matrix(updates)
        n = matrix.shape[0]
        checked_weights = client_weights(weights, n)
        if n < self.min_clients:
            raise InvalidCohortError(f"{self.label} needs {self.requirement}, got {n}")
        return self.aggregate(Cohort.of(matrix, checked_weights)).astype(matrix.dtype)

    @property
    def label(self) -> str:
        """How errors name this aggregator."""
        return self.name

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self._params.items())
        return f"{self.name}({arguments})"


class ByzantineRobust(Aggregator):
    """An aggregator that assumes at most ``f`` of its ``n`` clients are Byzantine.

    Client weights (``num_examples``) are attacker-controlled, so robust rules ignore them.
    """

    def __init__(self, *, f: object = 0, **params: object) -> None:
        self.f = _params.integer("f", f, minimum=0)
        super().__init__(f=self.f, **params)
