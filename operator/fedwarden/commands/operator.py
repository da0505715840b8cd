"""``fedwarden operator``: run the kopf operator."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import click

from fedwarden.commands._common import host_port, host_port_or_off


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
    "--metrics-address",
    metavar="HOST:PORT",
    callback=host_port_or_off,
    default="0.0.0.0:8081",
    show_default=True,
    help="Serve Prometheus metrics at HOST:PORT (port 0 picks a free port; 'off': no metrics "
    "server).",
)
@click.option(
    "--service-account-dir",
    type=click.Path(file_okay=False, path_type=Path),
    # fedwarden.k8s.credentials.SERVICE_ACCOUNT_DIR (not imported here: it imports the
    # kubernetes client, and every command's options are built at start-up)
    default=Path("/var/run/secrets/kubernetes.io/serviceaccount"),
    show_default=True,
    help="Where the pod's service account token, ca.crt and namespace are (the operator's "
    "credentials unless KUBECONFIG is set; without a token there, ~/.kube/config).",
)
@click.option(
    "--log-level",
    type=click.Choice(("debug", "info", "warning", "error")),
    default="info",
    show_default=True,
)
def operator(
    namespaces: tuple[str, ...],
    liveness: str,
    metrics_address: tuple[str, int] | None,
    service_account_dir: Path,
    log_level: str,
) -> None:
    """Run the fedwarden operator: reconcile FederatedTrainings and FLClients.

    Run ONE replica: kopf's peering (its leader election) is off, and two operators would
    both reconcile. Settings come from the environment: FEDWARDEN_RESYNC_SECONDS (default 60),
    FEDWARDEN_TRUST_DOMAIN, KUBECONFIG (the service account in --service-account-dir when
    unset).

    \b
    Example:
      fedwarden crds | kubectl apply --server-side -f -
      fedwarden operator --namespace team-a
    """
    import kopf
    from prometheus_client import start_http_server

    from fedwarden.controller import handlers  # registers the handlers

    # the login handler and the API client read the settings when kopf starts
    handlers.SETTINGS = dataclasses.replace(
        handlers.SETTINGS, service_account_dir=service_account_dir
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if metrics_address is not None:
        host, port = metrics_address
        server, _thread = start_http_server(port, addr=host)
        logging.getLogger(__name__).info(
            "metrics on http://%s/metrics", host_port((host, server.server_port))
        )
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=True,
            liveness_endpoint=liveness,
        )
    )
