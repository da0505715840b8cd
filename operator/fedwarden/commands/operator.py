"""``fedwarden operator``: run the kopf operator."""

from __future__ import annotations

import asyncio
import logging

import click


@click.command()
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only this namespace (repeatable) [default: all namespaces].",
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="kopf's liveness endpoint (the Deployment's probes).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=8081,
    show_default=True,
    help="Serve Prometheus metrics on this port (0: off).",
)
@click.option(
    "--log-level",
    type=click.Choice(("debug", "info", "warning", "error")),
    default="info",
    show_default=True,
)
def operator(namespaces: tuple[str, ...], liveness: str, metrics_port: int, log_level: str) -> None:
    """Run the fedwarden operator: reconcile FederatedTrainings and FLClients.

    Run ONE replica: kopf's peering (its leader election) is off, and two operators would
    both reconcile. Settings come from the environment: FEDWARDEN_RESYNC_SECONDS (default 60),
    FEDWARDEN_TRUST_DOMAIN, KUBECONFIG (in-cluster credentials when unset).

    \b
    Example:
      fedwarden crds | kubectl apply --server-side -f -
      fedwarden operator --namespace team-a
    """
    import kopf
    from prometheus_client import start_http_server

    import fedwarden.controller.handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if metrics_port:
        start_http_server(metrics_port)
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=True,
            liveness_endpoint=liveness,
        )
    )
