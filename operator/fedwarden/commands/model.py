"""``fedwarden model``: the trained model and its signed provenance, out of a cluster; checked.

``verify`` checks an export (``model.safetensors`` + ``provenance.json``) against the training's
CA certificate; ``fetch`` retrieves the export of a FederatedTraining from its aggregator over
mutual TLS with the operator-issued reader identity, then verifies it. See docs/apps.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from fedwarden.commands._common import emit_json, json_option, stdout_console

EXIT_NOT_VERIFIED = 1


@click.group()
def model() -> None:
    """The trained model and its signed provenance: fetch it from a cluster, verify it."""


def _describe(summary: dict[str, Any]) -> str:
    epsilon = summary.get("epsilon")
    privacy = (
        "no differential privacy"
        if epsilon is None
        else f"ε = {epsilon:.4g}, δ = {summary.get('delta'):.3g}"
    )
    return (
        f"verified {summary['directory']}: round {summary['rounds_completed']} "
        f"({summary.get('status')}) of {summary['training']}, {summary['num_parameters']} "
        f"parameters, {privacy}; sha256 {summary['sha256']}; signed by {summary['signer']} "
        f"at {summary['signed_at']}"
    )


def verify_and_report(directory: Path, ca_pem: bytes, as_json: bool, **extra: Any) -> None:
    """Verify ``directory``; print the outcome; exit 1 with the reason when it fails."""
    from fedwarden.model import ModelVerificationError, verify_model
    from fedwarden.pki import PKIError, TrustBundle

    try:
        bundle = TrustBundle.from_pem(ca_pem, "the CA certificate")
    except PKIError as exc:
        raise click.UsageError(f"--ca: {exc.message}") from None
    try:
        verified = verify_model(directory, bundle)
    except ModelVerificationError as exc:
        if as_json:
            emit_json({"verified": False, "reason": exc.reason, "message": exc.message, **extra})
        else:
            stdout_console.print(
                f"[red]not verified[/red]: {escape(exc.message)} ({exc.reason})", soft_wrap=True
            )
        sys.exit(EXIT_NOT_VERIFIED)
    summary = {**verified.summary(), **extra}
    if as_json:
        emit_json(summary)
    else:
        stdout_console.print(escape(_describe(summary)), soft_wrap=True)


@model.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--ca",
    "ca_cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="The training's CA certificate (or bundle, PEM): the one thing trusted.",
)
@json_option
def verify(directory: Path, ca_cert: Path, as_json: bool) -> None:
    """Check an exported model against the training's CA; exit 1 with the reason otherwise.

    Checks, in order: provenance.json is a signed provenance; the signer's certificate chains
    to the CA (at the signing time) and names the training's aggregator, not a client; the
    signature over the provenance; the SHA-256 of model.safetensors; that it parses to the
    recorded layout.

    \b
    Example:
      fedwarden model verify ./digits-model --ca ca.crt
    """
    verify_and_report(directory, ca_cert.read_bytes(), as_json)


def _training_and_reader(
    name: str, namespace: str, kubeconfig: Path | None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The FederatedTraining's status and the reader Secret's files, through the API server."""
    import base64

    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    from fedwarden.api.common import GROUP, VERSION
    from fedwarden.k8s.cluster import client_configuration
    from fedwarden.resources.names import model_reader_secret_name

    try:
        api = k8s_client.ApiClient(
            client_configuration(None if kubeconfig is None else str(kubeconfig))
        )
    except (ConfigException, OSError, ValueError) as exc:
        raise click.ClickException(f"no credentials for the cluster: {exc}") from None
    secret_name = model_reader_secret_name(name)
    what = f"FederatedTraining {namespace}/{name}"
    try:
        training = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "federatedtrainings", name
        )
        what = f"Secret {namespace}/{secret_name}"
        secret = k8s_client.CoreV1Api(api).read_namespaced_secret(secret_name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise click.ClickException(f"no {what}") from None
        if exc.status in (401, 403):
            raise click.ClickException(
                f"not allowed to read {what} (HTTP {exc.status}): the model reader's Secret "
                "decides who may fetch the model; ask for 'get' on it"
            ) from None
        raise click.ClickException(f"reading {what}: HTTP {exc.status} {exc.reason}") from None
    except OSError as exc:  # urllib3's connection errors
        raise click.ClickException(f"cannot reach the API server: {exc}") from None
    finally:
        api.close()  # type: ignore[no-untyped-call]
    data = secret.data or {}
    missing = [k for k in ("tls.crt", "tls.key", "ca.crt") if k not in data]
    if missing:
        raise click.ClickException(f"Secret {namespace}/{secret_name} lacks {', '.join(missing)}")
    files = {key: base64.b64decode(data[key]) for key in ("tls.crt", "tls.key", "ca.crt")}
    status = training.get("status") if isinstance(training, dict) else None
    return dict(status or {}), files


@model.command()
@click.argument("training")
@click.option("-n", "--namespace", required=True, help="The training's namespace.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where model.safetensors and provenance.json go (made if absent).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Credentials for the API server [default: in-cluster, else ~/.kube/config].",
)
@click.option(
    "--server",
    metavar="HOST:PORT",
    default=None,
    help="Dial the aggregator here instead of status.aggregatorEndpoint (e.g. 127.0.0.1:8443 "
    "through `kubectl port-forward svc/TRAINING-aggregator 8443`); its certificate is still "
    "checked for the endpoint's name.",
)
@click.option(
    "--server-name",
    default=None,
    help="The name the aggregator's certificate must carry [default: the endpoint's host].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds the whole download may take.",
)
@json_option
def fetch(
    training: str,
    namespace: str,
    out: Path,
    kubeconfig: Path | None,
    server: str | None,
    server_name: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Fetch a FederatedTraining's exported model and signed provenance, and verify them.

    Reads the training's status (the aggregator's endpoint) and its model reader Secret
    (TRAINING-model-reader: a reader identity the operator issues) through the Kubernetes API,
    fetches the last export from the aggregator over mutual TLS as that reader (no exec into
    the pod), and verifies it against the CA in the Secret: exit 0 when it verifies, 1 with the
    reason otherwise.

    \b
    Example:
      fedwarden model fetch digits -n team-a --out ./digits-model
      kubectl -n team-a port-forward svc/digits-aggregator 8443 &
      fedwarden model fetch digits -n team-a --out ./digits-model --server 127.0.0.1:8443
    """
    from fedwarden.commands._common import console, parse_host_port
    from fedwarden.wire import WireError
    from fedwarden.wire.fetch import fetch_export

    if server is not None:
        try:
            parse_host_port(server)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--server") from None
    status, files = _training_and_reader(training, namespace, kubeconfig)
    endpoint = status.get("aggregatorEndpoint")
    if server is None and not endpoint:
        raise click.ClickException(
            f"FederatedTraining {namespace}/{training} has no aggregator endpoint yet "
            "(status.aggregatorEndpoint); give --server"
        )
    address = server or str(endpoint)
    if server_name is None and server is not None and endpoint:
        server_name = str(endpoint).rsplit(":", 1)[0]
    try:
        fetched = fetch_export(
            address,
            out,
            ca_pem=files["ca.crt"],
            cert_pem=files["tls.crt"],
            key_pem=files["tls.key"],
            server_name=server_name,
            timeout=timeout,
        )
    except WireError as exc:
        raise click.ClickException(f"could not fetch the model: {exc.message}") from None
    except OSError as exc:
        raise click.ClickException(f"could not write into {out}: {exc}") from None
    size = sum(f.size for f in fetched)
    console.print(f"fetched {out} from {address} ({size} bytes)", soft_wrap=True)
    reported = status.get("model") or {}
    verify_and_report(
        out,
        files["ca.crt"],
        as_json,
        fetched_from=address,
        status_model=reported or None,
    )


@model.command()
@click.option("--app", metavar="MODULE:ATTR", required=True, help="The training's app.")
@click.option(
    "--app-config", metavar="KEY=VALUE", multiple=True, help="The app's run_config (repeat)."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The .safetensors file to write.",
)
@json_option
def init(app: str, app_config: tuple[str, ...], out: Path, as_json: bool) -> None:
    """Write an app's initial model as named tensors, for `fedwarden aggregator --initial-model`.

    The operator runs this in an init container of the app's own image, so that the aggregator
    takes the initial model from the app without running the app's code. The app is loaded as
    the aggregator loads it: partition 0 of 1.
    """
    import os

    from fedwarden.client import AppError, load_app
    from fedwarden.commands._app_options import app_selection
    from fedwarden.model import safetensors_bytes

    spec, run_config = app_selection(app, app_config, None, {})
    try:
        loaded = load_app(
            spec, run_config=run_config, node_config={"partition-id": 0, "num-partitions": 1}
        )
        data = safetensors_bytes(loaded.initial_parameters(), loaded.layout)
    except AppError as exc:
        raise click.ClickException(str(exc)) from exc
    temporary = out.with_name(f".{out.name}.tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, out)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from exc
    summary = {
        "path": str(out),
        "parameters": loaded.layout.size,
        "tensors": loaded.layout.to_dict(),
    }
    if as_json:
        emit_json(summary)
    else:
        stdout_console.print(
            f"wrote {out}: {loaded.layout.size} parameters ({loaded.layout.describe()})",
            soft_wrap=True,
        )


@model.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    help="The aggregator's kubernetes.io/tls-shaped directory (tls.crt, tls.key, ca.crt).",
)
@click.option(
    "--crl",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The training's CRL, reloaded when it changes.",
)
@click.option(
    "--listen",
    default="127.0.0.1:8443",
    show_default=True,
    help="gRPC address (port 0 picks a free port).",
)
@click.option(
    "--log-level",
    type=click.Choice(("debug", "info", "warning", "error")),
    default="info",
    show_default=True,
)
def serve(directory: Path, tls_dir: Path, crl: Path | None, listen: str, log_level: str) -> None:
    """Serve an export to the training's readers after the aggregator has exited.

    The operator runs this once a training finished, with the aggregator's certificate, behind
    the aggregator's Service: `fedwarden model fetch` then works as during the training. Only
    the FetchModel RPC is served, and only to a reader of the training.
    """
    import asyncio
    import logging
    import signal

    from fedwarden.commands._common import parse_host_port
    from fedwarden.pki import PeerVerifier, PKIError, TLSDirectory, TrustBundle
    from fedwarden.pki.identity import training_of_cas
    from fedwarden.wire.fetch import ModelServer

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    try:
        parse_host_port(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    tls = TLSDirectory(tls_dir)
    try:
        bundle = TrustBundle.load(tls.ca)
        training = training_of_cas(bundle)
        verifier = PeerVerifier(training, bundle, crl_path=crl)
        server = ModelServer(
            directory, cert=tls.cert, key=tls.key, ca=tls.ca, verifier=verifier, listen=listen
        )
    except (PKIError, OSError) as exc:
        raise click.ClickException(str(exc)) from None

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await server.serve(
            lambda port: logging.info(
                "serving %s to readers of %s on port %d", directory, training, port
            )
        )

    try:
        asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
