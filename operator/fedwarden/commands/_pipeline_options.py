"""The options that choose a training's pipeline (defences, aggregator, clipping, free-rider
tests, differential privacy) and the one mapping from their values to a
:class:`~fedwarden.pipeline.round.PipelineConfig`.

``fedwarden simulate`` and ``fedwarden aggregator`` both use them, so the same flags run the
same pipeline in a simulation and in a real training. The operator writes the aggregator's
options into a ConfigMap keyed by their Python names (``agg_params``, ``clip_norm``...): those
names are an interface.

The starting point, before the other options replace their parts:

- ``--defence none``: :meth:`PipelineConfig.plain_fedavg`, with the ``--dp`` mode set.
- ``--defence recommended`` without ``--aggregator``: fedwarden chooses, so
  :meth:`PipelineConfig.recommended` for the ``--dp`` mode; with ``--dp central`` that is
  DP-FedAvg, without the outlier and free-rider tests.
- ``--defence recommended --aggregator NAME``: the user chose a (robust) rule, so the
  non-private recommendation with the ``--dp`` mode set: its outlier and free-rider tests stay
  on, and under central DP the noise follows the rule's sensitivity (about 2C instead of
  DP-FedAvg's C/n), which is sound but larger. So ``--aggregator fedavg --dp central`` is
  FedAvg with the cohort tests: no sensitivity bound holds for it under Poisson sampling, and
  the pipeline refuses it there; leave ``--aggregator`` out for DP-FedAvg.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from fedwarden.commands._common import key_values
from fedwarden.pipeline import aggregators

if TYPE_CHECKING:
    from fedwarden.pipeline.round import PipelineConfig

F = TypeVar("F", bound=Callable[..., Any])

Sampling = Literal["fixed", "poisson"]


_OPTIONS = (
    click.option(
        "--defence",
        type=click.Choice(("recommended", "none"), case_sensitive=False),
        default="recommended",
        show_default=True,
        help="Starting point of the pipeline: fedwarden's recommended defences for the --dp "
        "mode (with --dp central and no --aggregator, DP-FedAvg: clipping and the plain mean, "
        "no cohort tests), or none (plain FedAvg, no validation, clipping or free-rider tests). "
        "The options below override parts of it.",
    ),
    click.option(
        "--aggregator",
        default=None,
        metavar="NAME",
        help=f"One of {', '.join(aggregators.names())} [default: the --defence's]. Naming one "
        "with --dp central keeps the recommended outlier and free-rider tests, with the rule's "
        "larger noise; leave it out for DP-FedAvg.",
    ),
    click.option(
        "--agg-param",
        "agg_params",
        multiple=True,
        callback=key_values,
        metavar="KEY=VALUE",
        help="Aggregator parameter, repeatable: f, beta, m, tau, block_size, "
        "preaggregation=nnm|bucketing|dnc, bucket_size, filter_fraction, min_share. Merged over "
        "the --defence's own for its aggregator.",
    ),
    click.option(
        "--clipping",
        type=click.Choice(("fixed", "adaptive", "none"), case_sensitive=False),
        default=None,
        help="Clipping of updates [default: the --defence's].",
    ),
    click.option(
        "--clip-norm",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Clipping norm C (initial C when adaptive).",
    ),
    click.option(
        "--clip-quantile",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=None,
        help="Target quantile of adaptive clipping.",
    ),
    click.option(
        "--free-rider-detection/--no-free-rider-detection",
        default=None,
        help="Turn the free-rider tests on or off [default: the --defence's].",
    ),
    click.option(
        "--strikes-to-ban",
        type=click.IntRange(min=1),
        default=None,
        help="Refused rounds that ban a client [default: the --defence's].",
    ),
    click.option(
        "--dp",
        type=click.Choice(("none", "central", "local", "record"), case_sensitive=False),
        default="none",
        show_default=True,
        help="Differential privacy. Client-level (the ε protects a whole site): central (noise "
        "on the aggregate; DP-FedAvg unless --aggregator names a rule) or local (each client "
        "clips and noises its own update; the aggregator announces C and σ and accounts). "
        "Record-level (the ε protects one record of a site): record (every site trains with "
        "DP-SGD under its own accountant, --target-epsilon is each site's budget; the "
        "aggregator announces it and reports the largest ε over sites).",
    ),
    click.option(
        "--target-epsilon",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Privacy budget ε (with --dp record, each site's); the noise is calibrated to "
        "spend it over the rounds, and training stops before a round would exceed it.",
    ),
    click.option(
        "--delta",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=1e-5,
        show_default=True,
        help="δ of the (ε, δ) guarantee.",
    ),
    click.option(
        "--noise-multiplier",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Noise multiplier σ (instead of calibrating it from --target-epsilon).",
    ),
    click.option(
        "--accountant",
        type=click.Choice(("pld", "rdp"), case_sensitive=False),
        default="pld",
        show_default=True,
        help="Privacy accountant.",
    ),
)


def pipeline_options(command: F) -> F:
    """Declare the pipeline options on ``command`` (in this order in its ``--help``)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def effective_sampling(options: Mapping[str, Any]) -> Sampling:
    """``--sampling``, or its default: Poisson with DP (what the accountants assume), fixed
    without."""
    chosen: Sampling | None = options["sampling"]
    if chosen is not None:
        return chosen
    return "fixed" if options["dp"] == "none" else "poisson"


def pipeline_config(
    options: Mapping[str, Any], *, rounds: int, sample_rate: float, sampling: Sampling
) -> PipelineConfig:
    """The pipeline the options choose, for a run of ``rounds`` rounds that samples each
    client with probability ``sample_rate`` by ``sampling`` (the privacy accountant's view).

    The starting point follows the module's rule (DP-FedAvg under ``--dp central`` only when
    the aggregator is left to fedwarden). Each option given then replaces its part: another
    ``--aggregator`` starts from no parameters, while ``--agg-param`` alone is merged over the
    starting point's own.

    Raises:
        ValueError: ``--target-epsilon`` or ``--noise-multiplier`` without ``--dp``, and the
            combinations the configurations refuse (DP without σ or ε, ...).
    """
    from fedwarden.pipeline.round import PipelineConfig, PrivacyConfig

    if options["dp"] == "none":
        if options["target_epsilon"] is not None or options["noise_multiplier"] is not None:
            raise ValueError(
                "--target-epsilon and --noise-multiplier need --dp central, local or record"
            )
        privacy = PrivacyConfig()
    else:
        privacy = PrivacyConfig(
            mode=options["dp"],
            noise_multiplier=options["noise_multiplier"],
            target_epsilon=options["target_epsilon"],
            delta=options["delta"],
            accountant=options["accountant"],
            rounds=rounds,
            sample_rate=sample_rate,
            sampling=sampling,
        )
    if options["defence"] == "none":
        base = PipelineConfig.plain_fedavg()
    elif options["aggregator"] is None:
        base = PipelineConfig.recommended(privacy)
    else:
        # a rule the user chose keeps the robust pipeline around it; the privacy set below
        # makes the noise follow that rule's sensitivity
        base = PipelineConfig.recommended()
    changes: dict[str, Any] = {"privacy": privacy}
    if options["aggregator"] is not None or options["agg_params"]:
        name = options["aggregator"] if options["aggregator"] is not None else base.aggregator
        params = dict(base.aggregator_params) if name == base.aggregator else {}
        params.update(options["agg_params"])
        changes["aggregator"] = name
        changes["aggregator_params"] = params
    clipping = {
        field: value
        for field, value in (
            ("mode", options["clipping"]),
            ("clip_norm", options["clip_norm"]),
            ("target_quantile", options["clip_quantile"]),
        )
        if value is not None
    }
    if clipping:
        changes["clipping"] = dataclasses.replace(base.clipping, **clipping)
    if options["free_rider_detection"] is not None:
        changes["free_riders"] = dataclasses.replace(
            base.free_riders, enabled=options["free_rider_detection"]
        )
    if options["strikes_to_ban"] is not None:
        changes["strikes_to_ban"] = options["strikes_to_ban"]
    return dataclasses.replace(base, **changes)
