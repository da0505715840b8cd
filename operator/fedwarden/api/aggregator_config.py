"""The operator→aggregator contract: the settings of ``fedwarden aggregator --config FILE``.

The operator renders a training's :class:`AggregatorSettings` into the aggregator's ConfigMap
(:mod:`fedwarden.resources.aggregator`); the command validates the file against the same model
before its values become the defaults of the options of the same names. Keys are the options'
Python names (``agg_params`` is ``--agg-param``); a key left out keeps the option's own default,
so the defaults live in one place, the command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from fedwarden.api.common import (
    APP_CONFIG_KEY_PATTERN,
    AggregationRule,
    AppReference,
    BuiltinTaskName,
)

_NAMESPACED_NAME = re.compile(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$"
)


def _namespaced_name(value: str) -> str:
    if not _NAMESPACED_NAME.match(value):
        raise ValueError(f"{value!r} is not NAMESPACE/NAME (for example team-a/mnist)")
    return value


#: a parameter of the aggregation rule; the pipeline's registry checks names and values against
#: the rule's own signature, with messages that say what the rule takes
AggregationParameter = bool | int | float | str
AppConfigKey = Annotated[str, Field(pattern=APP_CONFIG_KEY_PATTERN)]
Positive = Annotated[float, Field(gt=0)]
AtLeastOne = Annotated[int, Field(ge=1)]


class AggregatorSettings(BaseModel):
    """What a ``--config`` file may set. Every field is an option of ``fedwarden aggregator``;
    ``None`` (or absent) leaves that option at its default. Where things are inside a pod
    (TLS files, addresses, the checkpoint directory) is not here but on the Job's command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # where progress goes
    kubernetes_status: Annotated[str, AfterValidator(_namespaced_name)] | None = Field(
        default=None, description="NAMESPACE/NAME of the FederatedTraining whose status to write."
    )
    quiet: bool | None = None
    log_level: Literal["debug", "info", "warning", "error"] | None = None

    # rounds and the clients in each
    rounds: AtLeastOne | None = None
    fraction: float | None = Field(default=None, gt=0, le=1)
    min_clients: AtLeastOne | None = None
    min_available: AtLeastOne | None = None
    sampling: Literal["fixed", "poisson"] | None = None
    round_timeout: Positive | None = Field(default=None, description="Seconds.")
    population: AtLeastOne | None = Field(default=None, description="Enrolled clients, for DP.")

    # the model: at most one source (the command refuses two)
    task: BuiltinTaskName | None = None
    model_seed: int | None = Field(default=None, ge=0)
    data_seed: int | None = Field(default=None, ge=0)
    app: AppReference | None = None
    app_config: dict[AppConfigKey, str] | None = Field(
        default=None, description="The app's run_config (--app-config KEY=VALUE)."
    )
    initial_model: Path | None = Field(
        default=None, description="A .safetensors or .npz file of named arrays."
    )
    output_model: Path | None = Field(
        default=None, description="Where model.safetensors and provenance.json are written."
    )

    # the pipeline
    defence: Literal["recommended", "none"] | None = None
    aggregator: AggregationRule | None = None
    agg_params: dict[str, AggregationParameter] | None = None
    clipping: Literal["fixed", "adaptive", "none"] | None = None
    clip_norm: Positive | None = None
    clip_quantile: float | None = Field(default=None, gt=0, lt=1)
    free_rider_detection: bool | None = None
    strikes_to_ban: AtLeastOne | None = None
    dp: Literal["none", "central", "local", "record"] | None = None
    target_epsilon: Positive | None = None
    delta: float | None = Field(default=None, gt=0, lt=1)
    noise_multiplier: Positive | None = None
    accountant: Literal["pld", "rdp"] | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> AggregatorSettings:
        """The settings in ``data`` (a ``--config`` file's object).

        Raises:
            ValueError: one line that names each bad key and what is wrong with it.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError("; ".join(_describe(error) for error in exc.errors())) from None

    def options(self) -> dict[str, Any]:
        """The keys that are set, with their values as JSON (what the ConfigMap holds)."""
        return self.model_dump(mode="json", exclude_none=True)


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}; the keys are: " + ", ".join(AggregatorSettings.model_fields)
    return f"{key}: {error['msg']}"
