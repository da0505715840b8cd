"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

Like controller-runtime's envtest, but with the controller manager too, so that Jobs create Pods,
garbage collection follows ownerReferences, namespaces are finalised and service accounts get
tokens. There is no scheduler and no kubelet: :mod:`fedwarden.testing.podrunner` plays both.

The binaries are built from the upstream Go modules by ``hack/control-plane.sh`` and cached in
``$FEDWARDEN_CONTROL_PLANE_DIR/bin`` (default:
``~/.cache/fedwarden/control-plane/<kubernetes>-etcd<etcd>/bin``)::

    with ControlPlane() as cp:
        cp.kubectl("get", "namespaces")
        api = cp.api()  # a KubeApi with the admin client certificate

Everything listens on 127.0.0.1 on free ports; state and logs live in a temporary directory that
is removed on exit (``keep=True`` keeps it). The admin credentials are a client certificate in
the ``system:masters`` group; authorization is ``Node,RBAC``; the API server signs service
account tokens with a key made here; admission has the recommended plugins (ValidatingAdmission
Policy and CEL validation of custom resources are on by default).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedwarden.testing._procs import popen
from fedwarden.testing.kubeapi import ApiError, KubeApi

# Keep in step with hack/control-plane.sh (a test checks that they agree).
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.3"

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

# Controllers that make sense without nodes or cloud: those that act on API objects only.
# (Node lifecycle, IPAM, routes, services of type LoadBalancer, volume attach/expand, the
# daemonset controller and the HPA need nodes, a cloud or metrics and stay off.)
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "legacy-serviceaccount-token-cleaner-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "replicaset-controller",
    "replicationcontroller-controller",
    "deployment-controller",
    "statefulset-controller",
    "disruption-controller",
    "resourcequota-controller",
    "pod-garbage-collector-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "validatingadmissionpolicy-status-controller",
    "service-cidr-controller",
)


class ControlPlaneError(RuntimeError):
    """The control plane could not be started."""


class ControlPlaneBinariesMissing(ControlPlaneError):
    """The binaries are not built: run hack/control-plane.sh."""


def default_dir() -> Path:
    env = os.environ.get("FEDWARDEN_CONTROL_PLANE_DIR")
    if env:
        return Path(env)
    return (
        Path.home()
        / ".cache"
        / "fedwarden"
        / "control-plane"
        / f"{KUBERNETES_VERSION}-etcd{ETCD_VERSION}"
    )


def find_binaries(directory: Path | None = None) -> dict[str, Path]:
    """Paths of the four binaries, or :class:`ControlPlaneBinariesMissing` naming the fix."""
    bin_dir = (directory or default_dir()) / "bin"
    paths = {name: bin_dir / name for name in BINARIES}
    missing = [name for name, p in paths.items() if not os.access(p, os.X_OK)]
    if missing:
        raise ControlPlaneBinariesMissing(
            f"control plane binaries missing in {bin_dir}: {', '.join(missing)}. "
            "Build them with `bash hack/control-plane.sh` (tens of minutes the first time; "
            "set FEDWARDEN_CONTROL_PLANE_DIR to use another directory)."
        )
    return paths


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- certificates -------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def _pem_cert(cert: x509.Certificate) -> bytes:
    data: bytes = cert.public_bytes(serialization.Encoding.PEM)
    return data


class _Pki:
    """A throwaway CA, the API server's serving certificate and client certificates."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedwarden-test-ca")])
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now)
            .not_valid_after(self._now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = self._write("ca.crt", _pem_cert(self.ca_cert))
        self.ca_key_file = self._write("ca.key", _pem_key(self.ca_key))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now)
            .not_valid_after(self._now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        )
        if dns or ips:
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        return (
            self._write(f"{name}.crt", _pem_cert(cert)),
            self._write(f"{name}.key", _pem_key(key)),
        )

    def service_account_keys(self) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return self._write("sa.key", _pem_key(key)), self._write("sa.pub", pub)


def _kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> str:
    import json

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "fedwarden-test",
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [
            {"name": "fedwarden-test", "context": {"cluster": "fedwarden-test", "user": user}}
        ],
        "current-context": "fedwarden-test",
    }
    return json.dumps(config, indent=2)  # JSON is YAML; kubectl and client libraries read it


# --- processes -----------------------------------------------------------------------------


class _Process:
    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, for tests.

    Attributes after :meth:`start`: ``server`` (https URL), ``kubeconfig`` (admin kubeconfig
    path), ``ca_file``, ``admin_cert`` / ``admin_key``, ``dir`` (state and ``logs/``).
    """

    def __init__(
        self,
        binaries_dir: Path | None = None,
        *,
        keep: bool = False,
        start_timeout: float = 90.0,
        controllers: tuple[str, ...] = CONTROLLERS,
        extra_apiserver_args: tuple[str, ...] = (),
    ) -> None:
        self.binaries = find_binaries(binaries_dir)
        self.keep = keep
        self.start_timeout = start_timeout
        self.controllers = controllers
        self.extra_apiserver_args = extra_apiserver_args
        self._procs: list[_Process] = []
        self._tmp: str | None = None
        self.server = ""
        self.startup_seconds = 0.0

    # context manager
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def dir(self) -> Path:
        if self._tmp is None:
            raise ControlPlaneError("the control plane is not started")
        return Path(self._tmp)

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    def start(self) -> None:
        t0 = time.monotonic()
        self._tmp = tempfile.mkdtemp(prefix="fedwarden-control-plane-")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def _start(self) -> None:
        root = self.dir
        self.log_dir.mkdir()
        pki = _Pki(root / "pki")
        self.ca_file = pki.ca_file
        etcd_port, peer_port, api_port, kcm_port = (free_port() for _ in range(4))
        self.server = f"https://127.0.0.1:{api_port}"
        first_service_ip = str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))
        serving_cert, serving_key = pki.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", first_service_ip),
        )
        self.admin_cert, self.admin_key = pki.issue(
            "admin", "fedwarden-test-admin", organizations=("system:masters",)
        )
        sa_key, sa_pub = pki.service_account_keys()
        self.kubeconfig = root / "admin.kubeconfig"
        self.kubeconfig.write_text(
            _kubeconfig(self.server, pki.ca_file, self.admin_cert, self.admin_key, "admin")
        )
        self.kubeconfig.chmod(0o600)

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name=default",
                f"--data-dir={root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync",  # a test store: durability across crashes is not wanted
                "--log-level=warn",
            ],
        )
        self._wait(etcd, lambda: self._etcd_ok(etcd_port), f"etcd health on 127.0.0.1:{etcd_port}")

        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={root / 'apiserver-certs'}",
                f"--tls-cert-file={serving_cert}",
                f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={pki.ca_file}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-account-issuer={self.server}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *self.extra_apiserver_args,
            ],
        )
        self._wait(apiserver, self._readyz, f"{self.server}/readyz")

        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={root / 'kcm-certs'}",
                "--leader-elect=false",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={pki.ca_file}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--controllers={','.join(self.controllers)}",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        self._wait(kcm, lambda: self._kcm_ok(kcm_port), f"controller manager :{kcm_port}")
        # The service account controller makes `default` in each namespace; pods need it.
        api = self.api()
        self._wait(
            kcm,
            lambda: (
                api.get_or_none("/api/v1/namespaces/default/serviceaccounts/default") is not None
            ),
            "the default service account",
        )

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        proc = _Process(name, argv, self.log_dir)
        self._procs.append(proc)
        return proc

    def _wait(self, proc: _Process, check: Any, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ControlPlaneError(
                    self._failure(f"{proc.name} exited while waiting for {what}")
                )
            try:
                if check():
                    return
            except (OSError, ApiError) as e:
                last = e
            time.sleep(0.2)
        raise ControlPlaneError(
            self._failure(f"timed out after {self.start_timeout:.0f} s waiting for {what}: {last}")
        )

    def _failure(self, message: str) -> str:
        parts = [message, f"(logs in {self.log_dir}, kept)"]
        self.keep = True
        for p in self._procs:
            parts.append(f"--- {p.name} (exit {p.proc.poll()}) {p.log_path}:\n{p.tail()}")
        return "\n".join(parts)

    @staticmethod
    def _etcd_ok(port: int) -> bool:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return b'"health":"true"' in r.read()

    def _readyz(self) -> bool:
        status, _ = self.api(timeout=5).raw_get("/readyz")
        return status == 200

    def _kcm_ok(self, port: int) -> bool:
        import ssl
        import urllib.request

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # its self-signed serving certificate, on loopback
        ctx.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2
        ) as r:
            return bool(r.read().strip() == b"ok")

    def api(self, *, timeout: float = 30.0) -> KubeApi:
        """A small REST client with the admin client certificate."""
        return KubeApi(self.server, self.ca_file, self.admin_cert, self.admin_key, timeout=timeout)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Runs the built kubectl with the admin kubeconfig; raises on failure if ``check``."""
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        result = subprocess.run(
            [str(self.binaries["kubectl"]), *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()
        if self._tmp is not None and not self.keep:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
