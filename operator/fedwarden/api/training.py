"""``FederatedTraining`` (short name ``ft``): one federated training, its defences and budget."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from fedwarden import __version__
from fedwarden.api.common import (
    API_VERSION,
    APP_CONFIG_KEY_PATTERN,
    AggregationRule,
    AppReference,
    BuiltinTaskName,
    Condition,
    Duration,
    LabelSelector,
    Model,
    ResourceRequirements,
    cel_rules,
)

#: aggregators whose guarantee is stated for an assumed number f of Byzantine clients
NEEDS_F = ("krum", "multi-krum", "bulyan")


class AppSpec(Model):
    """A user's app (what `fedwarden client --app` runs): its code and dependencies are in its
    image."""

    model_config = Model.model_config | {
        "json_schema_extra": cel_rules(
            (
                "!has(self.config) || "
                f"self.config.all(key, key.matches('{APP_CONFIG_KEY_PATTERN}'))",
                "config keys are letters, digits, '_', '-' and '.' (no '=')",
                ".config",
            )
        )
    }

    module: AppReference
    image: str = Field(
        min_length=1,
        max_length=512,
        description="The image with the app: fedwarden's client image plus the site's code "
        "(docs/apps.md). It runs the clients (unless an FLClient's workload.image overrides it) "
        "and, in the aggregator's pod, the init container that writes the initial model.",
    )
    config: dict[str, str] | None = Field(
        default=None,
        max_length=64,
        description="The app's run_config: each entry is --app-config KEY=VALUE, for the "
        "clients and for the initial model.",
    )

    @field_validator("config")
    @classmethod
    def _keys_fit_app_config(cls, config: dict[str, str] | None) -> dict[str, str] | None:
        # the CEL rule's twin, for specs that do not pass through the API server
        for key in config or {}:
            if not re.match(APP_CONFIG_KEY_PATTERN, key):
                raise ValueError(f"config key {key!r}: letters, digits, '_', '-' and '.' only")
        return config


_ONE_KIND_OF_TASK = (
    "set exactly one of task.builtin (a built-in task) and task.app (your app: module, image)"
)
_SEEDS_OF_A_BUILTIN_TASK = (
    "task.modelSeed and task.dataSeed seed a built-in task; an app takes its seeds from "
    "task.app.config"
)


class TaskSpec(Model):
    """What is trained: a built-in task of fedwarden's client image, or a user's app."""

    model_config = Model.model_config | {
        "json_schema_extra": cel_rules(
            ("has(self.builtin) != has(self.app)", _ONE_KIND_OF_TASK),
            (
                "has(self.builtin) || (!has(self.modelSeed) && !has(self.dataSeed))",
                _SEEDS_OF_A_BUILTIN_TASK,
            ),
        )
    }

    builtin: BuiltinTaskName | None = None
    app: AppSpec | None = None
    # no schema defaults: the API server would store them for an app as well; unset, the
    # command's default (0) applies
    model_seed: int | None = Field(
        default=None, ge=0, description="Seed of a built-in task's initial model (default 0)."
    )
    data_seed: int | None = Field(
        default=None,
        ge=0,
        description="Seed of a built-in task's shared train/test split (default 0).",
    )

    @model_validator(mode="after")
    def _one_kind_of_task(self) -> TaskSpec:
        # the CEL rules' twins, for specs that do not pass through the API server
        if (self.builtin is None) == (self.app is None):
            raise ValueError(_ONE_KIND_OF_TASK)
        if self.app is not None and (self.model_seed is not None or self.data_seed is not None):
            raise ValueError(_SEEDS_OF_A_BUILTIN_TASK)
        return self


class SelectionSpec(Model):
    """Which FLClients take part and how many are sampled per round."""

    client_selector: LabelSelector | None = Field(
        default=None,
        description="FLClients (of this training, in its namespace) that may join; all if unset.",
    )
    sampling: Literal["fixed", "poisson"] | None = Field(
        default=None,
        description="fixed: a share of the available clients; poisson: each with probability "
        "`fraction` (what DP accounting assumes). Default: poisson with privacy, fixed without.",
    )
    fraction: float = Field(default=1.0, gt=0, le=1, description="Share or probability per round.")
    min_clients: int = Field(default=2, ge=1, le=100000, description="Least clients per round.")
    min_available: int = Field(
        default=2, ge=1, le=100000, description="A round starts once this many are connected."
    )


def _aggregation_rules(schema: dict[str, Any]) -> None:
    """AggregationSpec's CEL rules. Every field but `method` is a parameter of the rule or of its
    preaggregation, and the operator passes them only with a method."""
    parameters = " || ".join(f"has(self.{p})" for p in schema["properties"] if p != "method")
    schema.update(
        cel_rules(
            (
                f"!has(self.method) || !(self.method in {list(NEEDS_F)}) || has(self.f)",
                "krum, multi-krum and bulyan need f, the number of Byzantine clients tolerated",
                ".f",
            ),
            (
                "!has(self.method) || self.method != 'centered-clip' || has(self.tau)",
                "centered-clip needs tau, the clipping radius around the centre",
                ".tau",
            ),
            (
                f"has(self.method) || !({parameters})",
                "aggregation parameters need a method (unset, the recommendation's are used)",
                ".method",
            ),
            (
                "!has(self.bucketSize) || (has(self.preaggregation) && "
                "self.preaggregation == 'bucketing')",
                "bucketSize applies only to preaggregation: bucketing",
                ".bucketSize",
            ),
            (
                "!has(self.blockSize) || (has(self.method) && self.method == 'block-dnc')",
                "blockSize applies only to method: block-dnc",
                ".blockSize",
            ),
            (
                "!has(self.filterFraction) || (has(self.method) && self.method == 'block-dnc') "
                "|| (has(self.preaggregation) && self.preaggregation == 'dnc')",
                "filterFraction applies only to method: block-dnc and preaggregation: dnc",
                ".filterFraction",
            ),
            (
                "!has(self.minShare) || (has(self.preaggregation) && self.preaggregation == 'dnc')",
                "minShare applies only to preaggregation: dnc",
                ".minShare",
            ),
        )
    )


class AggregationSpec(Model):
    """The robust aggregation rule. Unset `method`: fedwarden's recommendation for the privacy
    mode (block-wise DnC behind a gated DnC without central DP, DP-FedAvg with it;
    benchmarks/defence-matrix.md).
    A named method under central DP keeps the recommended outlier and free-rider tests, with the
    noise of its larger sensitivity (fedavg is then refused: leave method unset for DP-FedAvg)."""

    model_config = Model.model_config | {"json_schema_extra": _aggregation_rules}

    method: AggregationRule | None = Field(
        default=None, description="Aggregation rule (docs/aggregators.md)."
    )
    f: int | None = Field(default=None, ge=0, le=10000, description="Byzantine clients tolerated.")
    beta: float | None = Field(
        default=None, ge=0, lt=0.5, description="Trimmed mean: fraction cut on each side (< 0.5)."
    )
    m: int | None = Field(default=None, ge=1, description="Multi-Krum: updates averaged.")
    tau: float | None = Field(default=None, gt=0, description="Centered clipping radius.")
    preaggregation: Literal["nnm", "bucketing", "dnc"] | None = Field(
        default=None,
        description="A step before the rule: nearest-neighbour mixing, bucketing, or "
        "Divide-and-Conquer's spectral filter over whole updates.",
    )
    bucket_size: int | None = Field(default=None, ge=1, le=1000)
    block_size: int | None = Field(
        default=None, ge=1, description="block-dnc: consecutive coordinates filtered together."
    )
    filter_fraction: float | None = Field(
        default=None,
        ge=0,
        lt=0.5,
        description="block-dnc (in each block) and preaggregation dnc (over whole updates): "
        "the share of updates dropped, ⌊filterFraction·n⌋.",
    )
    min_share: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="The gate of preaggregation dnc: it drops updates only when the top direction "
        "carries at least this share of the cohort's centred variance.",
    )


class ClippingSpec(Model):
    """L2 clipping of every update: fixed C, or adaptive (Andrew et al. 2021) towards a quantile."""

    mode: Literal["fixed", "adaptive", "none"] = "adaptive"
    clip_norm: float = Field(default=1.0, gt=0, description="C (the start value when adaptive).")
    target_quantile: float = Field(default=0.5, gt=0, lt=1)


class PrivacySpec(Model):
    """Differential privacy and its budget. Immutable: the accounting assumes one mechanism.

    The mode decides the unit the ε protects: central and local protect a whole client (all
    that one site contributes); record protects one record of a site (every site trains with
    DP-SGD under its own accountant, targetEpsilon is each site's budget, and the status shows
    the largest ε over the sites)."""

    model_config = Model.model_config | {
        "json_schema_extra": cel_rules(
            (
                "self.mode == 'none' || has(self.targetEpsilon) || has(self.noiseMultiplier)",
                "privacy with mode central or local needs targetEpsilon or noiseMultiplier",
            ),
            (
                "self.mode != 'none' || (!has(self.targetEpsilon) && !has(self.noiseMultiplier))",
                "targetEpsilon and noiseMultiplier need mode central, local or record",
            ),
            (
                "self.mode != 'record' || (has(self.targetEpsilon) && !has(self.noiseMultiplier))",
                "privacy mode record needs targetEpsilon (each site's budget) and no "
                "noiseMultiplier (each site calibrates its own DP-SGD)",
            ),
            ("self == oldSelf", "privacy is immutable once the training exists"),
        )
    }

    mode: Literal["none", "central", "local", "record"] = Field(
        default="none",
        description="central or local: client-level DP (ε protects a whole client); record: "
        "record-level DP-SGD at every site (ε protects one record of a site).",
    )
    target_epsilon: float | None = Field(
        default=None, gt=0, le=100, description="Budget ε (with mode record, each site's)."
    )
    delta: float = Field(default=1e-5, gt=0, lt=0.01, description="δ of (ε, δ)-DP.")
    noise_multiplier: float | None = Field(
        default=None, gt=0, le=1000, description="σ; calibrated from targetEpsilon when unset."
    )
    accountant: Literal["pld", "rdp"] = "pld"
    on_budget_exhausted: Literal["Succeed", "Fail"] = Field(
        default="Succeed",
        description="Phase of a training stopped because the next round would exceed the budget.",
    )

    @model_validator(mode="after")
    def _record_needs_a_target(self) -> PrivacySpec:
        # the CEL rule's twin, for specs that do not pass through the API server
        if self.mode == "record" and (
            self.target_epsilon is None or self.noise_multiplier is not None
        ):
            raise ValueError(
                "privacy mode record needs targetEpsilon (each site's budget) and no "
                "noiseMultiplier (each site calibrates its own DP-SGD)"
            )
        return self


class FreeRiderSpec(Model):
    # None, not True: the API server stores a schema default, and the operator could then not
    # tell it from a user's choice; unset, the pipeline's recommendation decides
    enabled: bool | None = Field(
        default=None,
        description="Zero, noise and replay tests on updates. Unset: the recommendation's (on, "
        "but off under central privacy without aggregation.method: DP-FedAvg cannot run them).",
    )
    strikes_to_ban: int = Field(default=3, ge=1, le=100, description="Strikes before a ban.")


class DataResidencySpec(Model):
    allowed_regions: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        min_length=1,
        max_length=64,
        description="Regions (FLClient spec.region, and the aggregator's node label "
        "topology.kubernetes.io/region) allowed to take part.",
    )


class ComplianceSpec(Model):
    profile: Literal["none", "gdpr"] = Field(
        default="none",
        description="gdpr: differential privacy with targetEpsilon ≤ 1, client-level (central, "
        "local) or record-level (record), and a data residency list are mandatory.",
    )


class StorageSpec(Model):
    """The checkpoint volume (a PersistentVolumeClaim, ReadWriteOnce)."""

    size: str = Field(default="1Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    storage_class_name: str | None = None


class AggregatorSpec(Model):
    """The aggregator's pod."""

    image: str = Field(default=f"ghcr.io/fedwarden/aggregator:{__version__}", min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: ResourceRequirements | None = None
    node_selector: dict[str, str] | None = None
    storage: StorageSpec = Field(
        default_factory=StorageSpec,
        description="The PersistentVolumeClaim that keeps the checkpoints (model, round, "
        "accountant, strikes, bans): a restarted aggregator resumes from it without spending "
        "privacy budget twice or forgetting any.",
    )
    backoff_limit: int = Field(default=6, ge=0, le=100)


Cidr = Annotated[
    str,
    Field(
        max_length=43,
        json_schema_extra=cel_rules(
            ("isCIDR(self)", "must be a CIDR such as 203.0.113.0/24 or 2001:db8::/32")
        ),
    ),
]
Name = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]


class NetworkSpec(Model):
    """Who may reach the aggregator besides this training's in-cluster client pods."""

    allowed_namespaces: list[Name] | None = Field(
        default=None, max_length=256, description="Namespace names."
    )
    allowed_cidrs: list[Cidr] | None = Field(
        default=None, max_length=256, description="Remote sites' egress ranges."
    )


class CertificateSpec(Model):
    """Lifetime of the certificates the operator issues (cert-manager's semantics)."""

    model_config = Model.model_config | {
        "json_schema_extra": cel_rules(
            (
                "!has(self.renewBefore) || duration(self.renewBefore) < duration(self.duration)",
                "renewBefore must be shorter than duration",
                ".renewBefore",
            )
        )
    }

    duration: Duration = Field(default="2160h", description="Lifetime of issued certificates.")
    renew_before: Duration | None = Field(
        default=None, description="Renew this long before expiry; default a third of duration."
    )


_FREE_RIDERS_UNDER_DP_FEDAVG = (
    "freeRiders.enabled with central privacy needs aggregation.method: without one the "
    "training runs DP-FedAvg, whose noise has no sound bound with the free-rider tests; name a "
    "robust method (more noise) or leave freeRiders.enabled unset"
)


class FederatedTrainingSpec(Model):
    model_config = Model.model_config | {
        "json_schema_extra": cel_rules(
            (
                "!has(self.aggregation) || !has(self.aggregation.method) || "
                "self.aggregation.method != 'bulyan' || !has(self.aggregation.f) || "
                "self.selection.minClients >= 4 * self.aggregation.f + 3",
                "bulyan needs at least 4f+3 clients per round: raise selection.minClients or "
                "lower aggregation.f",
                ".selection.minClients",
            ),
            (
                "!has(self.aggregation) || !has(self.aggregation.method) || "
                "!(self.aggregation.method in ['krum', 'multi-krum']) || "
                "!has(self.aggregation.f) || "
                "self.selection.minClients >= 2 * self.aggregation.f + 3",
                "krum needs at least 2f+3 clients per round: raise selection.minClients or lower "
                "aggregation.f",
                ".selection.minClients",
            ),
            (
                "self.selection.minClients <= self.selection.minAvailable",
                "selection.minClients cannot exceed selection.minAvailable",
                ".selection.minClients",
            ),
            (
                "!has(self.compliance) || self.compliance.profile != 'gdpr' || "
                "(self.privacy.mode in ['central', 'local', 'record'] && "
                "has(self.privacy.targetEpsilon) && self.privacy.targetEpsilon <= 1.0)",
                "compliance profile gdpr requires privacy.targetEpsilon <= 1 with client-level "
                "(privacy.mode central or local) or record-level (privacy.mode record, each "
                "site's budget) differential privacy",
                ".privacy",
            ),
            (
                "!has(self.compliance) || self.compliance.profile != 'gdpr' || "
                "has(self.dataResidency)",
                "compliance profile gdpr requires dataResidency.allowedRegions",
                ".dataResidency",
            ),
            (
                "self.rounds >= oldSelf.rounds",
                "rounds can be raised but not lowered",
                ".rounds",
            ),
            ("self.task == oldSelf.task", "task is immutable", ".task"),
            (
                "!has(self.freeRiders) || !has(self.freeRiders.enabled) || "
                "!self.freeRiders.enabled || self.privacy.mode != 'central' || "
                "(has(self.aggregation) && has(self.aggregation.method))",
                _FREE_RIDERS_UNDER_DP_FEDAVG,
                ".freeRiders.enabled",
            ),
        )
    }

    rounds: int = Field(ge=1, le=100000, description="Rounds to complete.")
    task: TaskSpec
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    round_timeout_seconds: int = Field(default=120, ge=1, le=86400)
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)
    clipping: ClippingSpec = Field(default_factory=ClippingSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    free_riders: FreeRiderSpec = Field(default_factory=FreeRiderSpec)
    data_residency: DataResidencySpec | None = None
    compliance: ComplianceSpec = Field(default_factory=ComplianceSpec)
    aggregator: AggregatorSpec = Field(default_factory=AggregatorSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    certificates: CertificateSpec = Field(default_factory=CertificateSpec)
    suspend: bool = Field(default=False, description="Stop the aggregator; resume later.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the training this long after it finished."
    )

    @model_validator(mode="after")
    def _free_riders_need_a_method_under_central_dp(self) -> FederatedTrainingSpec:
        # the CEL rule's twin, for specs that do not pass through the API server
        if (
            self.free_riders.enabled
            and self.privacy.mode == "central"
            and self.aggregation.method is None
        ):
            raise ValueError(_FREE_RIDERS_UNDER_DP_FEDAVG)
        return self


TrainingPhase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]


class MetricsStatus(Model):
    """The last round's metrics. With evaluatedBy set they come from federated evaluation: the
    median of what that many clients claim about the model of evaluatedRound on their own data
    (attacker-controlled; reported, never used to judge a client). Without it the aggregator
    evaluated the model itself."""

    accuracy: float | None = None
    loss: float | None = None
    update_norm: float | None = None
    evaluated_by: int | None = Field(
        default=None, ge=0, description="Clients whose evaluation was combined (federated)."
    )
    evaluated_round: int | None = Field(
        default=None, ge=0, description="The round whose model the clients evaluated."
    )


class ModelStatus(Model):
    """The last model the aggregator exported, signed (``fedwarden model fetch`` gets it)."""

    round: int = Field(ge=0, description="Rounds completed when the model was exported.")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of model.safetensors; its signed provenance.json names it too.",
    )


class FederatedTrainingStatus(Model):
    phase: TrainingPhase = "Pending"
    round: int = Field(default=0, ge=0, description="Rounds completed.")
    epsilon_spent: float | None = Field(
        default=None,
        ge=0,
        description="ε spent so far; under record-level DP the largest a site reported.",
    )
    privacy_unit: Literal["record", "client"] | None = Field(
        default=None,
        description="Whom epsilonSpent protects: one record of a site (record-level DP) or a "
        "whole client (client-level DP).",
    )
    delta: float | None = None
    noise_multiplier: float | None = None
    participants: int = Field(default=0, ge=0, description="Clients in the last round.")
    enrolled_clients: int = Field(default=0, ge=0)
    rejected_updates: int = Field(default=0, ge=0, description="Updates rejected so far.")
    banned_clients: list[str] = Field(default_factory=list)
    banned_count: int = Field(default=0, ge=0)
    last_metrics: MetricsStatus | None = None
    privacy_state_lost: str | None = Field(
        default=None,
        description="Set by an aggregator that found no checkpoint while ε was already spent: "
        "it refuses to spend the budget again, and the training fails.",
    )
    model: ModelStatus | None = None
    aggregator_endpoint: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class FederatedTraining(Model):
    api_version: Literal["fedwarden.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["FederatedTraining"] = "FederatedTraining"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FederatedTrainingSpec
    status: FederatedTrainingStatus | None = None
