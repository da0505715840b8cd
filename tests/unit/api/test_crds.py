"""The CRDs in crds/ are the ones the models generate, and they are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from fedwarden.api.crd import crds, crds_yaml
from fedwarden.commands.crds import crds as crds_command

CRDS_DIR = Path(__file__).resolve().parents[3] / "crds"


def test_checked_in_crds_are_current() -> None:
    expected = crds_yaml()
    on_disk = {p.name: p.read_text() for p in CRDS_DIR.glob("*.yaml")}
    assert set(on_disk) == set(expected), "run: make generate"
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} drifted from fedwarden.api: run make generate"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out += _walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schemas_are_structural() -> None:
    # every node has a type, and nothing the API server refuses in a structural schema
    for crd in crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "type" in node, f"{path} has no type"
            for banned in ("$ref", "anyOf", "oneOf", "allOf", "const", "title", "$defs"):
                assert banned not in node, f"{path} has {banned}"
            assert node.get("additionalProperties") is not False, path
            if node["type"] == "array":
                assert "maxItems" in node, f"{path}: unbounded lists make CEL rules too costly"


def test_names_columns_and_status_subresource() -> None:
    training, client = crds()
    assert training["spec"]["names"]["shortNames"] == ["ft"]
    assert client["spec"]["names"]["shortNames"] == ["flc"]
    for crd in (training, client):
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["categories"] == ["fedwarden"]
        paths = [c["jsonPath"] for c in version["additionalPrinterColumns"]]
        assert all("conditions" not in p for p in paths)
    columns = {c["name"]: c["jsonPath"] for c in training["spec"]["versions"][0][
        "additionalPrinterColumns"]}  # fmt: skip
    assert columns["Epsilon"] == ".status.epsilonSpent"
    assert columns["Unit"] == ".status.privacyUnit"
    assert columns["Round"] == ".status.round"
    assert columns["Banned"] == ".status.bannedCount"


def test_conditions_are_a_map_keyed_by_type() -> None:
    training = crds()[0]
    status = training["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {
        "type",
        "status",
        "reason",
        "lastTransitionTime",
    }


def test_spec_objects_default_so_cel_rules_can_read_them() -> None:
    training = crds()[0]
    spec = training["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["selection"]["default"] == {
        "fraction": 1.0,
        "minClients": 2,
        "minAvailable": 2,
    }
    assert "default" not in spec["properties"]["dataResidency"]  # Optional: no default
    assert spec["properties"]["selection"]["properties"]["minClients"]["default"] == 2
    assert spec["properties"]["privacy"]["properties"]["mode"]["default"] == "none"
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("4 * self.aggregation.f + 3" in r for r in rules)
    beta = spec["properties"]["aggregation"]["properties"]["beta"]
    assert beta["maximum"] == 0.5
    assert beta["exclusiveMaximum"] is True


def test_command_prints_all_documents() -> None:
    result = CliRunner().invoke(crds_command, [])
    assert result.exit_code == 0
    documents = [d for d in yaml.safe_load_all(result.output) if d]
    assert [d["spec"]["names"]["kind"] for d in documents] == ["FederatedTraining", "FLClient"]
