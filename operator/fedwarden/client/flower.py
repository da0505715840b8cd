"""Run a Flower ``NumPyClient`` under fedwarden's secure channel.

:class:`NumPyClientTask` adapts any object with Flower's ``NumPyClient`` methods
(``get_parameters(config)`` and ``fit(parameters, config)``) to the :class:`~fedwarden.client.
tasks.Task` interface: the global model arrives as one flat float32 vector and is cut into the
client's parameter shapes, the client trains, and the difference to the global model goes back
as the update, signed and over mutual TLS. Flower itself is not imported: the adapter works on
the methods, so the ``flower`` extra is only needed by the client's own code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedwarden.client.tasks import FitResult
from fedwarden.pipeline import flatten, unflatten

F32 = npt.NDArray[np.float32]


class NumPyClientTask:
    """A Flower ``NumPyClient`` as a fedwarden task.

    Args:
        client: the ``NumPyClient`` (or anything with ``get_parameters`` and ``fit``).
        config: passed to ``fit`` with ``{"server_round": round}`` added, as Flower does.
    """

    def __init__(self, client: Any, config: Mapping[str, Any] | None = None) -> None:
        self.client = client
        self.config = dict(config or {})
        initial: Sequence[npt.NDArray[Any]] = client.get_parameters(config={})
        self.shapes = [tuple(np.shape(a)) for a in initial]
        self.dtypes = [np.asarray(a).dtype for a in initial]
        self._size = int(sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes))

    @property
    def num_parameters(self) -> int:
        return self._size

    def initial_parameters(self) -> F32:
        return flatten(self.client.get_parameters(config={})).astype(np.float32)

    def fit(self, global_params: F32, round: int) -> FitResult:
        arrays = [
            a.astype(dtype, copy=False)
            for a, dtype in zip(unflatten(global_params, self.shapes), self.dtypes, strict=True)
        ]
        new, num_examples, metrics = self.client.fit(arrays, {**self.config, "server_round": round})
        update = flatten(new).astype(np.float32) - np.asarray(global_params, np.float32)
        scalars = {
            k: float(v) for k, v in dict(metrics or {}).items() if isinstance(v, int | float)
        }
        return FitResult(update.astype(np.float32), int(num_examples), scalars)
