"""A minimal Kubernetes REST client for the test harness, on the standard library only.

The harness and the pod runner need a handful of calls (get, list, create, patch, delete, watch)
against a control plane they started themselves, authenticated with a client certificate. The
standard library does that in a page, so the test support code adds no dependency and stays
independent of the API client the operator uses.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON = dict[str, Any]


class ApiError(RuntimeError):
    """The API server answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        try:
            parsed = json.loads(body)
            self.reason = str(parsed.get("reason", ""))
            self.message = str(parsed.get("message", body))
        except ValueError:
            self.reason = ""
            self.message = body
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


@dataclass(frozen=True)
class KubeApi:
    """Talks to one API server with a client certificate (or a bearer token)."""

    server: str
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str | None = None
    timeout: float = 30.0

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx

    def _request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        url = self.server + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(
                req, context=self._context(), timeout=timeout or self.timeout
            ) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise ApiError(method, path, e.code, e.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def raw_get(self, path: str) -> tuple[int, str]:
        """GET a non-JSON endpoint (``/readyz``, ``/version``...): (status, text)."""
        req = urllib.request.Request(self.server + path, method="GET")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, context=self._context(), timeout=self.timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def get(self, path: str, **params: str) -> Any:
        return self._request("GET", path, params=params or None)

    def create(self, path: str, body: JSON) -> Any:
        return self._request("POST", path, body)

    def replace(self, path: str, body: JSON) -> Any:
        return self._request("PUT", path, body)

    def patch(self, path: str, body: JSON, *, kind: str = "merge") -> Any:
        types = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }
        return self._request("PATCH", path, body, content_type=types[kind])

    def delete(self, path: str, body: JSON | None = None) -> Any:
        return self._request("DELETE", path, body)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 30) -> Iterator[JSON]:
        """Yields watch events ({"type", "object"}) until the server closes the stream."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        url = self.server + path + "?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, method="GET")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            resp = urllib.request.urlopen(req, context=self._context(), timeout=timeout_seconds + 5)
        except urllib.error.HTTPError as e:
            raise ApiError("GET", path, e.code, e.read().decode(errors="replace")) from None
        with resp:
            for line in resp:
                if line.strip():
                    yield json.loads(line)
