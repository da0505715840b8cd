"""A test-only kubelet and scheduler: runs Pods of a test control plane as local processes.

:class:`PodRunner` registers one Node (``Ready``, with this machine's CPU and memory as
capacity), binds every unscheduled Pod to it, and runs each container's ``command`` + ``args``
as a process on this machine. It exists so that tests can drive the operator through the real
API server and controller manager (Jobs, garbage collection, ...) and see its workloads run.

What it does
------------
* Scheduling: a Pod with no ``spec.nodeName`` (and the default scheduler) is bound to the
  runner's Node through ``pods/binding``. Taints, affinity, resources and quotas are ignored.
* Images: only images the runner accepts run (default: the name contains ``fedwarden``). A Pod
  with any other image is set to ``Failed`` with reason ``UnsupportedImage``. A container with
  no ``command`` gets the image's entry point from ``entrypoint(image)`` (default
  ``["fedwarden"]``, as in ``images/*/Dockerfile``); ``args`` follow. ``fedwarden`` and
  ``python`` resolve to this interpreter's environment (its ``bin/`` comes first in ``PATH``).
* Environment: ``env`` (``value`` with ``$(VAR)`` expansion, ``valueFrom`` ``secretKeyRef``,
  ``configMapKeyRef``, ``fieldRef`` for ``metadata.name|namespace|uid|labels['k']|
  annotations['k']``, ``spec.nodeName``, ``spec.serviceAccountName``, ``status.podIP``,
  ``status.hostIP``, ``resourceFieldRef`` from the container's own limits/requests), and
  ``envFrom`` (Secrets and ConfigMaps, with ``prefix``). ``$(VAR)`` is expanded in ``command``
  and ``args`` too. The runner adds ``PATH``, ``HOME`` (a directory of the pod), ``HOSTNAME``
  (the pod name), ``KUBERNETES_SERVICE_HOST=127.0.0.1`` and ``KUBERNETES_SERVICE_PORT`` (the
  test API server), and passes through ``PYTHONPATH``, ``LANG``, ``LC_ALL``, ``TMPDIR`` and
  ``COVERAGE_PROCESS_START`` from its own environment; nothing else of the runner's environment
  leaks in.
* Volumes, materialised as directories under the pod's directory: ``secret`` and ``configMap``
  (``items``, ``defaultMode``, ``optional``; refreshed every ``refresh_interval`` seconds while
  the pod runs, file by file with an atomic rename, like the kubelet's periodic sync),
  ``emptyDir``, ``downwardAPI``, ``projected`` (``serviceAccountToken`` through the TokenRequest
  API, bound to the Pod; ``secret``, ``configMap``, ``downwardAPI``; so the automatic
  ``kube-api-access-*`` volume gives in-cluster credentials that work against the test API
  server), ``persistentVolumeClaim`` (a directory per namespace and claim name that outlives the
  Pod for the runner's lifetime: a replacement Pod sees the previous one's checkpoints; the PVC
  object itself is not looked at) and ``hostPath`` (the host path itself).
* Mount paths: processes cannot mount, so **every occurrence of a ``volumeMount``'s
  ``mountPath`` (``subPath`` honoured) in ``command``, ``args``, ``workingDir`` and env values
  is replaced by the local directory**: ``--tls-dir=/var/run/fedwarden/tls`` becomes
  ``--tls-dir=/tmp/.../volumes/tls``. A path the program computes itself (a default it does not
  read from an argument or the environment) is not rewritten; for those, the process gets
  ``FEDWARDEN_PATH_MAP``, a JSON object ``{mountPath: localDirectory}``. So: pass every path
  to a workload through an argument or an env var.
* Status: ``Pending`` (``ContainerCreating``, or ``CreateContainerConfigError`` while a
  referenced Secret/ConfigMap is missing; retried) → ``Running`` → ``Succeeded`` / ``Failed``,
  with ``containerStatuses`` (state, exit code, ``restartCount``), ``initContainerStatuses``,
  conditions, ``podIP``/``hostIP`` ``127.0.0.1`` and ``startTime``. A container is ``ready`` as
  soon as its process runs (no probes). Exit by signal N reports exit code 128 + N.
* ``restartPolicy``: ``Never``, ``OnFailure`` and ``Always``, with a short back-off (0.5 s
  doubling to 10 s; a kubelet waits 10 s to 5 min). Init containers run one after the other
  before the app containers.
* Deletion: when a Pod gets a ``deletionTimestamp``, its processes get SIGTERM (the whole
  process group), then SIGKILL after the grace period, then the runner deletes the Pod for good
  (``gracePeriodSeconds=0``, precondition on the uid), as the kubelet does.
* Output: each container's stdout and stderr go to a file; ``runner.logs(ns, pod)`` reads it
  (``kubectl logs`` does not work: there is no kubelet API).

Networking: the service-address contract
----------------------------------------
Test traffic stays on 127.0.0.1; nothing connects to a ClusterIP or a pod IP.

* For every (namespace, Service name, Service port number) the runner allocates a free
  127.0.0.1 port, stable for the runner's lifetime. ``runner.service_address(ns, name, port)``
  returns ``("127.0.0.1", allocated)`` (``port`` may be omitted when the Service has one
  port), so a test can reach a Service from outside the cluster.
* **Clients.** In every Pod's ``args``, ``command`` and env values, ``host:port`` where host is
  ``<svc>.<ns>.svc.cluster.local`` or ``<svc>.<ns>.svc`` (any namespace, Service or not yet),
  or ``<svc>.<own-ns>`` or ``<svc>`` (Services of the Pod's own namespace that exist when the
  Pod starts) is
  rewritten to ``127.0.0.1:<allocated>``; ``https://`` prefixes and paths are kept. A DNS name
  without ``:port`` is left alone, so a TLS client can still be told the Service's DNS name for
  SNI and certificate verification (e.g. ``--server-name aggregator.ns.svc``: give the name and
  the address as two separate arguments). ``kubernetes.default.svc[.cluster.local]:443`` maps
  to the test API server.
* **Servers.** A Pod whose labels match a Service's selector (in its namespace, Service created
  before the Pod starts; a Pod with ``ports`` that no Service selects yet waits up to
  ``service_wait`` seconds, default 3, for one) gets
  ``FEDWARDEN_BIND_ADDRESS=127.0.0.1:<allocated>`` for the Service's first port and
  ``FEDWARDEN_BIND_ADDRESS_<PORT_NAME>`` for each named port (name upper-cased, ``-`` → ``_``).
  It must listen there instead of on its ``containerPort``; also, in its args and env values
  ``0.0.0.0:<targetPort>``, ``[::]:<targetPort>`` and a bare ``:<targetPort>`` are rewritten to
  ``127.0.0.1:<allocated>`` (so ``--listen 0.0.0.0:8443`` in a manifest just works), and so
  are ``0.0.0.0:<targetPort>`` and ``[::]:<targetPort>`` as the host of a URL
  (``--liveness=http://0.0.0.0:8080/healthz`` becomes ``http://127.0.0.1:<allocated>/healthz``;
  a URL with another host, such as ``http://localhost:8080``, is left alone). One
  backing Pod per Service: a second one gets the same address and cannot bind while the first
  runs (a replacement Pod can bind once its predecessor's process is gone).
* Endpoints/EndpointSlices are whatever the controller manager makes of ``podIP 127.0.0.1``;
  nothing here reads them.

What a real kubelet does that this does not
-------------------------------------------
No containers, images, image pulls, container runtime or CRI; no Linux namespaces, cgroups,
resource requests/limits, OOM kills, eviction or QoS; no seccomp, AppArmor, SELinux,
capabilities, ``runAsUser`` or any other securityContext enforcement (processes run as the
runner's user and see the whole file system); no real mounts (paths are rewritten instead, see
above; ``readOnly`` is not enforced); no pod networking, Services, kube-proxy, DNS or
NetworkPolicy enforcement (processes share the host's loopback); no liveness/readiness/startup
probes, lifecycle hooks (postStart/preStop), ephemeral containers, sidecar (restartable init)
containers, ``kubectl logs/exec/port-forward/attach`` (no kubelet API), node heartbeats/Leases,
static pods, device plugins, CSI, volume attach, PVC binding checks, image garbage collection or
pod-level ``terminationMessagePath``. It is for tests on one machine, never for real workloads.

What only the node tier covers
------------------------------
``tests/e2e`` runs on a real one-node cluster (``hack/node.sh``: kubelet, containerd, CNI
bridge, kube-proxy, CoreDNS, kube-network-policies) and is the only place these are tested:
the three images themselves (entry points, user 65532, read-only root) under the restricted
Pod Security Standard; Secrets and ConfigMaps really mounted; clients dialling the aggregator's
Service DNS name through CoreDNS and kube-proxy; the readiness probes that gate the Service's
endpoints; NetworkPolicies enforced (who may reach the aggregator, where the aggregator may
connect); scheduling by node affinity (data residency: a Pending, unschedulable aggregator); a
force-deleted aggregator resuming from a checkpoint on a PersistentVolume; a kubelet restart;
the operator as a pod from its image, installed by the chart, and ``helm test``. Keep this
runner for fast tests of the operator's logic; put anything about images, the pod network or
security enforcement in the node tier.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fedwarden.testing._procs import popen
from fedwarden.testing.kubeapi import JSON, ApiError, KubeApi

if TYPE_CHECKING:
    from fedwarden.testing.controlplane import ControlPlane

PASSTHROUGH_ENV = ("PYTHONPATH", "LANG", "LC_ALL", "TMPDIR", "COVERAGE_PROCESS_START")
DEFAULT_NODE = "fedwarden-test-node"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class _ConfigError(Exception):
    """A referenced Secret/ConfigMap/key is missing: the kubelet's CreateContainerConfigError."""


class _Unsupported(Exception):
    """Something the runner cannot run (image, volume type): the Pod fails."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: unknown references stay, ``$$`` escapes ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(sub, value)


def rewrite_paths(value: str, mounts: dict[str, str]) -> str:
    """Replaces each mount path (as a whole path component prefix) by its local directory."""
    if not mounts:
        return value
    alternatives = "|".join(re.escape(p.rstrip("/")) for p in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(r"(?<![\w./-])(" + alternatives + r")(?=$|[/\s:;,'\"=)\]}])")
    by_path = {p.rstrip("/"): d for p, d in mounts.items()}
    return pattern.sub(lambda m: by_path[m.group(1)], value)


_WILDCARD = r"(?:0\.0\.0\.0|\[::\])"


def rewrite_listen_addresses(value: str, listen: Mapping[int, str]) -> str:
    """Replaces a server's listen address on one of ``listen``'s ports by its allocated address.

    ``listen`` maps a target port to ``127.0.0.1:<allocated>``. Rewritten: ``0.0.0.0:<port>``,
    ``[::]:<port>`` and a bare ``:<port>`` where an argument or a value starts (at the start,
    or after whitespace, ``=``, ``,``, ``;`` or a quote), and ``0.0.0.0:<port>`` or
    ``[::]:<port>`` as the host of a URL (``http://0.0.0.0:8080/healthz``). Any other host, or
    another port, is left alone.
    """
    if not listen:
        return value
    ports = "|".join(str(p) for p in sorted(listen, reverse=True))
    pattern = re.compile(
        r"(?:(?:^|(?<=[\s=,;'\"]))" + _WILDCARD + r"?|(?<=://)" + _WILDCARD + r"):"
        r"(" + ports + r")(?!\d)"
    )
    return pattern.sub(lambda m: listen[int(m.group(1))], value)


@dataclass
class _Container:
    name: str
    spec: JSON
    init: bool
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None
    restart_count: int = 0
    started_at: str | None = None
    terminated: JSON | None = None  # the last termination (state or lastState)
    next_start: float = 0.0
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    last_terminated: JSON | None = None


@dataclass
class _PodWorker:
    runner: PodRunner
    pod: JSON
    directory: Path
    containers: list[_Container] = field(default_factory=list)
    phase: str = "Pending"
    start_time: str = field(default_factory=_now)
    stop_event: threading.Event = field(default_factory=threading.Event)
    grace: float = 30.0
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    message: str = ""
    reason: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    path_map: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    refreshers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def api(self) -> KubeApi:
        return self.runner.api

    # --- lifecycle ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # the runner must go on with other pods
            self.runner._log(f"pod {self.ns}/{self.name}: {type(e).__name__}: {e}")
            self._kill_all(0)
        finally:
            for c in self.containers:
                if c.log is not None:
                    c.log.close()
            self.done.set()

    def _run(self) -> None:
        spec = self.pod["spec"]
        self.containers = [_Container(c["name"], c, True) for c in spec.get("initContainers", [])]
        self.containers += [_Container(c["name"], c, False) for c in spec.get("containers", [])]
        self._report()
        for c in self.containers:
            image = c.spec.get("image", "")
            if not self.runner.accepts(image):
                self._fail_unsupported(
                    f"container {c.name!r}: image {image!r} is not one the test pod runner runs "
                    f"(it runs images accepted by its filter: {self.runner.image_filter_text})"
                )
                return
        while not self.stop_event.is_set():
            try:
                self._prepare_volumes()
                break
            except _ConfigError as e:
                for c in self.containers:
                    c.waiting = ("CreateContainerConfigError", str(e))
                self._report()
                self.stop_event.wait(0.5)
            except _Unsupported as e:
                self._fail_unsupported(str(e))
                return
        policy = spec.get("restartPolicy", "Always")
        inits = [c for c in self.containers if c.init]
        apps = [c for c in self.containers if not c.init]
        for c in inits:
            while not self.stop_event.is_set():
                code = self._run_to_end(c)
                if code == 0:
                    break
                if code is None:
                    return
                if policy == "Never":
                    self.phase = "Failed"
                    self._report()
                    return
                self._backoff(c)
                self.stop_event.wait(max(c.next_start - time.monotonic(), 0))
        if self.stop_event.is_set():
            return
        last = ""
        while not self.stop_event.is_set():
            for c in apps:
                if c.proc is not None and c.proc.poll() is not None:
                    self._finish(c)
                    if self._restarts(c, policy):
                        self._backoff(c)
                elif c.proc is None and c.terminated is None and time.monotonic() >= c.next_start:
                    self._start(c)
                    if c.proc is None and self._restarts(c, policy):  # could not start
                        self._backoff(c)
            if all(
                c.proc is None and c.terminated is not None and not self._restarts(c, policy)
                for c in apps
            ):
                codes = [c.terminated["exitCode"] for c in apps if c.terminated]
                self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                self._report()
                return
            if any(c.proc is not None for c in apps):
                self.phase = "Running"
            state = json.dumps(self._status(), sort_keys=True)
            if state != last:
                self._report()
                last = state
            for refresh in self.refreshers:
                refresh()
            self.stop_event.wait(0.1)

    def _restarts(self, c: _Container, policy: str) -> bool:
        code = c.terminated["exitCode"] if c.terminated else 0
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    def _backoff(self, c: _Container) -> None:
        delay = min(0.5 * 2 ** max(c.restart_count, 0), 10.0)
        c.restart_count += 1
        c.next_start = time.monotonic() + delay
        c.waiting = ("CrashLoopBackOff" if c.restart_count > 1 else "", "")
        c.last_terminated = c.terminated
        c.terminated = None

    def _run_to_end(self, c: _Container) -> int | None:
        self._start(c)
        self._report()
        assert c.proc is not None
        while c.proc.poll() is None:
            if self.stop_event.wait(0.1):
                return None
        self._finish(c)
        self._report()
        return int(c.terminated["exitCode"]) if c.terminated else None

    def _start(self, c: _Container) -> None:
        argv, env, cwd = self._command(c)
        log_path = self.directory / "logs" / f"{c.name}.log"
        if c.log is None:
            c.log = log_path.open("ab")
        c.log.write(f"--- {_now()} start {argv!r}\n".encode())
        c.log.flush()
        try:
            if not argv or not os.access(argv[0], os.X_OK) or os.path.isdir(argv[0]):
                raise FileNotFoundError("not found, or not an executable file")
            c.proc = popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=c.log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            c.proc = None
            c.terminated = {
                "exitCode": 128,
                "reason": "StartError",
                "message": f"{argv[0] if argv else '(empty command)'}: {e}",
                "startedAt": _now(),
                "finishedAt": _now(),
            }
            return
        c.started_at = _now()
        c.waiting = None

    def _finish(self, c: _Container) -> None:
        assert c.proc is not None
        rc = c.proc.returncode
        code = 128 - rc if rc < 0 else rc
        c.terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at or _now(),
            "finishedAt": _now(),
            "containerID": f"fedwarden-podrunner://{c.proc.pid}",
        }
        if rc < 0:
            c.terminated["signal"] = -rc
        c.proc = None

    def terminate(self, grace: float) -> None:
        """Called on deletion: stop the loop, SIGTERM, wait ``grace``, SIGKILL."""
        self.grace = grace
        self.stop_event.set()

    def _kill_all(self, grace: float) -> None:
        # the worker thread may finish a container (and clear its proc) while this runs:
        # work on the Popen objects taken once
        running = [
            (c, c.proc) for c in self.containers if c.proc is not None and c.proc.poll() is None
        ]
        for _, proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0))
        for c, proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if c.proc is proc:
                self._finish(c)

    def _fail_unsupported(self, message: str) -> None:
        self.phase = "Failed"
        self.reason = "UnsupportedImage" if "image" in message else "UnsupportedPod"
        self.message = message
        for c in self.containers:
            c.waiting = None
            c.terminated = {
                "exitCode": 128,
                "reason": self.reason,
                "message": message,
                "startedAt": _now(),
                "finishedAt": _now(),
            }
        self._report()

    # --- status ------------------------------------------------------------------------

    def _container_status(self, c: _Container) -> JSON:
        running = c.proc is not None and c.proc.poll() is None
        state: JSON
        if running:
            state = {"running": {"startedAt": c.started_at}}
        elif c.terminated is not None:
            state = {"terminated": c.terminated}
        else:
            reason, message = c.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason or "ContainerCreating", "message": message}}
            if not message:
                del state["waiting"]["message"]
        status: JSON = {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": "",
            "ready": running,
            "started": running,
            "restartCount": c.restart_count,
            "state": state,
        }
        if c.last_terminated:
            status["lastState"] = {"terminated": c.last_terminated}
        if c.proc is not None:
            status["containerID"] = f"fedwarden-podrunner://{c.proc.pid}"
        return status

    def _status(self) -> JSON:
        apps = [c for c in self.containers if not c.init]
        inits = [c for c in self.containers if c.init]
        initialized = all(c.terminated and c.terminated.get("exitCode") == 0 for c in inits)
        ready = self.phase == "Running" and all(
            c.proc is not None and c.proc.poll() is None for c in apps
        )
        now = _now()

        def cond(kind: str, ok: bool, reason: str = "") -> JSON:
            d: JSON = {
                "type": kind,
                "status": "True" if ok else "False",
                "lastTransitionTime": now,
                "lastProbeTime": None,
            }
            if reason and not ok:
                d["reason"] = reason
            return d

        done_reason = (
            "PodCompleted" if self.phase in ("Succeeded", "Failed") else "ContainersNotReady"
        )
        status: JSON = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": [
                cond("PodScheduled", True),
                cond("Initialized", initialized or not inits, "ContainersNotInitialized"),
                cond("ContainersReady", ready, done_reason),
                cond("Ready", ready, done_reason),
            ],
            "containerStatuses": [self._container_status(c) for c in apps],
        }
        if inits:
            status["initContainerStatuses"] = [self._container_status(c) for c in inits]
        if self.reason:
            status["reason"] = self.reason
            status["message"] = self.message
        return status

    def _report(self) -> None:
        status = self._status()
        # lastTransitionTime must not move on every report: keep the stored one when unchanged
        with self.lock:
            previous = {c["type"]: c for c in self.pod.get("status", {}).get("conditions", [])}
            for c in status["conditions"]:
                old = previous.get(c["type"])
                if old and old.get("status") == c["status"]:
                    c["lastTransitionTime"] = old.get("lastTransitionTime", c["lastTransitionTime"])
            try:
                updated = self.api.patch(
                    f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", {"status": status}
                )
                self.pod["status"] = updated.get("status", {})
            except ApiError as e:
                if e.status not in (404, 409, 422):
                    raise
                if e.status == 422:
                    self.runner._log(f"pod {self.ns}/{self.name}: status refused: {e.message}")

    # --- configuration: env, command, volumes --------------------------------------------

    def _get(self, kind: str, name: str, optional: bool) -> JSON | None:
        path = f"/api/v1/namespaces/{self.ns}/{kind}/{name}"
        obj: JSON | None = self.api.get_or_none(path)
        if obj is None and not optional:
            raise _ConfigError(f"{kind[:-1]} {self.ns}/{name} not found")
        return obj

    @staticmethod
    def _data(obj: JSON, secret: bool) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        if secret:
            for k, v in (obj.get("data") or {}).items():
                out[k] = base64.b64decode(v)
            for k, v in (obj.get("stringData") or {}).items():
                out[k] = v.encode()
        else:
            for k, v in (obj.get("data") or {}).items():
                out[k] = v.encode()
            for k, v in (obj.get("binaryData") or {}).items():
                out[k] = base64.b64decode(v)
        return out

    def _key(self, ref: JSON, kind: str) -> str | None:
        optional = bool(ref.get("optional", False))
        obj = self._get(kind, ref["name"], optional)
        if obj is None:
            return None
        data = self._data(obj, kind == "secrets")
        if ref["key"] not in data:
            if optional:
                return None
            raise _ConfigError(f"key {ref['key']!r} not in {kind[:-1]} {self.ns}/{ref['name']}")
        return data[ref["key"]].decode(errors="replace")

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta.get("uid", ""),
            "spec.nodeName": self.runner.node_name,
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path])
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            items = (meta.get(path.split(".")[1]) or {}).items()
            return "\n".join(f'{k}="{v}"' for k, v in sorted(items))
        raise _Unsupported(f"fieldRef {path!r} is not supported by the test pod runner")

    def _resource(self, c: JSON, ref: JSON) -> str:
        kind, _, name = ref["resource"].partition(".")
        resources = c.get("resources", {})
        value = (resources.get(kind) or {}).get(name)
        if value is None and kind == "limits":
            value = str(os.cpu_count() or 1) if name == "cpu" else "0"
        return str(value or "0")

    def _env(self, c: JSON) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in c.get("envFrom", []):
            prefix = src.get("prefix", "")
            for kind, key in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if kind in src:
                    ref = src[kind]
                    obj = self._get(key, ref["name"], bool(ref.get("optional", False)))
                    if obj is not None:
                        for k, v in self._data(obj, key == "secrets").items():
                            env[prefix + k] = v.decode(errors="replace")
        for item in c.get("env", []):
            name = item["name"]
            if "valueFrom" in item:
                vf = item["valueFrom"]
                value: str | None
                if "secretKeyRef" in vf:
                    value = self._key(vf["secretKeyRef"], "secrets")
                elif "configMapKeyRef" in vf:
                    value = self._key(vf["configMapKeyRef"], "configmaps")
                elif "fieldRef" in vf:
                    value = self._field(vf["fieldRef"]["fieldPath"])
                elif "resourceFieldRef" in vf:
                    value = self._resource(c, vf["resourceFieldRef"])
                else:
                    raise _Unsupported(f"env {name}: valueFrom {sorted(vf)} is not supported")
                if value is not None:
                    env[name] = value
            else:
                env[name] = expand(item.get("value", ""), env)
        return env

    def _command(self, c: _Container) -> tuple[list[str], dict[str, str], str]:
        spec = c.spec
        runner = self.runner
        env = self._env(spec)
        command = list(spec.get("command") or runner.entrypoint(spec.get("image", "")))
        argv = [expand(a, env) for a in command + list(spec.get("args") or [])]
        mounts: dict[str, str] = {}
        for m in spec.get("volumeMounts", []):
            local = Path(self.volumes[m["name"]])
            if m.get("subPath"):
                local = local / m["subPath"]
                if not local.exists():
                    local.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = str(local)
        self.path_map.update(mounts)
        services = runner._services(self.ns)
        binds = runner._binds(self.pod, services)
        # A Pod that declares ports may start before the Service that selects it is created
        # (a controller applies a Job and its Service in some order): wait a little for it.
        deadline = time.monotonic() + runner.service_wait
        while not binds and spec.get("ports") and time.monotonic() < deadline:
            if self.stop_event.wait(0.2):
                break
            services = runner._services(self.ns)
            binds = runner._binds(self.pod, services)
        rewrite = runner._address_rewriter(self.ns, services, binds, spec)

        def fix(value: str) -> str:
            return rewrite(rewrite_paths(value, mounts))

        argv = [fix(a) for a in argv]
        env = {k: fix(v) for k, v in env.items()}
        home = self.directory / "home"
        home.mkdir(exist_ok=True)
        base: dict[str, str] = {
            "PATH": os.pathsep.join([runner.bin_dir, os.environ.get("PATH", os.defpath)]),
            "HOME": str(home),
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(runner.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(runner.api_port),
            "FEDWARDEN_PATH_MAP": json.dumps(mounts, sort_keys=True),
        }
        for k in PASSTHROUGH_ENV:
            if k in os.environ:
                base[k] = os.environ[k]
        base.update(runner.extra_env)
        base.update(binds)
        base.update(env)
        cwd = fix(spec["workingDir"]) if spec.get("workingDir") else str(home)
        if argv and "/" not in argv[0]:
            resolved = shutil.which(argv[0], path=base["PATH"])
            if resolved:
                argv[0] = resolved
        return argv, base, cwd

    def _prepare_volumes(self) -> None:
        self.volumes = {}
        self.refreshers = []
        vol_root = self.directory / "volumes"
        vol_root.mkdir(exist_ok=True)
        for v in self.pod["spec"].get("volumes", []):
            name = v["name"]
            local = vol_root / name
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                d = self.runner.pvc_dir(self.ns, claim)
                d.mkdir(parents=True, exist_ok=True)
                self.volumes[name] = str(d)
                continue
            if "hostPath" in v:
                self.volumes[name] = v["hostPath"]["path"]
                continue
            local.mkdir(exist_ok=True)
            self.volumes[name] = str(local)
            if "emptyDir" in v:
                continue
            if not any(k in v for k in ("secret", "configMap", "downwardAPI", "projected")):
                kinds = sorted(k for k in v if k != "name")
                raise _Unsupported(f"volume {name!r}: type {kinds} is not supported")

            def fill(v: JSON = v, local: Path = local, first: bool = True) -> None:
                files = self._volume_files(v, first)
                if files is None:
                    return
                mode = self._mode(v)
                for rel, data in files.items():
                    target = local / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.exists() and target.read_bytes() == data:
                        continue
                    tmp = target.with_name(f".{target.name}.tmp")
                    tmp.write_bytes(data)
                    tmp.chmod(mode)
                    os.replace(tmp, target)

            fill()
            self.refreshers.append(self._throttled(functools.partial(fill, first=False)))

    def _throttled(self, fn: Callable[[], None]) -> Callable[[], None]:
        last = [time.monotonic()]

        def call() -> None:
            if time.monotonic() - last[0] >= self.runner.refresh_interval:
                last[0] = time.monotonic()
                # the kubelet keeps the last content when a source goes away
                with contextlib.suppress(_ConfigError, ApiError, OSError):
                    fn()

        return call

    @staticmethod
    def _mode(v: JSON) -> int:
        for k in ("secret", "configMap", "downwardAPI", "projected"):
            if k in v and "defaultMode" in v[k]:
                return int(v[k]["defaultMode"])
        return 0o644

    def _volume_files(self, v: JSON, first: bool) -> dict[str, bytes] | None:
        if "secret" in v:
            s = v["secret"]
            return self._source_files("secrets", s["secretName"], s)
        if "configMap" in v:
            s = v["configMap"]
            return self._source_files("configmaps", s["name"], s)
        if "downwardAPI" in v:
            return self._downward(v["downwardAPI"].get("items", []))
        if "projected" in v:
            files: dict[str, bytes] = {}
            for src in v["projected"].get("sources", []):
                if "secret" in src:
                    s = src["secret"]
                    files.update(self._source_files("secrets", s["name"], s))
                elif "configMap" in src:
                    s = src["configMap"]
                    files.update(self._source_files("configmaps", s["name"], s))
                elif "downwardAPI" in src:
                    files.update(self._downward(src["downwardAPI"].get("items", [])))
                elif "serviceAccountToken" in src:
                    if first:  # a token lasts its expirationSeconds; not refreshed
                        files[src["serviceAccountToken"]["path"]] = self._token(
                            src["serviceAccountToken"]
                        )
                else:
                    raise _Unsupported(f"projected source {sorted(src)} is not supported")
            return files
        return None

    def _source_files(self, kind: str, name: str, spec: JSON) -> dict[str, bytes]:
        obj = self._get(kind, name, bool(spec.get("optional", False)))
        if obj is None:
            return {}
        data = self._data(obj, kind == "secrets")
        items = spec.get("items")
        if not items:
            return data
        out: dict[str, bytes] = {}
        for item in items:
            if item["key"] not in data:
                if spec.get("optional"):
                    continue
                raise _ConfigError(f"key {item['key']!r} not in {kind[:-1]} {self.ns}/{name}")
            out[item["path"]] = data[item["key"]]
        return out

    def _downward(self, items: list[JSON]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for item in items:
            if "fieldRef" in item:
                out[item["path"]] = self._field(item["fieldRef"]["fieldPath"]).encode()
            else:
                raise _Unsupported(f"downwardAPI item {sorted(item)} is not supported")
        return out

    def _token(self, spec: JSON) -> bytes:
        sa = self.pod["spec"].get("serviceAccountName", "default")
        body: JSON = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": int(spec.get("expirationSeconds", 3607)),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": self.uid,
                },
            },
        }
        if spec.get("audience"):
            body["spec"]["audiences"] = [spec["audience"]]
        try:
            result = self.api.create(
                f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body
            )
        except ApiError as e:
            raise _ConfigError(f"token for service account {self.ns}/{sa}: {e.message}") from e
        return str(result["status"]["token"]).encode()


class PodRunner:
    """Plays kubelet and scheduler for one test Node; see the module docstring."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        node_name: str = DEFAULT_NODE,
        accept_image: Callable[[str], bool] | str = "fedwarden",
        entrypoint: Callable[[str], list[str]] | None = None,
        directory: Path | None = None,
        extra_env: dict[str, str] | None = None,
        refresh_interval: float = 2.0,
        service_wait: float = 3.0,
        verbose: bool = False,
    ) -> None:
        self.control_plane = control_plane
        self.api = control_plane.api()
        self.api_port = int(control_plane.server.rsplit(":", 1)[1])
        self.node_name = node_name
        if isinstance(accept_image, str):
            needle = accept_image
            self.accepts: Callable[[str], bool] = lambda image: needle in image
            self.image_filter_text = f"names containing {needle!r}"
        else:
            self.accepts = accept_image
            self.image_filter_text = getattr(accept_image, "__name__", repr(accept_image))
        self.entrypoint = entrypoint or (lambda image: ["fedwarden"])
        self._tmp = None if directory else tempfile.mkdtemp(prefix="fedwarden-pod-runner-")
        self.directory = directory or Path(str(self._tmp))
        self.extra_env = dict(extra_env or {})
        self.refresh_interval = refresh_interval
        self.service_wait = service_wait
        self.verbose = verbose
        self.bin_dir = str(Path(sys.executable).parent)
        self._workers: dict[str, _PodWorker] = {}
        self._finalizing: set[str] = set()
        self._ports: dict[tuple[str, str, int], int] = {}
        self._ports_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    # --- public ----------------------------------------------------------------------------

    def __enter__(self) -> PodRunner:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._register_node()
        for target in (self._loop, self._watch):
            t = threading.Thread(target=target, name=f"pod-runner-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, grace: float = 5.0) -> None:
        """Stops every process (SIGTERM, then SIGKILL after ``grace``); leaves the API alone."""
        self._stop.set()
        self._wake.set()
        # the watch thread may sit in a read for up to its 5 s timeout: it is a daemon, and the
        # loop thread is the one that must have stopped before processes are reaped
        for t in self._threads:
            t.join(10 if t.name.endswith("_loop") else 0.5)
        workers = list(self._workers.values())
        for w in workers:
            w.terminate(grace)
        for w in workers:
            w.done.wait(grace + 5)
            w._kill_all(grace)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def service_address(
        self, namespace: str, service: str, port: int | str | None = None
    ) -> tuple[str, int]:
        """The loopback address that stands for a Service port (see the module docstring)."""
        number: int
        if isinstance(port, int):
            number = port
        else:
            svc = self.api.get(f"/api/v1/namespaces/{namespace}/services/{service}")
            ports = svc["spec"].get("ports", [])
            if port is None:
                if len(ports) != 1:
                    raise ValueError(
                        f"service {namespace}/{service} has {len(ports)} ports: name one"
                    )
                number = int(ports[0]["port"])
            else:
                named = [p for p in ports if p.get("name") == port]
                if not named:
                    raise ValueError(f"service {namespace}/{service} has no port named {port!r}")
                number = int(named[0]["port"])
        return "127.0.0.1", self._allocate(namespace, service, number)

    def pod_dir(self, namespace: str, name: str) -> Path:
        """The local directory of the running (or last) pod of that name."""
        for w in self._workers.values():
            if w.ns == namespace and w.name == name:
                return w.directory
        raise KeyError(f"no pod {namespace}/{name} on the test node")

    def pvc_dir(self, namespace: str, claim: str) -> Path:
        return self.directory / "pvc" / namespace / claim

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        d = self.pod_dir(namespace, name) / "logs"
        files = [d / f"{container}.log"] if container else sorted(d.glob("*.log"))
        return "".join(f.read_text(errors="replace") for f in files if f.exists())

    def pid(self, namespace: str, name: str, container: str | None = None) -> int | None:
        """The process id of a running container (the first one if ``container`` is None)."""
        for w in self._workers.values():
            if w.ns == namespace and w.name == name:
                for c in w.containers:
                    if (container is None or c.name == container) and not c.init and c.proc:
                        return c.proc.pid
        return None

    # --- node --------------------------------------------------------------------------------

    def _register_node(self) -> None:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem // 1024}Ki", "pods": "110"}
        now = _now()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "fedwarden.io/test-pod-runner": "true",
                },
            },
            "spec": {},
        }
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "fedwarden test pod runner",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "fedwarden test pod runner",
                "containerRuntimeVersion": "fedwarden-podrunner://0",
                "kubeletVersion": "v0.0.0-fedwarden-podrunner",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        try:
            self.api.create("/api/v1/nodes", node)
        except ApiError as e:
            if e.status != 409:
                raise
        # TaintNodesByCondition admission adds not-ready taints on create; the node controller
        # that would lift them does not run here.
        self.api.patch(f"/api/v1/nodes/{self.node_name}", {"spec": {"taints": None}})
        self.api.patch(f"/api/v1/nodes/{self.node_name}/status", {"status": status})

    # --- loop --------------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        self.errors.append(message)
        if self.verbose:
            print(f"[pod-runner] {message}", file=sys.stderr)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.api.get("/api/v1/pods", limit="1")
                rv = listing["metadata"]["resourceVersion"]
                for _event in self.api.watch("/api/v1/pods", rv, timeout_seconds=5):
                    self._wake.set()
                    if self._stop.is_set():
                        return
            except Exception:  # reconnect: the loop also resyncs every second
                self._stop.wait(0.5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._sync()
            except Exception as e:
                self._log(f"sync: {type(e).__name__}: {e}")

    def _sync(self) -> None:
        pods = self.api.get("/api/v1/pods")["items"]
        seen = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod["spec"]
            uid = meta["uid"]
            node = spec.get("nodeName")
            if not node:
                if meta.get("deletionTimestamp"):
                    continue
                if spec.get("schedulerName", "default-scheduler") == "default-scheduler":
                    self._bind(pod)
                continue
            if node != self.node_name:
                continue
            seen.add(uid)
            worker = self._workers.get(uid)
            if meta.get("deletionTimestamp"):
                if uid not in self._finalizing:
                    self._finalizing.add(uid)
                    grace = float(meta.get("deletionGracePeriodSeconds", 30))
                    threading.Thread(
                        target=self._finalize, args=(pod, worker, grace), daemon=True
                    ).start()
                continue
            if worker is None:
                phase = pod.get("status", {}).get("phase")
                if phase in ("Succeeded", "Failed"):
                    continue  # finished before this runner started
                directory = (
                    self.directory / "pods" / f"{meta['namespace']}_{meta['name']}_{uid[:8]}"
                )
                (directory / "logs").mkdir(parents=True, exist_ok=True)
                worker = _PodWorker(self, pod, directory)
                worker.thread = threading.Thread(
                    target=worker.run, name=f"pod-{meta['name']}", daemon=True
                )
                self._workers[uid] = worker
                worker.thread.start()
        # A Pod gone without a deletionTimestamp seen here (force deletion, or it vanished between
        # two syncs): stop its processes all the same. Finished workers are kept, so that
        # pod_dir() and logs() still answer after the Pod is deleted.
        for uid, worker in list(self._workers.items()):
            if uid not in seen and uid not in self._finalizing and not worker.done.is_set():
                self._finalizing.add(uid)
                threading.Thread(target=self._orphan, args=(worker,), daemon=True).start()

    def _orphan(self, worker: _PodWorker, grace: float = 2.0) -> None:
        worker.terminate(grace)
        worker.done.wait(grace + 10)
        worker._kill_all(grace)

    def _bind(self, pod: JSON) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.api.create(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body
            )
        except ApiError as e:
            if e.status not in (404, 409):
                self._log(f"bind {meta['namespace']}/{meta['name']}: {e}")
        self._wake.set()

    def _finalize(self, pod: JSON, worker: _PodWorker | None, grace: float) -> None:
        meta = pod["metadata"]
        try:
            if worker is not None:
                worker.terminate(grace)
                worker.done.wait(grace + 10)
                worker._kill_all(grace)
                if worker.phase not in ("Succeeded", "Failed"):
                    worker.phase = (
                        "Failed"
                        if any(
                            c.terminated and c.terminated["exitCode"] != 0
                            for c in worker.containers
                        )
                        else "Succeeded"
                    )
                    worker._report()
            self.api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )
        except ApiError as e:
            if e.status not in (404, 409):
                self._log(f"delete {meta['namespace']}/{meta['name']}: {e}")
        except Exception as e:
            self._log(f"finalize {meta['namespace']}/{meta['name']}: {type(e).__name__}: {e}")

    # --- services ----------------------------------------------------------------------------

    def _allocate(self, namespace: str, service: str, port: int) -> int:
        if (namespace, service) == ("default", "kubernetes") and port == 443:
            return self.api_port
        key = (namespace, service, port)
        with self._ports_lock:
            if key not in self._ports:
                self._ports[key] = _free_port()
            return self._ports[key]

    def _services(self, namespace: str) -> list[JSON]:
        items: list[JSON] = self.api.get(f"/api/v1/namespaces/{namespace}/services")["items"]
        return items

    def _binds(self, pod: JSON, services: list[JSON]) -> dict[str, str]:
        labels = pod["metadata"].get("labels") or {}
        env: dict[str, str] = {}
        for svc in sorted(services, key=lambda s: s["metadata"]["name"]):
            selector = svc["spec"].get("selector") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            for p in svc["spec"].get("ports", []):
                ns, name = pod["metadata"]["namespace"], svc["metadata"]["name"]
                addr = f"127.0.0.1:{self._allocate(ns, name, int(p['port']))}"
                env.setdefault("FEDWARDEN_BIND_ADDRESS", addr)
                if p.get("name"):
                    env.setdefault(f"FEDWARDEN_BIND_ADDRESS_{_env_name(p['name'])}", addr)
        return env

    def _address_rewriter(
        self, namespace: str, services: list[JSON], binds: dict[str, str], container: JSON
    ) -> Callable[[str], str]:
        long_form = re.compile(
            r"(?<![\w.-])([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"
            r"\.svc(?:\.cluster\.local)?\.?:(\d+)(?!\d)"
        )
        names = sorted((s["metadata"]["name"] for s in services), key=len, reverse=True)
        short_form = None
        if names:
            alt = "|".join(re.escape(n) for n in names)
            short_form = re.compile(
                r"(?<![\w.-])(" + alt + r")(?:\." + re.escape(namespace) + r")?:(\d+)(?![\d.\w])"
            )
        # listen addresses of a backing pod: targetPort -> allocated address
        listen: dict[int, str] = {}
        container_ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        bound = set(binds.values())
        for svc in services:
            for p in svc["spec"].get("ports", []):
                port = self._allocate(namespace, svc["metadata"]["name"], int(p["port"]))
                addr = f"127.0.0.1:{port}"
                if addr not in bound:
                    continue  # a service this pod does not back
                target = p.get("targetPort", p["port"])
                if isinstance(target, str):
                    if target.isdigit():
                        target = int(target)
                    elif target in container_ports:
                        target = container_ports[target]
                    else:
                        continue
                listen[int(target)] = addr

        def rewrite(value: str) -> str:
            value = long_form.sub(
                lambda m: f"127.0.0.1:{self._allocate(m.group(2), m.group(1), int(m.group(3)))}",
                value,
            )
            if short_form is not None:
                value = short_form.sub(
                    lambda m: f"127.0.0.1:{self._allocate(namespace, m.group(1), int(m.group(2)))}",
                    value,
                )
            return rewrite_listen_addresses(value, listen)

        return rewrite
