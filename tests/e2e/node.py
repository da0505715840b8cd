"""Driving the local node (hack/node.sh) from tests: kubectl, helm, ctr, and waiting on them."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
NODE_STATE = Path("/var/lib/fedwarden-node")
CONTAINERD_SOCKET = "/run/fedwarden-node/containerd.sock"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE_PREFIX = "ghcr.io/fedwarden"
NODE_IMAGES = [f"{IMAGE_PREFIX}/{role}:{VERSION}" for role in ("operator", "aggregator", "client")]
CLIENT_IMAGE = f"{IMAGE_PREFIX}/client:{VERSION}"
# where hack/node.sh's hostPath volumes for checkpoints live (the test's own PersistentVolumes)
VOLUMES = NODE_STATE / "volumes"
RUN_AS_USER = 65532
# the node's region for the whole session (tests/e2e/conftest.py): the examples' sites' region
REGION_LABEL = "topology.kubernetes.io/region"
NODE_REGION = "eu-west"

T = TypeVar("T")


class NodeUnavailable(Exception):
    """The node is not up, or the images are not in its containerd."""


def _script_output(*args: str) -> str:
    return subprocess.run(
        ["bash", *args], cwd=REPO, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


def wait_for(predicate: Callable[[], T | bool | None], timeout: float, what: str) -> T:
    """Poll every second until ``predicate`` returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


class Node:
    def __init__(self, kubectl: Path, helm: Path) -> None:
        self.kubeconfig = NODE_STATE / "admin.kubeconfig"
        self._kubectl = kubectl
        self._helm = helm

    @classmethod
    def connect(cls) -> Node:
        if shutil.which("ctr") is None or not Path(CONTAINERD_SOCKET).exists():
            raise NodeUnavailable("hack/node.sh up has not run")
        kubectl = Path(_script_output("hack/control-plane.sh", "--print-dir")) / "bin" / "kubectl"
        helm = Path(_script_output("hack/helm.sh", "--print-path"))
        if not helm.exists():
            raise NodeUnavailable(f"no helm at {helm} (make helm)")
        node = cls(kubectl, helm)
        ready = node.kubectl(
            "wait", "--for=condition=Ready", "node/localhost", "--timeout=10s", check=False
        )
        if ready.returncode != 0:
            raise NodeUnavailable(f"node localhost is not Ready: {ready.stderr.strip()}")
        return node

    def require_images(self, refs: list[str]) -> None:
        listed = subprocess.run(
            ["ctr", "--address", CONTAINERD_SOCKET, "-n", "k8s.io", "images", "ls", "-q"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout.split()  # fmt: skip
        missing = [ref for ref in refs if ref not in listed]
        if missing:
            raise NodeUnavailable(f"images not loaded: {missing} (make images; make e2e)")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self._kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self._helm), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        out = self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
        obj: dict[str, Any] = json.loads(out)
        return obj

    def items(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        found: list[dict[str, Any]] = json.loads(self.kubectl(*args).stdout)["items"]
        return found

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", *(["-n", namespace] if namespace else []), "-f", "-", input=text)

    def restricted_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """A namespace that enforces the restricted Pod Security Standard."""
        all_labels = {"pod-security.kubernetes.io/enforce": "restricted", **(labels or {})}
        self.apply(
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": name, "labels": all_labels}}
        )  # fmt: skip

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true",
                     "--timeout=180s", check=False, timeout=240)  # fmt: skip

    def checkpoint_volume(self, name: str, claim: str, namespace: str, size: str = "1Gi") -> Path:
        """A hostPath PersistentVolume on a directory of the node, reserved for ``claim`` (static
        provisioning: no provisioner runs here); its directory."""
        path = VOLUMES / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        # the aggregator runs as 65532; hostPath volumes get no fsGroup ownership change
        path.chmod(0o770)
        shutil.chown(path, RUN_AS_USER, RUN_AS_USER)
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {"fedwarden.io/e2e": "true"}},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "claimRef": {"namespace": namespace, "name": claim},
                    "hostPath": {"path": str(path), "type": "Directory"},
                },
            }
        )
        return path

    def delete_volume(self, name: str) -> None:
        self.kubectl("delete", "pv", name, "--ignore-not-found", "--wait=false", check=False)
        shutil.rmtree(VOLUMES / name, ignore_errors=True)

    def install_chart(self, namespace: str) -> None:
        self.restricted_namespace(namespace)
        self.helm(
            "install", "fedwarden", str(REPO / "charts" / "fedwarden"), "-n", namespace,
            "--set", "image.pullPolicy=Never", "--wait", "--timeout", "300s",
        )  # fmt: skip

    def uninstall_chart(self, namespace: str) -> None:
        self.helm("uninstall", "fedwarden", "-n", namespace, "--wait", "--timeout", "120s")
        self.delete_namespace(namespace)

    def pod_ip(self, namespace: str, selector: str) -> str:
        def ip() -> str | None:
            pods = [p for p in self.items("pods", namespace, selector) if _running(p)]
            return pods[0]["status"].get("podIP") if pods else None

        return wait_for(ip, 300, f"a running pod {selector} in {namespace}")

    def logs(self, namespace: str, selector: str) -> str:
        return self.kubectl(
            "logs", "-n", namespace, "-l", selector, "--tail=40", "--all-containers",
            "--prefix", check=False,
        ).stdout  # fmt: skip


def _running(pod: dict[str, Any]) -> bool:
    return bool(
        pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
    )


def probe_pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod that sleeps, from the client image, restricted-compliant: `kubectl exec` runs the
    connection probes in it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": CLIENT_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import time; time.sleep(86400)"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


# exit 0: the TCP connection opened; 1: refused or timed out (a dropped SYN)
CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))\n"
    "except OSError as e:\n"
    "    print(e)\n"
    "    sys.exit(1)\n"
)


def connects(
    node: Node, namespace: str, pod: str, host: str, port: int, timeout: float = 3.0
) -> bool:
    """Whether ``pod`` opens a TCP connection to ``host:port`` (run in the pod, through exec)."""
    result = node.kubectl(
        "exec", "-n", namespace, pod, "--", "python", "-c", CONNECT, host, str(port),
        str(timeout), check=False, timeout=60,
    )  # fmt: skip
    if result.returncode not in (0, 1):
        raise AssertionError(f"probe from {pod} did not run: {result.stdout}{result.stderr}")
    return result.returncode == 0
