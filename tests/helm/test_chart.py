"""The Helm chart (charts/fedwarden): lint, render, schema, server dry-run, and install /
upgrade / uninstall on the test control plane with the operator it deploys running a training
from examples/ to Succeeded under the pod runner.

helm comes from ``hack/helm.sh`` (built from its Go module and cached), ``$FEDWARDEN_HELM`` or
``PATH``; without it these tests are skipped, except under CI (env ``CI`` set), where they fail.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests import strict_yaml

from fedwarden import __version__
from fedwarden.commands.operator import operator as operator_command
from fedwarden.testing.controlplane import ControlPlane
from fedwarden.testing.podrunner import PodRunner
from fedwarden.testing.waiting import wait_for

Helm = Callable[..., subprocess.CompletedProcess[str]]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "fedwarden"
GROUP_PATH = "/apis/fedwarden.io/v1alpha1"
CRD_NAMES = ("federatedtrainings.fedwarden.io", "flclients.fedwarden.io")

pytestmark = pytest.mark.slow


def render(helm: Helm, *args: str) -> list[dict[str, Any]]:
    """The rendered chart, parsed strictly: a key written twice fails the test."""
    out = helm("template", "fw", str(CHART), "--namespace", "fedwarden-system", *args).stdout
    return strict_yaml.load_all(out)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


ALL_OPTIONS: dict[str, Any] = {
    "image": {
        "repository": "registry.example/fedwarden/operator",
        "tag": "9.9.9",
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "fullnameOverride": "fw-operator",
    "operator": {
        "watchNamespaces": ["team-a", "team-b"],
        "resyncSeconds": 30,
        "trustDomain": "fl.example.org",
        "logLevel": "debug",
        "healthPort": 18080,
        "metricsPort": 18081,
        "extraArgs": ["--log-level=warning"],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    },
    "extraVolumes": [{"name": "extra", "configMap": {"name": "extra"}}],
    "extraVolumeMounts": [{"name": "extra", "mountPath": "/etc/extra", "readOnly": True}],
    "crds": {"install": True, "keep": True},
    "serviceAccount": {"create": True, "name": "fw-sa", "annotations": {"example.org/sa": "yes"}},
    "rbac": {"create": True},
    "service": {"type": "ClusterIP", "annotations": {"example.org/svc": "yes"}},
    "serviceMonitor": {
        "enabled": True,
        "interval": "15s",
        "scrapeTimeout": "5s",
        "labels": {"release": "prom"},
    },
    "networkPolicy": {
        "enabled": True,
        "apiServer": {"cidrs": ["10.0.0.1/32", "192.168.0.0/24"], "ports": [443, 6443]},
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
    "resources": {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    },
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "fl", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                        ]
                    }
                ]
            }
        }
    },
    "priorityClassName": "system-cluster-critical",
    "commonLabels": {"team": "platform"},
    "commonAnnotations": {"example.org/owner": "platform"},
    "podLabels": {"example.org/pod": "yes"},
    "podAnnotations": {"example.org/scrape": "yes"},
    "tests": {"enabled": True},
}


@pytest.fixture
def all_options(tmp_path: Path) -> Path:
    path = tmp_path / "all-options.yaml"
    path.write_text(yaml.safe_dump(ALL_OPTIONS))
    return path


# --- static checks ---------------------------------------------------------------------------


def test_chart_crds_are_a_copy_of_crds_dir() -> None:
    ours = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    theirs = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert ours == theirs
    for name in theirs:
        assert (CHART / "files" / "crds" / name).read_bytes() == (
            REPO / "crds" / name
        ).read_bytes(), (
            f"charts/fedwarden/files/crds/{name} differs from crds/{name}: make generate"
        )


def test_schema_forbids_unknown_keys_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key in value or {}:
                assert key in node["properties"], (
                    f"{path}.{key} is in values.yaml, not in the schema"
                )
                walk(node["properties"][key], value[key], f"{path}.{key}")

    walk(schema, values, "values")


def test_lint_is_clean(helm: Helm, all_options: Path) -> None:
    for extra in ([], ["-f", str(all_options)]):
        result = helm("lint", "--strict", str(CHART), *extra)
        assert "0 chart(s) failed" in result.stdout, result.stdout


def test_template_defaults(helm: Helm) -> None:
    docs = render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "NetworkPolicy",
            "Pod",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    ), kinds
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    assert container["image"] == f"ghcr.io/fedwarden/operator:{__version__}"
    assert container["command"] == ["fedwarden", "operator"]
    assert container["args"][:3] == [
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-address=0.0.0.0:8081",
        "--service-account-dir=/var/run/secrets/kubernetes.io/serviceaccount",
    ]
    # what the chart passes, `fedwarden operator` accepts (parsed, not run)
    operator_command.make_context("operator", list(container["args"]))
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["limits"]["memory"]
    for crd in by_kind(docs, "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["name"] in CRD_NAMES
        # the same schema as crds/
        (src,) = [
            y
            for p in (REPO / "crds").glob("*.yaml")
            if (y := yaml.safe_load(p.read_text()))["metadata"]["name"] == crd["metadata"]["name"]
        ]
        assert crd["spec"] == src["spec"]
    (test_pod,) = by_kind(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_the_test_pod_is_not_selected_as_the_operator(helm: Helm, all_options: Path) -> None:
    for docs in (render(helm), render(helm, "-f", str(all_options))):
        (test_pod,) = by_kind(docs, "Pod")
        labels = test_pod["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "test"
        (service,) = by_kind(docs, "Service")
        selectors = [service["spec"]["selector"]] + [
            policy["spec"]["podSelector"]["matchLabels"]
            for policy in by_kind(docs, "NetworkPolicy")
        ]
        for selector in selectors:
            assert not selector.items() <= labels.items(), selector


def test_a_key_written_twice_is_refused() -> None:
    with pytest.raises(strict_yaml.DuplicateKeyError, match="'app' twice"):
        strict_yaml.load_all("metadata:\n  labels:\n    app: a\n    app: b\n")


def test_rbac_is_least_privilege(helm: Helm) -> None:
    docs = render(helm)
    (role,) = by_kind(docs, "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any("*" in g or "*" in r or "*" in v for g, r, v in granted)
    assert not {v for _, _, v in granted} & {"escalate", "bind", "impersonate", "deletecollection"}
    resources = {r for _, r, _ in granted}
    assert not resources & {"pods", "nodes", "clusterroles", "clusterrolebindings", "namespaces"}
    # crds: read only; no namespaces without watchNamespaces
    assert {v for _, r, v in granted if r == "customresourcedefinitions"} == {"list", "watch"}
    # what the aggregator's Role grants, the operator holds (RBAC escalation check)
    assert ("fedwarden.io", "federatedtrainings", "get") in granted
    for sub in ("federatedtrainings/status", "flclients/status"):
        assert {("fedwarden.io", sub, "get"), ("fedwarden.io", sub, "patch")} <= granted
    (ns_role,) = by_kind(docs, "Role")
    assert ns_role["metadata"]["namespace"] == "default"
    assert ns_role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}
    ]
    with_ns = by_kind(render(helm, "--set", "operator.watchNamespaces={a,b}"), "ClusterRole")[0]
    assert {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]} in with_ns[
        "rules"
    ]


def test_template_with_every_option(helm: Helm, all_options: Path) -> None:
    docs = render(helm, "-f", str(all_options))
    kinds = {d["kind"] for d in docs}
    assert "ServiceMonitor" in kinds
    for doc in docs:
        assert doc["metadata"]["labels"]["team"] == "platform", doc["kind"]
        if doc["kind"] != "Pod":
            assert doc["metadata"]["annotations"]["example.org/owner"] == "platform", doc["kind"]
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["metadata"]["name"] == "fw-operator"
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["example.org/pod"] == "yes"
    assert pod["metadata"]["annotations"]["example.org/scrape"] == "yes"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "fw-sa"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in spec["affinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    (container,) = spec["containers"]
    assert container["image"] == "registry.example/fedwarden/operator:9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert "--namespace=team-a" in container["args"]
    assert "--namespace=team-b" in container["args"]
    assert "--liveness=http://0.0.0.0:18080/healthz" in container["args"]
    assert "--metrics-address=0.0.0.0:18081" in container["args"]
    assert container["args"][-1] == "--log-level=warning"
    operator_command.make_context("operator", list(container["args"]))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FEDWARDEN_RESYNC_SECONDS"] == "30"
    assert env["FEDWARDEN_TRUST_DOMAIN"] == "fl.example.org"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert {"name": "extra", "mountPath": "/etc/extra", "readOnly": True} in container[
        "volumeMounts"
    ]
    (policy,) = by_kind(docs, "NetworkPolicy")
    egress_to = [peer for rule in policy["spec"]["egress"] for peer in rule.get("to", [])]
    assert {"ipBlock": {"cidr": "10.0.0.1/32"}} in egress_to
    assert policy["spec"]["ingress"][0]["from"] == ALL_OPTIONS["networkPolicy"]["metricsFrom"]
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_crd_options(helm: Helm) -> None:
    assert not by_kind(render(helm, "--set", "crds.install=false"), "CustomResourceDefinition")
    for crd in by_kind(render(helm, "--set", "crds.keep=false"), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
    docs = render(
        helm, "--set", "networkPolicy.enabled=false,tests.enabled=false,rbac.create=false"
    )
    assert not {"NetworkPolicy", "Pod", "ClusterRole", "Role"} & {d["kind"] for d in docs}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "image.tagg=1.0"], "tagg"),
        (["--set", "serviceMonitor.enable=true"], "enable"),
        (["--set", "replicaCount=2"], "replicaCount"),
        (["--set", "operator.logLevel=verbose"], "logLevel"),
        (["--set", "securityContext.allowPrivilegeEscalation=true"], "allowPrivilegeEscalation"),
        (["--set", "operator.resyncSeconds=soon"], "resyncSeconds"),
    ],
)
def test_mistyped_value_is_refused_naming_it(helm: Helm, args: list[str], named: str) -> None:
    result = helm("template", "fw", str(CHART), *args, check=False)
    assert result.returncode != 0, result.stdout[:500]
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert named in result.stderr, result.stderr


# --- on the test control plane -----------------------------------------------------------------


@pytest.mark.k8s
def test_rendered_manifests_pass_server_dry_run(
    helm: Helm, all_options: Path, control_plane: ControlPlane, kube_namespace: str
) -> None:
    for extra in ([], ["-f", str(all_options)]):
        docs = render(helm, "--namespace", kube_namespace, *extra)
        # the ServiceMonitor's CRD (prometheus-operator) is not on the test control plane
        text = yaml.safe_dump_all([d for d in docs if d["kind"] != "ServiceMonitor"])
        control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=text)


def _wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_for(check, timeout, what, interval=0.5)


def _adopt_crds(cp: ControlPlane, release: str, namespace: str) -> None:
    """CRDs left by an earlier release (kept on uninstall) or applied by other tests: label and
    annotate them for this release, the way helm adopts existing objects."""
    for name in CRD_NAMES:
        if cp.api().get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"):
            cp.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
            cp.kubectl(
                "annotate",
                "--overwrite",
                "crd",
                name,
                f"meta.helm.sh/release-name={release}",
                f"meta.helm.sh/release-namespace={namespace}",
            )


def _status(cp: ControlPlane, path: str) -> dict[str, Any]:
    obj = cp.api().get_or_none(path) or {}
    status: dict[str, Any] = obj.get("status") or {}
    return status


def _replica_sets(cp: ControlPlane, ns: str, release: str) -> dict[str, int]:
    items = cp.api().get(
        f"/apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=app.kubernetes.io/instance={release}"
    )["items"]
    return {i["metadata"]["labels"]["pod-template-hash"]: int(i["spec"]["replicas"]) for i in items}


@pytest.fixture
def release(control_plane: ControlPlane, kube_namespace: str) -> Iterator[str]:
    name = f"fw{uuid.uuid4().hex[:6]}"
    yield name
    # cluster-scoped leftovers of a failed test (an uninstalled release has none)
    for kind in ("clusterrolebinding", "clusterrole"):
        control_plane.kubectl("delete", kind, f"{name}-fedwarden", "--ignore-not-found")


@pytest.mark.k8s
def test_install_runs_a_training_then_upgrade_rolls_and_uninstall_keeps_crds(
    helm: Helm,
    control_plane: ControlPlane,
    pod_runner: PodRunner,
    kube_namespace: str,
    release: str,
) -> None:
    cp, ns = control_plane, kube_namespace
    kubeconfig = Path(cp.kubeconfig)
    fullname = f"{release}-fedwarden"
    # The chart with its default values (only a shorter resync, so the test is quicker). The pod
    # runner runs the operator's pod as a process (its image's name contains `fedwarden`): the
    # chart passes --service-account-dir, which the runner rewrites to the pod's
    # kube-api-access volume (a token of the chart's ServiceAccount, so the operator runs with
    # exactly the chart's RBAC; the runner passes no KUBECONFIG and the pod's HOME has no
    # kubeconfig), and the health and metrics addresses (0.0.0.0:<port>, also inside the
    # liveness URL), which it rewrites to the Service's loopback ports (docs/testing.md).

    def _logs() -> str:
        pods = cp.api().get(
            f"/api/v1/namespaces/{ns}/pods?labelSelector=app.kubernetes.io/component=operator"
        )
        return "\noperator log:\n" + "\n".join(
            pod_runner.logs(ns, p["metadata"]["name"])[-5000:] for p in pods["items"]
        )

    _adopt_crds(cp, release, ns)
    started = time.monotonic()
    helm(
        "install",
        release,
        str(CHART),
        "-n",
        ns,
        "--set",
        "operator.resyncSeconds=5",
        kubeconfig=kubeconfig,
    )
    for name in CRD_NAMES:
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    deployment_path = f"/apis/apps/v1/namespaces/{ns}/deployments/{fullname}"
    _wait_for(
        lambda: _status(cp, deployment_path).get("availableReplicas") == 1,
        120,
        "the operator available",
    )
    print(f"operator available {time.monotonic() - started:.1f} s after helm install")

    # helm test: the health endpoint through the Service, and the CRDs served (no --logs: the
    # pod runner has no kubelet API; its logs come from the runner)
    result = helm("test", release, "-n", ns, kubeconfig=kubeconfig, check=False, timeout=180)
    assert result.returncode == 0, (
        result.stdout + result.stderr + pod_runner.logs(ns, f"{fullname}-test") + _logs()
    )

    # the headline: the chart's operator trains examples/ to Succeeded
    cp.kubectl("apply", "-n", ns, "-f", str(REPO / "examples"))
    training_path = f"{GROUP_PATH}/namespaces/{ns}/federatedtrainings/digits"
    try:
        final = _wait_for(
            lambda: (
                _status(cp, training_path).get("phase") in ("Succeeded", "Failed")
                and _status(cp, training_path)
            ),
            900,
            "the training to finish",
        )
    except AssertionError:
        raise AssertionError(f"{_status(cp, training_path)}\n{_logs()}") from None
    assert final["phase"] == "Succeeded", final
    assert final["round"] == 6
    print(f"training Succeeded {time.monotonic() - started:.1f} s after helm install")
    # the metrics endpoint, through the Service's metrics port
    host, port = pod_runner.service_address(ns, fullname, "metrics")
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert b"fedwarden_operator_reconciliations_total" in response.read()

    # upgrade with a changed value: a new ReplicaSet (pod template hash), one replica at the end
    before = _replica_sets(cp, ns, release)
    assert len([h for h, n in before.items() if n == 1]) == 1, before
    helm(
        "upgrade",
        release,
        str(CHART),
        "-n",
        ns,
        "--set",
        "operator.resyncSeconds=7",
        kubeconfig=kubeconfig,
    )
    after = _wait_for(
        lambda: (rs := _replica_sets(cp, ns, release)) and len(rs) == len(before) + 1 and rs,
        60,
        "a new ReplicaSet",
    )
    (new_hash,) = set(after) - set(before)
    _wait_for(
        lambda: (
            _replica_sets(cp, ns, release)[new_hash] == 1
            and all(n == 0 for h, n in _replica_sets(cp, ns, release).items() if h != new_hash)
        ),
        120,
        "the rollout",
    )
    env = cp.api().get(deployment_path)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "FEDWARDEN_RESYNC_SECONDS", "value": "7"} in env

    # uninstall: the operator goes, the CRDs and the user's training stay
    helm("uninstall", release, "-n", ns, "--wait", kubeconfig=kubeconfig)
    _wait_for(lambda: cp.api().get_or_none(deployment_path) is None, 60, "the Deployment gone")
    assert (
        cp.api().get_or_none(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{fullname}") is None
    )
    for name in CRD_NAMES:
        crd = cp.api().get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        assert crd["metadata"].get("deletionTimestamp") is None
    training = cp.api().get(training_path)
    assert training["status"]["phase"] == "Succeeded"
    assert cp.api().get(f"{GROUP_PATH}/namespaces/{ns}/flclients")["items"]
    # no operator is left to run the finalizers: drop them, so the namespace can go
    for kind in ("federatedtrainings", "flclients"):
        for name in cp.kubectl("get", kind, "-n", ns, "-o", "name").stdout.split():
            cp.kubectl("patch", name, "-n", ns, "--type=merge", "-p",
                       '{"metadata":{"finalizers":null}}')  # fmt: skip


@pytest.mark.k8s
def test_uninstall_keeps_crds_and_trainings_without_the_operator_running(
    helm: Helm, control_plane: ControlPlane, kube_namespace: str, release: str
) -> None:
    """The keep policy alone (no pod runner): install, create a training, uninstall."""
    cp, ns = control_plane, kube_namespace
    _adopt_crds(cp, release, ns)
    helm("install", release, str(CHART), "-n", ns, kubeconfig=Path(cp.kubeconfig))
    for name in CRD_NAMES:
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    assert cp.api().get_or_none(f"/apis/apps/v1/namespaces/{ns}/deployments/{release}-fedwarden")
    cp.kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "training.yaml"))
    helm("uninstall", release, "-n", ns, "--wait", kubeconfig=Path(cp.kubeconfig))
    for name in CRD_NAMES:
        assert cp.api().get_or_none(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        )
    assert cp.api().get_or_none(f"{GROUP_PATH}/namespaces/{ns}/federatedtrainings/digits")
