"""Prometheus metrics and the ``/healthz`` ``/readyz`` ``/metrics`` HTTP endpoints.

Each aggregator has its own :class:`prometheus_client.CollectorRegistry` (several aggregators
can run in one process, as the tests do). The HTTP server listens on its own port, separate
from the gRPC port, in plain HTTP (bind it to 127.0.0.1 or the pod network; it exposes counts,
never updates or models).

Counters, with the ``reason`` label taking the codes of docs/runtime.md:

==========================================  ====================================================
``fedwarden_rounds_total``                  rounds completed (since this process started)
``fedwarden_round``                         rounds completed in the training (from checkpoints)
``fedwarden_updates_accepted_total``        updates that passed the transport's checks
``fedwarden_updates_rejected_total``        updates refused, by ``reason`` (transport and pipeline)
``fedwarden_peers_refused_total``           RPCs refused on the peer certificate, by ``reason``
``fedwarden_model_requests_refused_total``  model downloads refused, by ``reason`` (FL04)
``fedwarden_model_downloads_total``         model downloads served
``fedwarden_clients_flagged_total``         suspicious behaviour flagged, by ``reason``
``fedwarden_update_bytes_received_total``   payload bytes read from update streams
``fedwarden_model_bytes_sent_total``        model bytes sent
``fedwarden_epsilon``                       ε spent (at ``fedwarden_delta``)
``fedwarden_clients_available``             clients seen recently and not banned
``fedwarden_clients_banned``                clients banned
``fedwarden_round_duration_seconds``        histogram of round durations (open to checkpoint)
==========================================  ====================================================
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter as TallyCounter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("fedwarden.aggregator")


class AggregatorMetrics:
    """The aggregator's Prometheus metrics, and a plain tally of the same counts.

    ``tally`` maps ``(metric, reason)`` to a count, readable without Prometheus (the demo and
    the tests collect rejection reasons from it).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rounds = Counter("fedwarden_rounds", "Rounds completed by this process", registry=r)
        self.round = Gauge("fedwarden_round", "Rounds completed in the training", registry=r)
        self.updates_accepted = Counter(
            "fedwarden_updates_accepted", "Updates that passed the transport checks", registry=r
        )
        self.updates_rejected = Counter(
            "fedwarden_updates_rejected", "Updates refused, by reason", ["reason"], registry=r
        )
        self.peers_refused = Counter(
            "fedwarden_peers_refused",
            "RPCs refused on the peer certificate, by reason",
            ["reason"],
            registry=r,
        )
        self.model_refused = Counter(
            "fedwarden_model_requests_refused",
            "Model downloads refused, by reason",
            ["reason"],
            registry=r,
        )
        self.model_downloads = Counter(
            "fedwarden_model_downloads", "Model downloads served", registry=r
        )
        self.flagged = Counter(
            "fedwarden_clients_flagged", "Suspicious behaviour flagged", ["reason"], registry=r
        )
        self.bytes_received = Counter(
            "fedwarden_update_bytes_received", "Payload bytes read from updates", registry=r
        )
        self.bytes_sent = Counter("fedwarden_model_bytes_sent", "Model bytes sent", registry=r)
        self.epsilon = Gauge("fedwarden_epsilon", "Privacy spent (epsilon)", registry=r)
        self.delta = Gauge("fedwarden_delta", "Delta of the privacy guarantee", registry=r)
        self.clients_available = Gauge(
            "fedwarden_clients_available", "Clients seen recently and not banned", registry=r
        )
        self.clients_banned = Gauge("fedwarden_clients_banned", "Clients banned", registry=r)
        self.round_duration = Histogram(
            "fedwarden_round_duration_seconds",
            "Round duration, from opening to checkpoint",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.tally: TallyCounter[tuple[str, str]] = TallyCounter()
        self._lock = threading.Lock()

    def count(self, metric: str, reason: str = "", amount: int = 1) -> None:
        with self._lock:
            self.tally[(metric, reason)] += amount

    def reject_update(self, reason: str) -> None:
        self.updates_rejected.labels(reason=reason).inc()
        self.count("updates_rejected", reason)

    def refuse_peer(self, reason: str) -> None:
        self.peers_refused.labels(reason=reason).inc()
        self.count("peers_refused", reason)

    def refuse_model(self, reason: str) -> None:
        self.model_refused.labels(reason=reason).inc()
        self.count("model_requests_refused", reason)

    def flag(self, reason: str) -> None:
        self.flagged.labels(reason=reason).inc()
        self.count("clients_flagged", reason)

    def accept_update(self) -> None:
        self.updates_accepted.inc()
        self.count("updates_accepted")

    def received(self, nbytes: int) -> None:
        self.bytes_received.inc(nbytes)
        self.count("update_bytes_received", amount=nbytes)

    def sent(self, nbytes: int) -> None:
        self.bytes_sent.inc(nbytes)
        self.count("model_bytes_sent", amount=nbytes)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{metric: {reason: count}}`` (reason ``""`` for unlabelled counts)."""
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (metric, reason), value in self.tally.items():
                out.setdefault(metric, {})[reason] = value
            return out

    def value(self, metric: str, reason: str = "") -> int:
        with self._lock:
            return self.tally.get((metric, reason), 0)


class _IPv6HTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HealthServer:
    """``/healthz`` (the process serves), ``/readyz`` (the gRPC server accepts clients and the
    state is restored) and ``/metrics`` over plain HTTP on its own port.

    ``address`` is an IPv4 or IPv6 address (``::`` listens on both where the node allows it) or
    a host name, without brackets.
    """

    def __init__(
        self,
        address: str,
        port: int,
        registry: CollectorRegistry,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = outer.healthy()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
                elif path == "/readyz":
                    ok = outer.ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found: try /healthz, /readyz or /metrics\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        self.registry = registry
        self.healthy = healthy
        self.ready = ready
        server_class = _IPv6HTTPServer if ":" in address else ThreadingHTTPServer
        self.httpd = server_class((address, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="fedwarden-health", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
