"""Byzantine-robust aggregation of client updates, by name::

    agg = get("bulyan", f=2)
    model_update = agg(updates)          # updates: (n, d) float32; result: (d,) float32

``get(name, **params)`` builds one of :func:`names` with its parameters; ``preaggregation="nnm"``,
``"bucketing"`` (with ``bucket_size`` and ``seed``) or ``"dnc"`` (with ``filter_fraction`` and
``min_share``) puts
nearest-neighbour mixing, bucketing or Divide-and-Conquer spectral filtering in front of it.
Unknown names, unknown parameters and impossible values raise ``ValueError`` saying what is
allowed; a cohort smaller than ``agg.min_clients``, or one with NaN/Inf, the
wrong shape or mismatched weights raises :class:`~fedwarden.pipeline.errors.InvalidCohortError`.
See docs/aggregators.md for what each rule defends and what it costs.
"""

from __future__ import annotations

import inspect

from fedwarden.pipeline.aggregators._base import Aggregator
from fedwarden.pipeline.aggregators._preaggregation import Mixer, PreAggregated
from fedwarden.pipeline.aggregators.block_dnc import BlockDnC
from fedwarden.pipeline.aggregators.bucketing import Bucketing
from fedwarden.pipeline.aggregators.bulyan import Bulyan
from fedwarden.pipeline.aggregators.centered_clip import CenteredClip
from fedwarden.pipeline.aggregators.dnc import DivideAndConquer
from fedwarden.pipeline.aggregators.fedavg import FedAvg
from fedwarden.pipeline.aggregators.geometric_median import GeometricMedian
from fedwarden.pipeline.aggregators.krum import Krum
from fedwarden.pipeline.aggregators.median import Median
from fedwarden.pipeline.aggregators.multi_krum import MultiKrum
from fedwarden.pipeline.aggregators.nnm import NearestNeighbourMixing
from fedwarden.pipeline.aggregators.trimmed_mean import TrimmedMean

__all__ = ["Aggregator", "get", "names"]

_AGGREGATORS: dict[str, type[Aggregator]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        Krum,
        MultiKrum,
        Median,
        TrimmedMean,
        Bulyan,
        GeometricMedian,
        CenteredClip,
        BlockDnC,
    )
}
_MIXERS: dict[str, type[NearestNeighbourMixing] | type[Bucketing] | type[DivideAndConquer]] = {
    mixer.name: mixer for mixer in (NearestNeighbourMixing, Bucketing, DivideAndConquer)
}


def names() -> tuple[str, ...]:
    """The aggregator names :func:`get` accepts."""
    return tuple(_AGGREGATORS)


def get(name: str, **params: object) -> Aggregator:
    """The aggregator ``name`` configured with ``params``; see the module docstring."""
    if name not in _AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; choose one of: {', '.join(names())}")
    cls = _AGGREGATORS[name]
    preaggregation = params.pop("preaggregation", None)
    if preaggregation is None:
        _refuse_unknown(name, params, _keywords(cls), "")
        return cls(**params)
    if not isinstance(preaggregation, str) or preaggregation not in _MIXERS:
        raise ValueError(
            f"unknown preaggregation {preaggregation!r}; choose one of: {', '.join(_MIXERS)}"
        )
    mixer_cls = _MIXERS[preaggregation]
    inner_keys, mixer_keys = _keywords(cls), _keywords(mixer_cls)
    _refuse_unknown(
        name, params, inner_keys | mixer_keys, f" with preaggregation={preaggregation!r}"
    )
    inner = cls(**{key: value for key, value in params.items() if key in inner_keys})
    mixer: Mixer = mixer_cls(**{key: value for key, value in params.items() if key in mixer_keys})
    return PreAggregated(inner, mixer)


def _keywords(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls).parameters)


def _refuse_unknown(
    name: str, params: dict[str, object], allowed: frozenset[str], how: str
) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no parameters"
        mixers = "; ".join(
            f"preaggregation={mixer!r} takes {', '.join(sorted(_keywords(cls)))}"
            for mixer, cls in _MIXERS.items()
        )
        raise ValueError(
            f"unknown parameter {', '.join(map(repr, unknown))} for {name}{how}; "
            f"it takes: {takes} ({mixers})"
        )
