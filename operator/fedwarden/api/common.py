"""Pieces both resources share: the base model, conditions, durations, label selectors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "fedwarden.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: Go's time.ParseDuration syntax restricted to h, m and s (what cert-manager accepts, what CEL's
#: duration() parses in the schema's rules, and what fedwarden.pki.rotation.parse_duration reads)
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["2160h", "90m", "1h30m"])]

BuiltinTaskName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]+(-[a-z0-9]+)+$",
        max_length=63,
        description="Built-in task, <dataset>-<model>, e.g. digits-mlp or mnist1d-mlp.",
    ),
]

#: the aggregation rules, as ``fedwarden.pipeline.aggregators.names()`` registers them; api imports
#: nothing of the pipeline, so this is the API's one copy (the CRD's enum, the aggregator's
#: settings) and tests/unit/test_aggregation_rules.py keeps it equal to the registry
AggregationRule = Literal[
    "fedavg",
    "krum",
    "multi-krum",
    "median",
    "trimmed-mean",
    "bulyan",
    "geometric-median",
    "centered-clip",
    "block-dnc",
]

_IDENTIFIER_PATH = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
#: what ``fedwarden client --app`` imports: a dotted module path, a colon, a dotted attribute path
APP_REFERENCE_PATTERN = rf"^{_IDENTIFIER_PATH}:{_IDENTIFIER_PATH}$"
AppReference = Annotated[
    str,
    Field(
        pattern=APP_REFERENCE_PATTERN,
        max_length=253,
        description="The app, MODULE:ATTR (e.g. hospital.model:client_fn).",
    ),
]
#: a key of ``--app-config KEY=VALUE``: no ``=`` (the value starts after the first one), and the
#: characters of Flower's run_config keys (``local-epochs``, ``fraction-fit``)
APP_CONFIG_KEY_PATTERN = r"^[A-Za-z0-9_][-A-Za-z0-9_.]*$"


def cel_rules(*rules: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    """CEL rules of a schema node (``x-kubernetes-validations``), each (rule, message) or
    (rule, message, fieldPath): the API server checks them and names the field when one fails."""
    out: list[dict[str, str]] = []
    for rule in rules:
        entry = {"rule": rule[0], "message": rule[1]}
        if len(rule) == 3:
            entry["fieldPath"] = rule[2]
        out.append(entry)
    return {"x-kubernetes-validations": out}


class Model(BaseModel):
    """Base of every API model: camelCase names, unknown fields refused, values validated on
    assignment (the controller edits status objects)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The JSON object the API server stores (camelCase, unset optional fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(Model):
    """A Kubernetes label selector (``matchLabels`` and ``matchExpressions``, ANDed)."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions or []:
            present = req.key in labels
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
            if req.operator == "In" and labels.get(req.key) not in (req.values or []):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in (req.values or []):
                return False
        return True


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """A status condition as ``metav1.Condition`` defines it (what kstatus and Argo CD read)."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    message: str = Field(default="", max_length=32768)
    last_transition_time: str = Field(description="RFC 3339 time of the last status change.")
    observed_generation: int | None = Field(default=None, ge=0)


class ResourceRequirements(Model):
    """Container resources (quantities such as ``500m`` or ``1Gi``)."""

    requests: dict[str, str] | None = None
    limits: dict[str, str] | None = None
