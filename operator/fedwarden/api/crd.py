"""CustomResourceDefinitions generated from the pydantic models.

pydantic writes JSON Schema 2020-12; the API server wants a *structural* OpenAPI v3 schema. The
conversion: references inlined, ``Optional[X]`` (``anyOf`` with null) becomes ``X`` left out of
``required``, ``const`` becomes a one-value ``enum``, numeric ``exclusiveMinimum`` becomes
``minimum`` plus ``exclusiveMinimum: true``, titles and examples dropped, ``additionalProperties:
false`` dropped (the API server prunes unknown fields instead), and every object field of the spec
that has a default gets its fields' defaults as its own, so that CEL rules can read them.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from fedwarden.api.client import FLClientSpec, FLClientStatus
from fedwarden.api.common import GROUP, VERSION, Model
from fedwarden.api.training import FederatedTrainingSpec, FederatedTrainingStatus

_DROP = {"title", "examples", "$defs"}
#: lists that are sets or maps in the Kubernetes sense (server-side apply merges them by key)
_LIST_TYPES = {
    "conditions": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    "bannedClients": {"x-kubernetes-list-type": "set"},
}
_MAX_ITEMS = 10000
_OPTIONAL = "x-fedwarden-optional"  # a marker removed again before the schema is returned


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **rest}, defs)
    return {k: _resolve(v, defs) for k, v in node.items() if k not in _DROP}


def _structural(node: Any, *, in_spec: bool) -> Any:
    if isinstance(node, list):
        return [_structural(item, in_spec=in_spec) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    options = node.pop("anyOf", None)
    if options is not None:
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) != 1:
            raise ValueError(f"cannot express anyOf {options} in a structural schema")
        node = {**kept[0], **node, _OPTIONAL: True}
        if node.get("default", 0) is None:
            del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if node.get("type") == "array":
        node.setdefault("maxItems", _MAX_ITEMS)
    properties = node.get("properties")
    if properties is not None:
        required = set(node.get("required", []))
        converted = {}
        for name, prop in properties.items():
            prop = _structural(prop, in_spec=in_spec)
            prop.update(_LIST_TYPES.get(name, {}))
            # a sub-object with a default (a default_factory in the model, not an Optional)
            # gets its fields' defaults as its own: the API server checks a default against the
            # CEL rules as it is written
            optional = prop.pop(_OPTIONAL, False)
            defaultable = prop.get("type") == "object" and "properties" in prop
            if in_spec and defaultable and name not in required and not optional:
                prop.setdefault(
                    "default",
                    {k: v["default"] for k, v in prop["properties"].items() if "default" in v},
                )
            converted[name] = prop
        node["properties"] = converted
    if "items" in node:
        node["items"] = _structural(node["items"], in_spec=in_spec)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"], in_spec=in_spec)
    return node


def openapi_schema(model: type[Model], *, in_spec: bool) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    resolved = _resolve(raw, raw.get("$defs", {}))
    schema: dict[str, Any] = _structural(resolved, in_spec=in_spec)
    schema.pop(_OPTIONAL, None)
    return schema


def _root(spec: type[Model], status: type[Model], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": openapi_schema(spec, in_spec=True),
            "status": openapi_schema(status, in_spec=False),
        },
    }


def _crd(
    kind: str,
    plural: str,
    short: str,
    columns: list[dict[str, Any]],
    schema: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "fedwarden",
                "app.kubernetes.io/part-of": "fedwarden",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["fedwarden"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _column(name: str, kind: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": name,
        "type": kind,
        "jsonPath": path,
        "description": description,
    }
    if priority:
        column["priority"] = priority
    return column


_AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since creation.")


def crds() -> list[dict[str, Any]]:
    """The two CRDs, FederatedTraining then FLClient."""
    training = _crd(
        "FederatedTraining",
        "federatedtrainings",
        "ft",
        [
            _column(
                "Phase",
                "string",
                ".status.phase",
                "Pending, Running, Suspended, Succeeded, Failed.",
            ),
            _column("Round", "integer", ".status.round", "Rounds completed."),
            _column("Rounds", "integer", ".spec.rounds", "Rounds asked for."),
            _column("Epsilon", "number", ".status.epsilonSpent", "Privacy budget ε spent."),
            _column("Unit", "string", ".status.privacyUnit", "Whom ε protects: record, client."),
            _column("Clients", "integer", ".status.enrolledClients", "Enrolled FLClients."),
            _column("Banned", "integer", ".status.bannedCount", "Banned FLClients."),
            _column("Accuracy", "number", ".status.lastMetrics.accuracy", "Last evaluation.", 1),
            _column("Model", "integer", ".status.model.round", "Round of the exported model.", 1),
            _AGE,
        ],
        _root(
            FederatedTrainingSpec,
            FederatedTrainingStatus,
            "A federated training: rounds, robust aggregation, differential privacy, budget.",
        ),
    )
    client = _crd(
        "FLClient",
        "flclients",
        "flc",
        [
            _column("Training", "string", ".spec.trainingRef.name", "The training it joins."),
            _column(
                "Phase", "string", ".status.phase", "Pending, Enrolled, Active, Banned, Revoked."
            ),
            _column("Strikes", "integer", ".status.strikes", "Strikes so far."),
            _column("Rounds", "integer", ".status.roundsParticipated", "Rounds it contributed to."),
            _column("Expires", "date", ".status.notAfter", "Certificate notAfter.", 1),
            _column("Reason", "string", ".status.banReason", "Why it was banned.", 1),
            _AGE,
        ],
        _root(FLClientSpec, FLClientStatus, "A site taking part in a FederatedTraining."),
    )
    return [training, client]


def crds_yaml() -> dict[str, str]:
    """File name → YAML text of each CRD (what ``crds/`` holds)."""
    header = "# Generated from operator/fedwarden/api/ by `fedwarden crds --output-dir crds/`.\n"
    return {
        f"{crd['spec']['names']['plural']}.{GROUP}.yaml": header
        + yaml.safe_dump(crd, sort_keys=False, allow_unicode=True, width=100)
        for crd in crds()
    }
