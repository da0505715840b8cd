"""The test control plane and the pod runner do what the operator's tests rely on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fedwarden.testing import controlplane
from fedwarden.testing.controlplane import ControlPlane
from fedwarden.testing.kubeapi import ApiError, KubeApi
from fedwarden.testing.podrunner import (
    PodRunner,
    expand,
    rewrite_listen_addresses,
    rewrite_paths,
)
from fedwarden.testing.waiting import wait_for

IMAGE = "fedwarden/test:dev"
REPO = Path(__file__).resolve().parents[2]


def apply(cp: ControlPlane, manifest: dict[str, Any], namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    cp.kubectl(*args, input=json.dumps(manifest))


def pod_phase(api: KubeApi, ns: str, name: str) -> str | None:
    pod = api.get_or_none(f"/api/v1/namespaces/{ns}/pods/{name}")
    return None if pod is None else pod.get("status", {}).get("phase")


# --- without a cluster --------------------------------------------------------------------


def test_script_and_harness_agree_on_versions() -> None:
    script = (REPO / "hack" / "control-plane.sh").read_text()
    k8s = re.search(r"FEDWARDEN_KUBERNETES_VERSION:-(v[0-9.]+)\}", script)
    etcd = re.search(r"FEDWARDEN_ETCD_VERSION:-(v[0-9.]+)\}", script)
    assert k8s
    assert etcd
    assert (k8s.group(1), etcd.group(1)) == (
        controlplane.KUBERNETES_VERSION,
        controlplane.ETCD_VERSION,
    )


def test_expand_and_rewrite_paths() -> None:
    assert expand("$(A)-$(B)-$$(A)", {"A": "x"}) == "x-$(B)-$(A)"
    mounts = {"/etc/tls": "/tmp/v/tls", "/data": "/tmp/v/data"}
    assert rewrite_paths("--tls=/etc/tls/ca.crt", mounts) == "--tls=/tmp/v/tls/ca.crt"
    assert rewrite_paths("/data", mounts) == "/tmp/v/data"
    assert rewrite_paths("/database /x/data", mounts) == "/database /x/data"


def test_rewrite_listen_addresses() -> None:
    listen = {8080: "127.0.0.1:40001", 9090: "127.0.0.1:40002"}

    def rw(value: str) -> str:
        return rewrite_listen_addresses(value, listen)

    # bare host:port and :port where an argument or a value starts
    assert rw("0.0.0.0:8080") == "127.0.0.1:40001"
    assert rw("--listen=[::]:8080") == "--listen=127.0.0.1:40001"
    assert rw(":9090") == "127.0.0.1:40002"
    assert rw("a=:8080,b=0.0.0.0:9090") == "a=127.0.0.1:40001,b=127.0.0.1:40002"
    # the wildcard host of a URL, any scheme, with or without a path
    assert (
        rw("--liveness=http://0.0.0.0:8080/healthz") == "--liveness=http://127.0.0.1:40001/healthz"
    )
    assert rw("http://[::]:8080") == "http://127.0.0.1:40001"
    assert rw("https://0.0.0.0:9090/metrics?x=1") == "https://127.0.0.1:40002/metrics?x=1"
    # left alone: other hosts (clients of something else), other ports, longer port numbers
    for same in (
        "http://localhost:8080/healthz",
        "http://10.0.0.1:8080/",
        "http://example.org:8080/",
        "http://0.0.0.0:8081/healthz",
        "0.0.0.0:80800",
        "--other=0.0.0.0:7070",
        "host:8080",
        "http://:8080/",
    ):
        assert rw(same) == same
    assert rewrite_listen_addresses("0.0.0.0:8080", {}) == "0.0.0.0:8080"


def test_children_die_with_the_test_process() -> None:
    """A killed pytest must not leave etcd, kube-apiserver or pod processes behind."""
    code = textwrap.dedent(
        """
        import os, threading
        from fedwarden.testing._procs import popen
        # started from a short-lived thread: the child must outlive the thread, not the process
        out = []
        t = threading.Thread(target=lambda: out.append(popen(["sleep", "60"])))
        t.start(); t.join()
        pid = out[0].pid
        # setpriv sets the death signal before it execs the program: wait for the exec
        while b"sleep" not in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")[0]:
            pass
        print(pid, flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.run([sys.executable, "-c", code], stdout=out, timeout=60, check=False)
        assert proc.returncode == -9
        out.seek(0)
        pid = int(out.read().split()[0])
    wait_for(lambda: not _alive(pid), timeout=10, what="the orphan to be killed")


# --- the control plane --------------------------------------------------------------------


def test_api_server_answers(control_plane: ControlPlane) -> None:
    version = control_plane.api().get("/version")
    assert version["gitVersion"] == controlplane.KUBERNETES_VERSION
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    out = control_plane.kubectl("version", "-o", "json").stdout
    assert json.loads(out)["serverVersion"]["gitVersion"] == controlplane.KUBERNETES_VERSION


def test_rbac_refuses_an_unprivileged_service_account(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    can = control_plane.kubectl(
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        ns,
        f"--as=system:serviceaccount:{ns}:nobody",
        check=False,
    )
    assert (can.returncode, can.stdout.strip()) == (1, "no")
    token = control_plane.kubectl("create", "token", "nobody", "-n", ns).stdout.strip()
    as_nobody = KubeApi(control_plane.server, control_plane.ca_file, token=token)
    with pytest.raises(ApiError) as refused:
        as_nobody.get(f"/api/v1/namespaces/{ns}/secrets")
    assert refused.value.status == 403
    # the admin can
    assert (
        control_plane.kubectl("auth", "can-i", "list", "secrets", "-n", ns).stdout.strip() == "yes"
    )


def test_job_runs_to_completion(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str
) -> None:
    ns = kube_namespace
    control_plane.kubectl(
        "create", "secret", "generic", "token", "-n", ns, "--from-literal=value=s3cret"
    )
    control_plane.kubectl(
        "create", "configmap", "settings", "-n", ns, "--from-literal=greeting.txt=hello"
    )
    script = textwrap.dedent(
        """
        import os, pathlib, sys
        greeting = pathlib.Path(sys.argv[1]).read_text()
        print(f"{greeting} {os.environ['TOKEN']} {os.environ['POD_NAMESPACE']}", flush=True)
        """
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": IMAGE,
                            "command": ["python", "-c", script, "/etc/settings/greeting.txt"],
                            "env": [
                                {
                                    "name": "TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "token", "key": "value"}
                                    },
                                },
                                {
                                    "name": "POD_NAMESPACE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                },
                            ],
                            "volumeMounts": [{"name": "settings", "mountPath": "/etc/settings"}],
                        }
                    ],
                    "volumes": [{"name": "settings", "configMap": {"name": "settings"}}],
                }
            },
        },
    }
    apply(control_plane, job, ns)
    control_plane.kubectl(
        "wait", "--for=condition=complete", "job/hello", "-n", ns, "--timeout=90s", timeout=100
    )
    job_status = control_plane.api().get(f"/apis/batch/v1/namespaces/{ns}/jobs/hello")["status"]
    assert job_status["succeeded"] == 1
    pods = control_plane.api().get(f"/api/v1/namespaces/{ns}/pods", labelSelector="job-name=hello")
    (pod,) = pods["items"]
    assert pod["spec"]["nodeName"] == pod_runner.node_name
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], state["exitCode"]) == ("Succeeded", 0)
    assert f"hello s3cret {ns}" in pod_runner.logs(ns, pod["metadata"]["name"])


def test_failing_job_reports_the_exit_code(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str
) -> None:
    ns = kube_namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "fails"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": IMAGE, "command": ["python", "-c", "raise SystemExit(3)"]}
            ],
        },
    }
    apply(control_plane, pod, ns)
    api = control_plane.api()
    wait_for(lambda: pod_phase(api, ns, "fails") == "Failed", what="pod fails")
    status = api.get(f"/api/v1/namespaces/{ns}/pods/fails")["status"]
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_missing_command_is_a_start_error(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str
) -> None:
    ns = kube_namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nocmd"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": IMAGE, "command": ["no-such-program"]}],
        },
    }
    apply(control_plane, pod, ns)
    api = control_plane.api()
    wait_for(lambda: pod_phase(api, ns, "nocmd") == "Failed", what="pod fails")
    status = api.get(f"/api/v1/namespaces/{ns}/pods/nocmd")["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "StartError"
    assert "no-such-program" in terminated["message"]


def test_unsupported_image_fails_the_pod(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str
) -> None:
    ns = kube_namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nginx"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    }
    apply(control_plane, pod, ns)
    api = control_plane.api()
    wait_for(lambda: pod_phase(api, ns, "nginx") == "Failed", what="pod fails")
    status = api.get(f"/api/v1/namespaces/{ns}/pods/nginx")["status"]
    assert status["reason"] == "UnsupportedImage"
    assert "nginx:1.27" in status["message"]


def test_garbage_collector_deletes_dependents(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    api = control_plane.api()
    owner = api.create(
        f"/api/v1/namespaces/{ns}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
    )
    api.create(
        f"/api/v1/namespaces/{ns}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
        },
    )
    api.delete(f"/api/v1/namespaces/{ns}/configmaps/owner")
    wait_for(
        lambda: api.get_or_none(f"/api/v1/namespaces/{ns}/configmaps/child") is None,
        what="the garbage collector to delete the child",
    )


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.fedwarden.io"},
    "spec": {
        "group": "test.fedwarden.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "minReplicas": {"type": "integer"},
                                    "maxReplicas": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.minReplicas <= self.maxReplicas",
                                        "message": "minReplicas must not exceed maxReplicas",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_cel_validation_refuses_a_bad_object(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    apply(control_plane, CRD)
    try:
        control_plane.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/widgets.test.fedwarden.io",
            "--timeout=30s",
        )

        def widget(lo: int, hi: int) -> dict[str, Any]:
            return {
                "apiVersion": "test.fedwarden.io/v1",
                "kind": "Widget",
                "metadata": {"name": f"w{lo}{hi}"},
                "spec": {"minReplicas": lo, "maxReplicas": hi},
            }

        bad = control_plane.kubectl(
            "apply", "-n", kube_namespace, "-f", "-", input=json.dumps(widget(5, 2)), check=False
        )
        assert bad.returncode != 0
        assert "minReplicas must not exceed maxReplicas" in bad.stderr
        apply(control_plane, widget(1, 2), kube_namespace)
    finally:
        control_plane.kubectl("delete", "crd", "widgets.test.fedwarden.io", "--wait=false")


TERM_SCRIPT = textwrap.dedent(
    """
    import pathlib, signal, sys, time
    marker = pathlib.Path(sys.argv[1])
    def on_term(signum, frame):
        marker.write_text("terminated")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    marker.write_text("running")
    while True:
        time.sleep(0.1)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_pod_deletion_terminates_the_process(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str
) -> None:
    ns = kube_namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper"},
        "spec": {
            "terminationGracePeriodSeconds": 20,
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "command": ["python", "-c", TERM_SCRIPT, "/state/marker"],
                    "volumeMounts": [{"name": "state", "mountPath": "/state"}],
                }
            ],
            "volumes": [{"name": "state", "persistentVolumeClaim": {"claimName": "state"}}],
        },
    }
    apply(control_plane, pod, ns)
    api = control_plane.api()
    wait_for(lambda: pod_phase(api, ns, "sleeper") == "Running", what="pod running")
    marker = pod_runner.pvc_dir(ns, "state") / "marker"
    wait_for(lambda: marker.exists() and marker.read_text() == "running", what="process started")
    pid = pod_runner.pid(ns, "sleeper")
    assert pid is not None
    assert _alive(pid)
    start = time.monotonic()
    control_plane.kubectl("delete", "pod", "sleeper", "-n", ns, "--timeout=60s", timeout=70)
    assert time.monotonic() - start < 15  # SIGTERM handled: no wait for the grace period
    assert not _alive(pid)
    assert marker.read_text() == "terminated"
    assert api.get_or_none(f"/api/v1/namespaces/{ns}/pods/sleeper") is None


def test_pod_ignoring_sigterm_is_killed_after_the_grace_period(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str
) -> None:
    ns = kube_namespace
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stubborn"},
        "spec": {
            "containers": [{"name": "main", "image": IMAGE, "command": ["python", "-c", script]}]
        },
    }
    apply(control_plane, pod, ns)
    api = control_plane.api()
    wait_for(lambda: pod_phase(api, ns, "stubborn") == "Running", what="pod running")
    pid = wait_for(lambda: pod_runner.pid(ns, "stubborn"), what="pid")
    start = time.monotonic()
    control_plane.kubectl(
        "delete", "pod", "stubborn", "-n", ns, "--grace-period=2", "--timeout=60s", timeout=70
    )
    elapsed = time.monotonic() - start
    assert 1.5 < elapsed < 15
    assert not _alive(pid)


def test_restart_on_failure_keeps_the_persistent_volume(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str
) -> None:
    ns = kube_namespace
    # fails the first time, succeeds the second: it sees what the first run left on the claim
    script = textwrap.dedent(
        """
        import pathlib, sys
        mark = pathlib.Path(sys.argv[1]) / "checkpoint"
        if not mark.exists():
            mark.write_text("round 1")
            sys.exit(1)
        print("resumed from", mark.read_text())
        """
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "resume"},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "command": ["python", "-c", script, "$(DATA_DIR)"],
                    "env": [{"name": "DATA_DIR", "value": "/var/lib/data"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    }
    apply(control_plane, pod, ns)
    api = control_plane.api()
    wait_for(lambda: pod_phase(api, ns, "resume") == "Succeeded", what="pod succeeds")
    status = api.get(f"/api/v1/namespaces/{ns}/pods/resume")["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert "resumed from round 1" in pod_runner.logs(ns, "resume")


SERVER_SCRIPT = textwrap.dedent(
    """
    import http.server, os, sys
    print("argv", sys.argv[1:], flush=True)
    host, port = os.environ["FEDWARDEN_BIND_ADDRESS"].rsplit(":", 1)
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"hello from {os.environ['HOSTNAME']}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    http.server.HTTPServer((host, int(port)), Hello).serve_forever()
    """
)

CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys, urllib.request
    for url in sys.argv[1:]:
        print(url, urllib.request.urlopen(url, timeout=10).read().decode(), flush=True)
    """
)


@pytest.mark.parametrize("service_first", [True, False], ids=["service-first", "pod-first"])
def test_service_addresses_stay_on_loopback(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str, service_first: bool
) -> None:
    ns = kube_namespace
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }
    server = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": IMAGE,
                    "command": ["python", "-c", SERVER_SCRIPT],
                    "args": [
                        "--listen",
                        "0.0.0.0:8080",
                        "--metrics=:8080",
                        "--other=0.0.0.0:9090",
                        "--url=http://0.0.0.0:8080/healthz",
                    ],
                    "ports": [{"containerPort": 8080}],
                }
            ]
        },
    }
    # pod-first: the runner waits a little for a Service to select a Pod that declares ports
    for manifest in (service, server) if service_first else (server, service):
        apply(control_plane, manifest, ns)
    host, port = pod_runner.service_address(ns, "web")
    assert host == "127.0.0.1"
    assert pod_runner.service_address(ns, "web", "http") == (host, port)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/", timeout=2) as r:
                return r.read() == b"hello from web"
        except OSError:
            return False

    wait_for(answers, what="the server pod to answer on its service address")
    # listen addresses on the target port are rewritten; other ports are left alone
    argv = [line for line in pod_runner.logs(ns, "web").splitlines() if line.startswith("argv")]
    assert argv[-1] == (
        f"argv ['--listen', '127.0.0.1:{port}', '--metrics=127.0.0.1:{port}', "
        f"'--other=0.0.0.0:9090', '--url=http://127.0.0.1:{port}/healthz']"
    )
    client = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": IMAGE,
                    "command": [
                        "python",
                        "-c",
                        CLIENT_SCRIPT,
                        f"http://web.{ns}.svc.cluster.local:80/",
                        f"http://web.{ns}.svc:80/x",
                        "http://web:80/",
                    ],
                }
            ],
        },
    }
    apply(control_plane, client, ns)
    api = control_plane.api()
    wait_for(
        lambda: pod_phase(api, ns, "client") in ("Succeeded", "Failed"), what="client finishes"
    )
    logs = pod_runner.logs(ns, "client")
    assert pod_phase(api, ns, "client") == "Succeeded", logs
    assert logs.count("hello from web") == 3
    assert f"http://127.0.0.1:{port}/x" in logs


def test_in_cluster_credentials_work_against_the_test_api_server(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str
) -> None:
    """The automatic kube-api-access volume holds a token and CA that the API server accepts."""
    ns = kube_namespace
    script = textwrap.dedent(
        """
        import json, os, ssl, sys, urllib.request
        sa = sys.argv[1]
        token = open(f"{sa}/token").read()
        ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        req = urllib.request.Request(
            f"https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            data=b'{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}',
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        review = json.load(urllib.request.urlopen(req, context=ctx))
        print("user:", review["status"]["userInfo"]["username"], open(f"{sa}/namespace").read())
        """
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "whoami"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "command": [
                        "python",
                        "-c",
                        script,
                        "/var/run/secrets/kubernetes.io/serviceaccount",
                    ],
                }
            ],
        },
    }
    apply(control_plane, pod, ns)
    api = control_plane.api()
    wait_for(lambda: pod_phase(api, ns, "whoami") in ("Succeeded", "Failed"), what="pod finishes")
    logs = pod_runner.logs(ns, "whoami")
    assert pod_phase(api, ns, "whoami") == "Succeeded", logs
    assert f"user: system:serviceaccount:{ns}:default {ns}" in logs


def test_kubectl_helper_raises_with_stderr(control_plane: ControlPlane) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        control_plane.kubectl("get", "pod", "does-not-exist", "-n", "default")
    assert "NotFound" in failed.value.stderr


def test_force_deleted_pod_is_stopped(
    control_plane: ControlPlane, pod_runner: PodRunner, kube_namespace: str
) -> None:
    ns = kube_namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "forced"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "command": ["python", "-c", "import time; time.sleep(600)"],
                }
            ]
        },
    }
    apply(control_plane, pod, ns)
    api = control_plane.api()
    wait_for(lambda: pod_phase(api, ns, "forced") == "Running", what="pod running")
    pid = wait_for(lambda: pod_runner.pid(ns, "forced"), what="pid")
    control_plane.kubectl("delete", "pod", "forced", "-n", ns, "--grace-period=0", "--force")
    wait_for(lambda: not _alive(pid), timeout=20, what="the process to stop")
