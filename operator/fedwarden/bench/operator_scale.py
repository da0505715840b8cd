"""The operator at scale: N FederatedTrainings with M FLClients each, on the test control plane.

Starts a ControlPlane (etcd + kube-apiserver + kube-controller-manager, built by
``hack/control-plane.sh``) with an audit log, applies the CRDs, runs ``fedwarden operator`` as a
separate process under its own client certificate (user ``fedwarden-operator``), creates N
namespaces each with one FederatedTraining and M FLClients (``issueKey: true``, no workload), all
at once, and waits until every training is Ready as defined below. Then it measures a quiet
minute (the resync timers' cost), deletes the trainings and waits for the garbage collector,
then deletes the clients. Writes JSON and prints a markdown table.

"Ready" here (there is no kubelet, so the aggregator's pod stays Pending and is not run):

* the FederatedTraining's status has ``CertificatesReady=True``, ``enrolledClients == M`` and
  ``observedGeneration == metadata.generation``;
* each of its M FLClients has ``status.phase == Enrolled``, a ``certificateSerial`` and a
  ``certificateSecret``, and that Secret exists;
* the training's objects exist: the Job, Service, ServiceAccount, Role, RoleBinding and
  ConfigMap ``<t>-aggregator``, the ConfigMap ``<t>-trust``, the Secrets ``<t>-ca`` and
  ``<t>-aggregator-tls``, the PVC ``<t>-checkpoints``, the three NetworkPolicies; the Role names
  all M clients and the aggregator's settings say ``population: M``.

Usage::

    python -m fedwarden.bench.operator_scale --trainings 100 --clients 20 \\
        --output benchmarks/operator-scale.json
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedwarden.resources import names
from fedwarden.resources.aggregator import CONFIG_KEY
from fedwarden.testing.controlplane import (
    CONTROLLERS,
    ETCD_VERSION,
    KUBERNETES_VERSION,
    ControlPlane,
    ControlPlaneError,
    free_port,
)
from fedwarden.testing.kubeapi import ApiError, KubeApi

#: the checkout it runs from (crds/, and the commit it reports)
REPO = Path(__file__).resolve().parents[3]
GROUP_PATH = "/apis/fedwarden.io/v1alpha1"
OPERATOR_USER = "fedwarden-operator"
MANAGED = f"app.kubernetes.io/managed-by={names.MANAGED_BY}"
# Without it a deleted PVC keeps its kubernetes.io/pvc-protection finalizer for ever (the
# StorageObjectInUseProtection admission plugin adds it; this controller removes it).
PVC_PROTECTION = "persistentvolumeclaim-protection-controller"

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""

# (API path prefix, resource) of every kind the operator makes for a training
OWNED_KINDS = (
    ("/api/v1", "secrets"),
    ("/api/v1", "configmaps"),
    ("/api/v1", "services"),
    ("/api/v1", "serviceaccounts"),
    ("/api/v1", "persistentvolumeclaims"),
    ("/apis/batch/v1", "jobs"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ("/apis/networking.k8s.io/v1", "networkpolicies"),
)


class BenchmarkError(RuntimeError):
    """The benchmark could not finish; the message says where and why."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes: RSS and CPU from /proc -------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_stats(pid: int) -> dict[str, float] | None:
    """RSS, peak RSS (bytes) and CPU seconds (user + system) of a live process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    after_comm = stat.rsplit(")", 1)[1].split()
    cpu = (int(after_comm[11]) + int(after_comm[12])) / CLOCK_TICKS  # utime, stime
    return {"rss": fields.get("VmRSS", 0), "hwm": fields.get("VmHWM", 0), "cpu": cpu}


class Sampler(threading.Thread):
    """Samples RSS and CPU of the named processes every ``interval`` seconds."""

    def __init__(self, pids: dict[str, int], t0: float, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.t0 = t0
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop_event = threading.Event()

    def sample(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(time.time() - self.t0, 2)}
        for name, pid in self.pids.items():
            stats = proc_stats(pid)
            if stats is not None:
                row[name] = stats
        return row

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(self.sample())
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def peak(self, name: str) -> int:
        values = [s[name]["hwm"] for s in self.samples if name in s]
        values += [s[name]["rss"] for s in self.samples if name in s]
        return max(values, default=0)


# --- metrics ------------------------------------------------------------------------------


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append((dict(sample.labels), float(sample.value)))
    return out


def operator_metrics(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        metrics = parse_prometheus(r.read().decode())

    def one(name: str) -> float:
        return sum(v for _, v in metrics.get(name, []))

    reconciles: dict[str, int] = {}
    for labels, value in metrics.get("fedwarden_operator_reconciliations_total", []):
        reconciles[f"{labels['kind']}/{labels['result']}"] = int(value)
    seconds = {
        labels["kind"]: value
        for labels, value in metrics.get("fedwarden_operator_reconcile_seconds_sum", [])
    }
    return {
        "api_requests": int(one("fedwarden_operator_api_requests")),
        "reconciliations": reconciles,
        "reconcile_seconds_sum": seconds,
        "process_cpu_seconds": one("process_cpu_seconds_total"),
        "process_rss_bytes": int(one("process_resident_memory_bytes")),
    }


def apiserver_requests_total(api: KubeApi) -> int:
    status, text = api.raw_get("/metrics")
    if status != 200:
        raise BenchmarkError(f"API server /metrics answered {status}")
    metrics = parse_prometheus(text)
    return int(sum(v for _, v in metrics.get("apiserver_request_total", [])))


# --- the operator's own identity -----------------------------------------------------------


def operator_kubeconfig(cp: ControlPlane, directory: Path) -> Path:
    """A kubeconfig with a client certificate for user ``fedwarden-operator`` (group
    system:masters), signed by the control plane's CA, so that the API server's audit log
    tells the operator's requests from everyone else's."""
    ca_file = Path(cp.ca_file)
    ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(
        ca_file.with_name("ca.key").read_bytes(), password=None
    )
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, OPERATOR_USER),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "bench",
                "cluster": {
                    "server": cp.server,
                    "certificate-authority-data": b64(ca_file.read_bytes()),
                },
            }
        ],
        "users": [
            {
                "name": OPERATOR_USER,
                "user": {
                    "client-certificate-data": b64(cert.public_bytes(serialization.Encoding.PEM)),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": OPERATOR_USER}}],
        "current-context": "bench",
    }
    path = directory / "operator.kubeconfig"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


class Operator:
    """``fedwarden operator`` as a separate process, its log in a file."""

    def __init__(self, kubeconfig: Path, resync_seconds: float, log_path: Path) -> None:
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.log_path = log_path
        executable = shutil.which("fedwarden", path=str(Path(sys.executable).parent)) or (
            shutil.which("fedwarden")
        )
        if executable is None:
            raise BenchmarkError("the `fedwarden` command is not installed (pip install -e .)")
        env = dict(
            os.environ,
            KUBECONFIG=str(kubeconfig),
            FEDWARDEN_RESYNC_SECONDS=str(resync_seconds),
        )
        self.argv = [
            executable,
            "operator",
            "--metrics-address",
            f"127.0.0.1:{self.metrics_port}",
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
        ]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchmarkError(
                f"the operator exited with {self.proc.returncode}; its log ends:\n{self.tail()}"
            )

    def wait_started(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                url = f"http://127.0.0.1:{self.liveness_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        operator_metrics(self.metrics_port)
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise BenchmarkError(f"the operator did not start within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def summarize_operator_log(path: Path) -> dict[str, Any]:
    """kopf's per-handler outcomes and the operator's warnings and errors, from its log."""
    succeeded: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    outcome = re.compile(r"(?:Handler|Timer) '([^']+)' (succeeded|failed.*)")
    for line in path.read_text(errors="replace").splitlines():
        m = outcome.search(line)
        if m:
            if m.group(2) == "succeeded":
                succeeded[m.group(1)] += 1
            else:
                failed[m.group(1)] += 1
                errors[f"{m.group(1)}: {m.group(2)}"[:300]] += 1
        for word in ("WARNING", "ERROR", "Traceback"):
            if word in line:
                levels[word] += 1
    return {
        "handlers_succeeded": dict(succeeded),
        "handlers_failed": dict(failed),
        "lines_with": dict(levels),
        "failures": dict(errors.most_common(10)),
    }


# --- the audit log -------------------------------------------------------------------------


def audit_events(directory: Path) -> list[dict[str, Any]]:
    """One record per request (audit ID) with its user, agent, verb, resource and time."""
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("audit*.log")):
        with path.open() as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                audit_id = e.get("auditID")
                if audit_id in seen:
                    continue
                ref = e.get("objectRef") or {}
                resource = ref.get("resource") or e.get("requestURI", "").split("?")[0]
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                received = e["requestReceivedTimestamp"].replace("Z", "+00:00")
                seen[audit_id] = {
                    "user": (e.get("user") or {}).get("username", ""),
                    "agent": (e.get("userAgent") or "").split("/")[0] or "-",
                    "verb": e.get("verb", ""),
                    "resource": resource,
                    "t": dt.datetime.fromisoformat(received).timestamp(),
                }
    return list(seen.values())


def audit_window(events: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Counts of the requests received in [start, end): all, by user, and the operator's by
    agent and by verb and resource."""
    inside = [e for e in events if start <= e["t"] < end]
    operator = [e for e in inside if e["user"] == OPERATOR_USER]
    by_user = Counter(e["user"] for e in inside)
    by_agent = Counter(e["agent"] for e in operator)
    by_call = Counter(f"{e['agent']} {e['verb']} {e['resource']}" for e in operator)
    return {
        "seconds": round(end - start, 1),
        "all_requests": len(inside),
        "operator_requests": len(operator),
        "by_user": dict(by_user.most_common(12)),
        "operator_by_agent": dict(by_agent),
        "operator_by_call": dict(by_call.most_common(30)),
    }


# --- the CRDs -----------------------------------------------------------------------------


def _filled_default(schema: dict[str, Any]) -> dict[str, Any]:
    """The object an empty ``default: {}`` becomes once its properties' defaults apply."""
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if prop.get("type") == "object" and prop.get("default") == {}:
            out[name] = _filled_default(prop)
        elif "default" in prop:
            out[name] = prop["default"]
    return out


def _fix_defaults(schema: dict[str, Any], path: str, changes: list[str]) -> None:
    for name, prop in (schema.get("properties") or {}).items():
        where = f"{path}.{name}"
        _fix_defaults(prop, where, changes)
        if prop.get("type") == "object" and prop.get("default") == {}:
            filled = _filled_default(prop)
            if set(prop.get("required") or []) - set(filled):
                del prop["default"]
                changes.append(f"{where}: removed default {{}} (it has required fields)")
            elif prop.get("x-kubernetes-validations") and filled:
                prop["default"] = filled
                changes.append(f"{where}: default {{}} -> {json.dumps(filled)}")
    items = schema.get("items")
    if isinstance(items, dict):
        _fix_defaults(items, path + "[]", changes)
        if (
            items.get("type") == "string"
            and items.get("x-kubernetes-validations")
            and "maxLength" not in items
        ):
            items["maxLength"] = 64  # a CIDR is at most 43 characters
            changes.append(f"{path}[]: maxLength 64 (the CEL rule's cost is over the budget)")


def install_crds(cp: ControlPlane) -> list[str]:
    """Applies crds/. If the API server refuses them, applies a copy whose ``default: {}``
    values are made valid, and returns what was changed (empty: the CRDs as checked in)."""
    applied = cp.kubectl(
        "apply", "--server-side", "--field-manager=bench", "-f", str(REPO / "crds"), check=False
    )
    changes: list[str] = []
    if applied.returncode != 0:
        log(f"the API server refuses crds/ as checked in; patching defaults:\n{applied.stderr}")
        import yaml

        docs = []
        for path in sorted((REPO / "crds").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                for version in doc["spec"]["versions"]:
                    schema = version["schema"]["openAPIV3Schema"]
                    _fix_defaults(schema, doc["spec"]["names"]["kind"], changes)
                docs.append(doc)
        cp.kubectl(
            "apply", "--server-side", "--field-manager=bench", "-f", "-",
            input=yaml.safe_dump_all(docs),
        )  # fmt: skip
        changes.insert(0, applied.stderr.strip())
    return changes


# --- the workload --------------------------------------------------------------------------


def namespace_name(i: int) -> str:
    return f"bench-{i:03d}"


TRAINING = "bench"


def client_name(j: int) -> str:
    return f"site-{j:02d}"


def training_manifest(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "fedwarden.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": TRAINING, "namespace": namespace},
        "spec": {
            "rounds": 3,
            "task": {"builtin": "digits-logreg"},
            "selection": {"minClients": 2, "minAvailable": 2},
            "certificates": {"duration": "24h"},
        },
    }


def client_manifest(namespace: str, j: int) -> dict[str, Any]:
    return {
        "apiVersion": "fedwarden.io/v1alpha1",
        "kind": "FLClient",
        "metadata": {"name": client_name(j), "namespace": namespace},
        "spec": {"trainingRef": {"name": TRAINING}, "region": "eu-west", "issueKey": True},
    }


def create_namespace_objects(api: KubeApi, namespace: str, clients: int) -> None:
    api.create(
        f"{GROUP_PATH}/namespaces/{namespace}/federatedtrainings", training_manifest(namespace)
    )
    for j in range(clients):
        api.create(f"{GROUP_PATH}/namespaces/{namespace}/flclients", client_manifest(namespace, j))


def condition(obj: dict[str, Any], kind: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status"))
    return None


def training_status_ready(ft: dict[str, Any], clients: int) -> bool:
    status = ft.get("status") or {}
    return (
        condition(ft, "CertificatesReady") == "True"
        and status.get("enrolledClients") == clients
        and status.get("observedGeneration") == ft["metadata"].get("generation")
    )


def client_ready(c: dict[str, Any]) -> bool:
    status = c.get("status") or {}
    return bool(
        status.get("phase") == "Enrolled"
        and status.get("certificateSerial")
        and status.get("certificateSecret")
    )


def namespace_missing(api: KubeApi, namespace: str, clients: int) -> list[str]:
    """What the namespace still lacks to count as Ready (empty: Ready)."""
    missing: list[str] = []
    flcs = api.get(f"{GROUP_PATH}/namespaces/{namespace}/flclients")["items"]
    not_ready = [c["metadata"]["name"] for c in flcs if not client_ready(c)]
    if len(flcs) != clients or not_ready:
        missing.append(f"FLClients not Enrolled: {not_ready[:3]} ({len(flcs)} exist)")
    agg = names.aggregator_name(TRAINING)
    expected: dict[str, set[str]] = {
        "secrets": {
            names.ca_secret_name(TRAINING),
            names.aggregator_tls_secret_name(TRAINING),
            *(names.client_tls_secret_name(client_name(j)) for j in range(clients)),
        },
        "configmaps": {agg, names.trust_configmap_name(TRAINING)},
        "services": {agg},
        "serviceaccounts": {agg},
        "persistentvolumeclaims": {names.checkpoint_claim_name(TRAINING)},
        "jobs": {agg},
        "roles": {agg},
        "rolebindings": {agg},
        "networkpolicies": {f"{TRAINING}-{s}" for s in ("default-deny", "aggregator", "clients")},
    }
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for prefix, resource in OWNED_KINDS:
        items = api.get(f"{prefix}/namespaces/{namespace}/{resource}")["items"]
        found[resource] = {o["metadata"]["name"]: o for o in items}
        absent = expected[resource] - set(found[resource])
        if absent:
            missing.append(f"{resource} {sorted(absent)[:3]}")
    role = found["roles"].get(agg)
    if role is not None:
        granted = set()
        for rule in role.get("rules") or []:
            if "flclients/status" in rule.get("resources", []):
                granted |= set(rule.get("resourceNames") or [])
        if len(granted) != clients:
            missing.append(f"the Role names {len(granted)} of {clients} clients")
    config = found["configmaps"].get(agg)
    if config is not None:
        population = json.loads((config.get("data") or {}).get(CONFIG_KEY, "{}")).get("population")
        if population != clients:
            missing.append(f"the aggregator's population is {population}, not {clients}")
    return missing


def percentile_time(times: list[float], total: int, fraction: float) -> float | None:
    """The time at which ``fraction`` of ``total`` were Ready (None if never)."""
    need = max(1, round(fraction * total))
    ordered = sorted(times)
    return round(ordered[need - 1], 1) if len(ordered) >= need else None


def list_all(api: KubeApi, path: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(path, **params)["items"]
    return items


def parallel(work: list[Any], fn: Any, workers: int = 8) -> None:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(fn, item) for item in work]:
            future.result()


# --- the benchmark -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    import kubernetes

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kopf": importlib.metadata.version("kopf"),
        "kubernetes_client": kubernetes.__version__,
        "kubernetes": KUBERNETES_VERSION,
        "etcd": ETCD_VERSION,
        "git_commit": commit,
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Runs the benchmark, filling ``result`` (partly, when it fails)."""
    n, m = args.trainings, args.clients
    result |= {
        "trainings": n,
        "clients_per_training": m,
        "resync_seconds": args.resync_seconds,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_at_start": loadavg(),
        "definition_of_ready": __doc__.split('"Ready" here', 1)[1].split("Usage::")[0].strip(),
    }
    work = Path(tempfile.mkdtemp(prefix="fedwarden-operator-scale-"))
    audit_dir = work / "audit"
    audit_dir.mkdir()
    (work / "audit-policy.yaml").write_text(AUDIT_POLICY)
    cp = ControlPlane(
        keep=args.keep,
        start_timeout=240.0,
        controllers=(*CONTROLLERS, PVC_PROTECTION),
        extra_apiserver_args=(
            f"--audit-policy-file={work / 'audit-policy.yaml'}",
            f"--audit-log-path={audit_dir / 'audit.log'}",
            "--audit-log-maxsize=4096",
            "--audit-log-maxbackup=0",
        ),
    )
    operator: Operator | None = None
    sampler: Sampler | None = None
    t_wall0 = time.time()
    marks: dict[str, float] = {}

    def mark(name: str) -> float:
        marks[name] = time.time()
        return marks[name]

    try:
        log("starting the control plane")
        cp.start()
        result["control_plane_startup_seconds"] = round(cp.startup_seconds, 1)
        api = cp.api(timeout=120)
        version = json.loads(cp.kubectl("version", "-o", "json").stdout)["serverVersion"]
        result["machine"]["kubernetes"] = version["gitVersion"]
        result["crd_workaround"] = install_crds(cp)
        for crd in ("federatedtrainings.fedwarden.io", "flclients.fedwarden.io"):
            cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        pids = {p.name: p.proc.pid for p in cp._procs}  # the control plane's own processes

        log(f"creating {n} namespaces")
        parallel(
            [namespace_name(i) for i in range(n)],
            lambda ns: api.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            ),
        )

        log("starting the operator")
        operator = Operator(
            operator_kubeconfig(cp, work), args.resync_seconds, work / "operator.log"
        )
        operator.wait_started()
        pids["operator"] = operator.pid
        sampler = Sampler(pids, t_wall0)
        sampler.start()
        time.sleep(3)  # kopf's first lists and watches
        before = operator_metrics(operator.metrics_port)
        requests_before = apiserver_requests_total(api)
        op_stats = {"start": proc_stats(operator.pid)}
        result["operator_rss_idle_bytes"] = op_stats["start"]["rss"] if op_stats["start"] else None

        # --- create everything at once ---------------------------------------------------
        log(f"creating {n} FederatedTrainings and {n * m} FLClients (8 threads)")
        t0 = mark("create")
        parallel(
            [namespace_name(i) for i in range(n)], lambda ns: create_namespace_objects(api, ns, m)
        )
        mark("created")
        result["creation_seconds"] = round(marks["created"] - t0, 1)
        log(f"created in {result['creation_seconds']} s; waiting for Ready")

        ready_at: dict[str, float] = {}
        last_missing: dict[str, list[str]] = {}
        deadline = t0 + args.ready_timeout
        last_report = 0.0
        while len(ready_at) < n:
            operator.check_alive()
            now = time.time()
            if now > deadline:
                pending = sorted({namespace_name(i) for i in range(n)} - set(ready_at))
                result["not_ready"] = {ns: last_missing.get(ns, ["status"]) for ns in pending[:10]}
                raise BenchmarkError(
                    f"timed out after {args.ready_timeout:.0f} s: {len(ready_at)} of {n} "
                    f"trainings Ready; e.g. {pending[0]}: {last_missing.get(pending[0])}"
                )
            trainings = list_all(api, f"{GROUP_PATH}/federatedtrainings")
            for ft in trainings:
                ns = ft["metadata"]["namespace"]
                if ns in ready_at:
                    continue
                if not training_status_ready(ft, m):
                    status = ft.get("status") or {}
                    last_missing[ns] = [
                        f"training: CertificatesReady={condition(ft, 'CertificatesReady')} "
                        f"enrolledClients={status.get('enrolledClients')}"
                    ]
                    continue
                missing = namespace_missing(api, ns, m)
                if missing:
                    last_missing[ns] = missing
                else:
                    ready_at[ns] = time.time() - t0
            if now - last_report > 10:
                last_report = now
                stats = proc_stats(operator.pid) or {"rss": 0, "cpu": 0}
                log(
                    f"{len(ready_at)}/{n} Ready after {now - t0:.0f} s; operator RSS "
                    f"{stats['rss'] / 2**20:.0f} MiB, CPU {stats['cpu']:.0f} s"
                )
            if len(ready_at) < n:
                time.sleep(args.poll_seconds)
        t_ready = mark("ready")
        times = list(ready_at.values())
        after_ready = operator_metrics(operator.metrics_port)
        op_stats["ready"] = proc_stats(operator.pid)
        requests_ready = apiserver_requests_total(api)
        result["time_to_ready_seconds"] = {
            "first": round(min(times), 1),
            "p50": percentile_time(times, n, 0.5),
            "p90": percentile_time(times, n, 0.9),
            "all": round(max(times), 1),
        }
        result["ready_times_seconds"] = sorted(round(t, 1) for t in times)
        log(f"all {n} Ready after {t_ready - t0:.1f} s")

        # --- a quiet minute: the resync timers only ------------------------------------
        log(f"settling {args.settle_seconds:.0f} s, then {args.steady_seconds:.0f} s steady")
        time.sleep(args.settle_seconds)
        t_s0 = mark("steady")
        steady_before = operator_metrics(operator.metrics_port)
        stats_s0 = {k: proc_stats(p) for k, p in pids.items()}
        requests_s0 = apiserver_requests_total(api)
        time.sleep(args.steady_seconds)
        operator.check_alive()
        t_s1 = mark("steady_end")
        steady_after = operator_metrics(operator.metrics_port)
        stats_s1 = {k: proc_stats(p) for k, p in pids.items()}
        requests_s1 = apiserver_requests_total(api)

        # --- delete every training, then every client -------------------------------
        log("deleting the trainings")
        t_d0 = mark("delete")
        parallel(
            [namespace_name(i) for i in range(n)],
            lambda ns: api.delete(f"{GROUP_PATH}/namespaces/{ns}/federatedtrainings/{TRAINING}"),
        )
        deletion: dict[str, Any] = {"request_seconds": round(time.time() - t_d0, 1)}
        deadline = t_d0 + args.delete_timeout
        left: dict[str, int] = {}
        while True:
            operator.check_alive()
            left = {"federatedtrainings": len(list_all(api, f"{GROUP_PATH}/federatedtrainings"))}
            if left["federatedtrainings"] == 0 and "trainings_gone" not in deletion:
                deletion["trainings_gone"] = round(time.time() - t_d0, 1)
            for prefix, resource in (*OWNED_KINDS, ("/api/v1", "pods")):
                left[resource] = len(list_all(api, f"{prefix}/{resource}", labelSelector=MANAGED))
            if sum(left.values()) == 0:
                deletion["objects_gone"] = round(time.time() - t_d0, 1)
                break
            if time.time() > deadline:
                deletion["timed_out_with"] = {k: v for k, v in left.items() if v}
                log(f"deletion not finished after {args.delete_timeout:.0f} s: {left}")
                break
            time.sleep(args.poll_seconds)
        mark("deleted_trainings")
        log(f"trainings deleted: {deletion}")
        after_delete = operator_metrics(operator.metrics_port)

        log("deleting the clients")
        t_c0 = mark("delete_clients")
        parallel(
            [(namespace_name(i), client_name(j)) for i in range(n) for j in range(m)],
            lambda nc: api.delete(f"{GROUP_PATH}/namespaces/{nc[0]}/flclients/{nc[1]}"),
        )
        while True:
            operator.check_alive()
            remaining = len(list_all(api, f"{GROUP_PATH}/flclients"))
            if remaining == 0:
                deletion["clients_gone"] = round(time.time() - t_c0, 1)
                break
            if time.time() > t_c0 + args.delete_timeout:
                deletion["clients_left"] = remaining
                break
            time.sleep(args.poll_seconds)
        mark("end")
        result["deletion_seconds"] = deletion
        final = operator_metrics(operator.metrics_port)
        op_stats["end"] = proc_stats(operator.pid)
        result["etcd_db_bytes"] = sum(
            p.stat().st_size for p in (cp.dir / "etcd").rglob("*") if p.is_file()
        )
        result["load_average_at_end"] = loadavg()

        # --- numbers --------------------------------------------------------------------
        operator.stop()
        sampler.stop()
        events = audit_events(audit_dir)
        result["api_requests"] = {
            "to_ready": {
                "operator_counter": after_ready["api_requests"] - before["api_requests"],
                "apiserver_request_total": requests_ready - requests_before,
                "audit": audit_window(events, t0, t_ready),
            },
            "steady": {
                "operator_counter": steady_after["api_requests"] - steady_before["api_requests"],
                "apiserver_request_total": requests_s1 - requests_s0,
                "audit": audit_window(events, t_s0, t_s1),
            },
            "delete_trainings": {
                "operator_counter": after_delete["api_requests"] - steady_after["api_requests"],
                "audit": audit_window(events, t_d0, marks["deleted_trainings"]),
            },
            "delete_clients": {"audit": audit_window(events, t_c0, marks["end"])},
            "whole_run_operator_counter": final["api_requests"],
        }
        to_ready = result["api_requests"]["to_ready"]
        to_ready["operator_audit_per_training"] = round(
            to_ready["audit"]["operator_requests"] / n, 1
        )
        to_ready["operator_counter_per_training"] = round(to_ready["operator_counter"] / n, 1)

        def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
            keys = set(a["reconciliations"]) | set(b["reconciliations"])
            return {
                "reconciliations": {
                    k: b["reconciliations"].get(k, 0) - a["reconciliations"].get(k, 0)
                    for k in sorted(keys)
                },
                "reconcile_seconds_sum": {
                    k: round(v - a["reconcile_seconds_sum"].get(k, 0.0), 2)
                    for k, v in b["reconcile_seconds_sum"].items()
                },
            }

        result["reconciliations"] = {
            "to_ready": diff(before, after_ready),
            "steady": diff(steady_before, steady_after),
        }
        steady_seconds = t_s1 - t_s0
        steady_audit = result["api_requests"]["steady"]["audit"]
        result["steady_state"] = {
            "seconds": round(steady_seconds, 1),
            "operator_requests_per_second_audit": round(
                steady_audit["operator_requests"] / steady_seconds, 1
            ),
            "operator_requests_per_second_counter": round(
                result["api_requests"]["steady"]["operator_counter"] / steady_seconds, 1
            ),
            "apiserver_requests_per_second": round((requests_s1 - requests_s0) / steady_seconds, 1),
            "reconciliations_per_second": round(
                sum(
                    v
                    for k, v in result["reconciliations"]["steady"]["reconciliations"].items()
                    if k.endswith("/ok")
                )
                / steady_seconds,
                1,
            ),
            "cpu_percent": {
                k: round(100 * (s1["cpu"] - s0["cpu"]) / steady_seconds, 1)
                for k in pids
                if (s0 := stats_s0[k]) and (s1 := stats_s1[k])
            },
        }

        def cpu_between(name: str, a: float, b: float) -> float | None:
            rows = [s for s in sampler.samples if name in s]
            start = [s for s in rows if s["t"] <= a - t_wall0]
            end = [s for s in rows if s["t"] >= b - t_wall0] or rows[-1:]
            if not start or not end:
                return None
            return round(float(end[0][name]["cpu"]) - float(start[-1][name]["cpu"]), 1)

        result["cpu_seconds_to_ready"] = {k: cpu_between(k, t0, t_ready) for k in pids}
        result["memory_bytes"] = {
            "operator_peak": sampler.peak("operator"),
            "operator_at_ready": (op_stats["ready"] or {}).get("rss"),
            "operator_final": (op_stats["end"] or {}).get("rss"),
            "apiserver_peak": sampler.peak("kube-apiserver"),
            "apiserver_final": (sampler.samples[-1].get("kube-apiserver") or {}).get("rss"),
            "etcd_peak": sampler.peak("etcd"),
            "controller_manager_peak": sampler.peak("kube-controller-manager"),
        }
        result["operator_log"] = summarize_operator_log(operator.log_path)
        result["phases_seconds"] = {k: round(v - t0, 1) for k, v in marks.items()}
        step = max(1, len(sampler.samples) // 600)
        result["samples"] = [
            {
                "t": round(s["t"] - (t0 - t_wall0), 1),
                **{
                    k: {"rss_mib": round(v["rss"] / 2**20, 1), "cpu_s": round(v["cpu"], 1)}
                    for k, v in s.items()
                    if k != "t"
                },
            }
            for s in sampler.samples[::step]
        ]
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        if operator is not None:
            result["operator_log_tail"] = operator.tail()
            with contextlib.suppress(OSError):
                result["operator_log"] = summarize_operator_log(operator.log_path)
        result["phases_seconds"] = {k: round(v - t_wall0, 1) for k, v in marks.items()}
        raise
    finally:
        if operator is not None:
            operator.stop()
            if args.operator_log:
                shutil.copy(operator.log_path, args.operator_log)
        if sampler is not None:
            sampler.stop()
        cp.stop()
        if args.keep:
            log(f"kept: {work} and {cp._tmp}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# --- output --------------------------------------------------------------------------------


def mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.0f} MiB"


def markdown(r: dict[str, Any]) -> str:
    n, m = r["trainings"], r["clients_per_training"]
    t = r["time_to_ready_seconds"]
    req = r["api_requests"]
    ready_audit = req["to_ready"]["audit"]
    agents = ", ".join(f"{k} {v}" for k, v in sorted(ready_audit["operator_by_agent"].items()))
    rec = r["reconciliations"]["to_ready"]
    rec_ok = {k.split("/")[0]: v for k, v in rec["reconciliations"].items() if k.endswith("/ok")}
    rec_err = sum(v for k, v in rec["reconciliations"].items() if k.endswith("/error"))
    mean = {k: rec["reconcile_seconds_sum"].get(k, 0) / v for k, v in rec_ok.items() if v}
    s = r["steady_state"]
    d = r["deletion_seconds"]
    mem = r["memory_bytes"]
    cpu = r["cpu_seconds_to_ready"]
    rows = [
        ("trainings × clients per training", f"{n} × {m} ({n * (m + 1)} custom resources)"),
        ("creating them (8 threads, admin user)", f"{r['creation_seconds']} s"),
        ("time to first Ready", f"{t['first']} s"),
        ("time to 50% / 90% / 100% Ready", f"{t['p50']} / {t['p90']} / {t['all']} s"),
        (
            "operator API requests to Ready: API server audit (by client)",
            f"{ready_audit['operator_requests']} ({agents})",
        ),
        (
            "operator API requests to Ready: its own counter",
            f"{req['to_ready']['operator_counter']}",
        ),
        (
            "… per training (audit / counter)",
            f"{req['to_ready']['operator_audit_per_training']} / "
            f"{req['to_ready']['operator_counter_per_training']}",
        ),
        (
            "all API server requests to Ready (apiserver_request_total)",
            f"{req['to_ready']['apiserver_request_total']}",
        ),
        (
            "reconciliations to Ready (ok; errors)",
            ", ".join(f"{k} {v}" for k, v in sorted(rec_ok.items())) + f"; {rec_err} errors",
        ),
        (
            "mean reconcile time",
            ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(mean.items())),
        ),
        (
            "CPU seconds to Ready: operator / API server / etcd / controller manager",
            f"{cpu.get('operator')} / {cpu.get('kube-apiserver')} / {cpu.get('etcd')} / "
            f"{cpu.get('kube-controller-manager')}",
        ),
        (
            "operator RSS: idle / peak / at Ready / final",
            f"{mib(r.get('operator_rss_idle_bytes'))} / {mib(mem['operator_peak'])} / "
            f"{mib(mem['operator_at_ready'])} / {mib(mem['operator_final'])}",
        ),
        (
            "API server RSS peak / final; etcd peak",
            f"{mib(mem['apiserver_peak'])} / {mib(mem['apiserver_final'])}; "
            f"{mib(mem['etcd_peak'])}",
        ),
        ("etcd data directory at the end", mib(r.get("etcd_db_bytes"))),
        (
            f"steady state ({s['seconds']:.0f} s, resync {r['resync_seconds']:.0f} s): "
            "operator requests/s (audit / counter)",
            f"{s['operator_requests_per_second_audit']} / "
            f"{s['operator_requests_per_second_counter']}",
        ),
        (
            "steady state: reconciliations/s; operator CPU; API server CPU",
            f"{s['reconciliations_per_second']}/s; {s['cpu_percent'].get('operator')} %; "
            f"{s['cpu_percent'].get('kube-apiserver')} %",
        ),
        (
            "delete all trainings: trainings gone (finalizers) / owned objects gone (GC)",
            f"{d.get('trainings_gone', '–')} / {d.get('objects_gone', '–')} s"
            + (f" (left: {d['timed_out_with']})" if d.get("timed_out_with") else ""),
        ),
        ("then delete all FLClients: gone after", f"{d.get('clients_gone', '–')} s"),
        (
            "load average at start / end (1, 5, 15 min)",
            f"{r['load_average_at_start']} / {r.get('load_average_at_end')}",
        ),
    ]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark the fedwarden operator handling N trainings with M clients each "
        "on the test control plane (time to Ready, API requests, memory, CPU).",
        epilog="Needs the control plane binaries (bash hack/control-plane.sh).",
    )
    parser.add_argument(
        "--trainings", type=int, default=100, help="N namespaces, one training each"
    )
    parser.add_argument("--clients", type=int, default=20, help="M FLClients per training")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--resync-seconds", type=float, default=60.0, help="FEDWARDEN_RESYNC_SECONDS [60]"
    )
    parser.add_argument("--steady-seconds", type=float, default=60.0, help="quiet window [60]")
    parser.add_argument(
        "--settle-seconds", type=float, default=10.0, help="wait after Ready before it [10]"
    )
    parser.add_argument("--ready-timeout", type=float, default=1800.0, help="[1800 s]")
    parser.add_argument("--delete-timeout", type=float, default=600.0, help="[600 s]")
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="[2 s]")
    parser.add_argument("--operator-log", type=Path, help="copy the operator's log here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the control plane's and the audit directory"
    )
    args = parser.parse_args()
    if args.trainings < 1 or args.clients < 1:
        parser.error("--trainings and --clients must be at least 1")
    result: dict[str, Any] = {}
    code = 0
    try:
        run(args, result)
    except (BenchmarkError, ControlPlaneError, ApiError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"error: {exc}\n{detail}".rstrip(), file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    if args.output and result:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    if code == 0:
        print(markdown(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
