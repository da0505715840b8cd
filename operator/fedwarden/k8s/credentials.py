"""In-cluster credentials read from a service-account directory: the one reader of the
operator's login (kopf's and its own API client's) and of the aggregator's status reporter.

A pod's service account is mounted at :data:`SERVICE_ACCOUNT_DIR`: ``token`` (rotated by the
kubelet), ``ca.crt`` and ``namespace``; the API server is at ``KUBERNETES_SERVICE_HOST`` and
``KUBERNETES_SERVICE_PORT``. The directory is a parameter (``--service-account-dir`` of
``fedwarden operator`` and ``fedwarden aggregator``) rather than only the fixed path, so that a
process outside a container (the test pod runner's, which rewrites mount paths in arguments) can
be told where the volume is.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("fedwarden.k8s")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REFRESH_SECONDS = 60.0
"""How often :meth:`ServiceAccount.configuration` reads the token file again (as the official
client's in-cluster loader does)."""


class NoServiceAccount(ValueError):
    """The directory or the environment gives no (complete) in-cluster credentials."""


@dataclass(frozen=True)
class ServiceAccount:
    """The credentials of a pod's service account, as read from ``directory``."""

    directory: Path
    server: str
    """``https://<KUBERNETES_SERVICE_HOST>:<KUBERNETES_SERVICE_PORT>`` (an IPv6 host in
    brackets)."""
    token: str
    namespace: str | None
    """The pod's namespace (the ``namespace`` file), ``None`` when absent."""

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    @staticmethod
    def present(directory: Path | str = SERVICE_ACCOUNT_DIR) -> bool:
        """Whether ``directory`` holds a token, i.e. the process runs with a service account
        (what decides between in-cluster credentials and a kubeconfig)."""
        return (Path(directory) / "token").is_file()

    @classmethod
    def read(
        cls, directory: Path | str = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None
    ) -> ServiceAccount:
        """Reads the token, CA and namespace in ``directory`` and the API server's address from
        ``environ`` (default: this process's); raises :class:`NoServiceAccount` naming what is
        missing."""
        directory = Path(directory)
        env = os.environ if environ is None else environ
        host = env.get("KUBERNETES_SERVICE_HOST", "")
        port = env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise NoServiceAccount(
                "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set"
            )
        token = _read_token(directory)
        ca = directory / "ca.crt"
        if not ca.is_file() or ca.stat().st_size == 0:
            raise NoServiceAccount(f"no CA certificate at {ca}")
        namespace_file = directory / "namespace"
        namespace = namespace_file.read_text().strip() if namespace_file.is_file() else ""
        if ":" in host:
            host = f"[{host}]"
        return cls(directory, f"https://{host}:{port}", token, namespace or None)

    def configuration(self) -> Any:
        """A ``kubernetes.client.Configuration`` with these credentials. The token file is read
        again every :data:`TOKEN_REFRESH_SECONDS` (the kubelet rotates it); a failed read keeps
        the previous token."""
        from kubernetes import client

        configuration: Any = client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.ca_path)
        configuration.api_key["BearerToken"] = f"Bearer {self.token}"
        next_read = time.monotonic() + TOKEN_REFRESH_SECONDS

        def refresh(config: Any) -> None:
            nonlocal next_read
            if time.monotonic() < next_read:
                return
            next_read = time.monotonic() + TOKEN_REFRESH_SECONDS
            try:
                config.api_key["BearerToken"] = f"Bearer {_read_token(self.directory)}"
            except NoServiceAccount as exc:
                log.warning("service account token not refreshed: %s", exc)

        configuration.refresh_api_key_hook = refresh
        return configuration


def _read_token(directory: Path) -> str:
    path = directory / "token"
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise NoServiceAccount(f"no service account token at {path}") from None
    except OSError as exc:
        raise NoServiceAccount(f"the service account token at {path}: {exc}") from exc
    if not token:
        raise NoServiceAccount(f"the service account token at {path} is empty")
    return token
