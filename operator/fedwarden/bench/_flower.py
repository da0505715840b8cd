"""The Flower 1.42 baselines: which Flower function each aggregator is compared with, and how.

Flower is an optional extra (``fedwarden[flower]``); this module imports it lazily so that the rest
of fedwarden works without it.

Every baseline gets its data in the form it takes, built once per cohort *outside* the timed
region: the legacy functions of ``flwr.server.strategy.aggregate`` take
``results: list[tuple[NDArrays, int]]`` (here one flat float32 array per client, a view of the
same matrix row ours gets); the new-API strategies of ``flwr.serverapp.strategy`` take
``RecordDict`` replies holding an ``ArrayRecord`` (serialised arrays) and a ``MetricRecord`` with
``num-examples``. Deserialising those records is part of what the new-API functions do, so it is
inside their timed region, as it is inside Flower's strategies.

Where Flower has more than one function with the same definition as ours (Krum and Multi-Krum:
the legacy ``aggregate_krum`` and the new API's ``select_multikrum``), all are timed and the
fastest is the baseline (the one the targets are judged against). Functions with a different
definition (the new API's Bulyan) are timed and reported, never used as the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]

FLOWER_MISSING = (
    "the aggregator benchmark compares against Flower, which is not installed: "
    "install fedwarden[flower] (pip install 'fedwarden[flower]')"
)


class FlowerNotInstalledError(RuntimeError):
    """``flwr`` cannot be imported; the message says how to install it."""


def flower_version() -> str:
    """The installed Flower version, or raise :class:`FlowerNotInstalledError`."""
    try:
        import flwr
    except ImportError as exc:
        raise FlowerNotInstalledError(FLOWER_MISSING) from exc
    return str(getattr(flwr, "__version__", "unknown"))


class FlowerInputs:
    """One cohort in the forms Flower's functions take, built lazily and only once."""

    def __init__(self, updates: FloatArray, num_examples: npt.NDArray[np.int64]) -> None:
        self.updates = updates
        self.num_examples = [int(k) for k in num_examples]

    @cached_property
    def results(self) -> list[tuple[list[FloatArray], int]]:
        """Legacy form, equal ``num_examples`` (robust rules ignore them; Multi-Krum averages
        with them, so equal values make it the plain mean that ours computes)."""
        return [([row], 1) for row in self.updates]

    @cached_property
    def weighted_results(self) -> list[tuple[list[FloatArray], int]]:
        """Legacy form with the cohort's ``num_examples`` (weighted FedAvg)."""
        return [([row], k) for row, k in zip(self.updates, self.num_examples, strict=True)]

    @cached_property
    def contents(self) -> list[Any]:
        """New-API form: one ``RecordDict`` per reply, ``num-examples`` all equal."""
        from flwr.app import ArrayRecord, MetricRecord, RecordDict

        return [
            RecordDict({"arrays": ArrayRecord([row]), "metrics": MetricRecord({"num-examples": 1})})
            for row in self.updates
        ]


@dataclass(frozen=True)
class FlowerBaseline:
    """One Flower function applied to one cohort."""

    short: str
    """A short name for tables."""
    function: str
    """What is called, as it reads in Flower's source (with the parameters used)."""
    same_definition: bool
    """Whether it computes the same thing as ours, so that outputs must agree."""
    note: str
    make_call: Callable[[FlowerInputs], Callable[[], Any]]
    """Builds (outside the timed region) the zero-argument call that is timed."""
    to_array: Callable[[Any], FloatArray]
    """Turns Flower's return value into one flat array (outside the timed region)."""


def _first_ndarray(value: Any) -> FloatArray:
    return np.asarray(value[0])


def _arrayrecord_ndarray(value: Any) -> FloatArray:
    return np.asarray(value.to_numpy_ndarrays()[0])


def _legacy() -> Any:
    from flwr.server.strategy import aggregate

    return aggregate


def _legacy_fedavg() -> FlowerBaseline:
    def make(inputs: FlowerInputs) -> Callable[[], Any]:
        fn, results = _legacy().aggregate, inputs.weighted_results
        return lambda: fn(results)

    return FlowerBaseline(
        short="aggregate",
        function="flwr.server.strategy.aggregate.aggregate(results)",
        same_definition=True,
        note="weighted FedAvg, both sides get the same num_examples",
        make_call=make,
        to_array=_first_ndarray,
    )


def _legacy_krum(f: int, to_keep: int) -> FlowerBaseline:
    def make(inputs: FlowerInputs) -> Callable[[], Any]:
        fn, results = _legacy().aggregate_krum, inputs.results
        return lambda: fn(results, num_malicious=f, to_keep=to_keep)

    return FlowerBaseline(
        short="aggregate_krum",
        function=f"flwr.server.strategy.aggregate.aggregate_krum(results, num_malicious={f}, "
        f"to_keep={to_keep})",
        same_definition=True,
        note="legacy: n² Python loop of np.linalg.norm(x_i - x_j)",
        make_call=make,
        to_array=_first_ndarray,
    )


def _serverapp_multikrum(f: int, m: int) -> FlowerBaseline:
    def make(inputs: FlowerInputs) -> Callable[[], Any]:
        from flwr.serverapp.strategy.multikrum import select_multikrum
        from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

        contents = inputs.contents

        def call() -> Any:
            selected = select_multikrum(contents, num_malicious_nodes=f, num_nodes_to_select=m)
            return aggregate_arrayrecords(selected, "num-examples")

        return call

    name = "Krum" if m == 1 else "MultiKrum"
    return FlowerBaseline(
        short="select_multikrum",
        function=f"flwr.serverapp.strategy.multikrum.select_multikrum(contents, "
        f"num_malicious_nodes={f}, num_nodes_to_select={m}) + "
        f"strategy_utils.aggregate_arrayrecords (the body of {name}.aggregate_train)",
        same_definition=True,
        note="new API: Gram-matrix distances, uncentred, float32",
        make_call=make,
        to_array=_arrayrecord_ndarray,
    )


def _legacy_median() -> FlowerBaseline:
    def make(inputs: FlowerInputs) -> Callable[[], Any]:
        fn, results = _legacy().aggregate_median, inputs.results
        return lambda: fn(results)

    return FlowerBaseline(
        short="aggregate_median",
        function="flwr.server.strategy.aggregate.aggregate_median(results)",
        same_definition=True,
        note="np.median(axis=0), the same call as the new API's FedMedian",
        make_call=make,
        to_array=_first_ndarray,
    )


def _legacy_trimmed(beta: float) -> FlowerBaseline:
    def make(inputs: FlowerInputs) -> Callable[[], Any]:
        fn, results = _legacy().aggregate_trimmed_avg, inputs.results
        return lambda: fn(results, proportiontocut=beta)

    return FlowerBaseline(
        short="aggregate_trimmed_avg",
        function=f"flwr.server.strategy.aggregate.aggregate_trimmed_avg(results, "
        f"proportiontocut={beta:.6g})",
        same_definition=True,
        note="np.partition with two pivots, the same code as the new API's FedTrimmedAvg",
        make_call=make,
        to_array=_first_ndarray,
    )


def _legacy_bulyan(f: int) -> FlowerBaseline:
    def make(inputs: FlowerInputs) -> Callable[[], Any]:
        legacy = _legacy()
        fn, krum, results = legacy.aggregate_bulyan, legacy.aggregate_krum, inputs.results
        # aggregate_bulyan pops from the list it is given: hand it a fresh shallow copy each time
        # (copying n references costs microseconds against seconds)
        return lambda: fn(list(results), num_malicious=f, aggregation_rule=krum, to_keep=0)

    return FlowerBaseline(
        short="aggregate_bulyan",
        function=f"flwr.server.strategy.aggregate.aggregate_bulyan(results, num_malicious={f}, "
        "aggregation_rule=aggregate_krum, to_keep=0)",
        same_definition=True,
        note="legacy: θ = n−2f rounds of Krum on the remaining set, as in El Mhamdi et al. 2018",
        make_call=make,
        to_array=_first_ndarray,
    )


def _serverapp_bulyan(f: int) -> FlowerBaseline:
    def make(inputs: FlowerInputs) -> Callable[[], Any]:
        from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
        from flwr.serverapp.strategy.multikrum import select_multikrum

        contents = inputs.contents
        theta = len(contents) - 2 * f
        beta = theta - 2 * f

        def call() -> Any:
            # the body of flwr.serverapp.strategy.Bulyan.aggregate_train, minus message checks
            # and metrics; keep_input=True so that the records survive for the next repetition
            selected = select_multikrum(contents, f, theta)
            arrays = [
                c.array_records["arrays"].to_numpy_ndarrays(keep_input=True) for c in selected
            ]
            median = [np.median(layer, axis=0) for layer in zip(*arrays, strict=True)]
            return aggregate_n_closest_weights(median, arrays, beta)

        return call

    return FlowerBaseline(
        short="serverapp Bulyan",
        function=f"flwr.serverapp.strategy.Bulyan (num_malicious_nodes={f}): select_multikrum "
        "once for θ, np.median, bulyan.aggregate_n_closest_weights",
        same_definition=False,
        note="new API: selects θ with ONE Multi-Krum pass instead of θ rounds of Krum, "
        "so it is a different (cheaper) rule; outputs may differ",
        make_call=make,
        to_array=_first_ndarray,
    )


def baselines(name: str, params: dict[str, Any], n: int) -> Sequence[FlowerBaseline]:
    """Flower's functions for aggregator ``name``; empty if Flower has none."""
    f = int(params.get("f", 0))
    if name == "fedavg":
        return [_legacy_fedavg()]
    if name == "krum":
        return [_serverapp_multikrum(f, 1), _legacy_krum(f, 0)]
    if name == "multi-krum":
        m = int(params["m"])
        return [_serverapp_multikrum(f, m), _legacy_krum(f, m)]
    if name == "median":
        return [_legacy_median()]
    if name == "trimmed-mean":
        return [_legacy_trimmed(float(params["beta"]))]
    if name == "bulyan":
        if n < 4 * f + 3:
            return []
        return [_legacy_bulyan(f), _serverapp_bulyan(f)]
    return []
