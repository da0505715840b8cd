"""``fedwarden client``: a client process (what the client image runs).

The logic lives in :mod:`fedwarden.client`; this module turns options into a
:class:`~fedwarden.client.FederationClient` running the user's app (or a built-in one) and exits
with a code that says how the run ended.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from fedwarden.commands._app_options import app_selection
from fedwarden.commands._common import console, emit_json, json_option

_PATH = click.Path(dir_okay=False, path_type=Path)


@click.command()
@click.option("--cert", type=_PATH, default=None, help="The client's certificate (tls.crt).")
@click.option("--key", type=_PATH, default=None, help="The client's key (tls.key).")
@click.option("--ca", type=_PATH, default=None, help="The training's CA bundle (ca.crt).")
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A directory with tls.crt, tls.key and ca.crt, instead of --cert/--key/--ca.",
)
@click.option("--server", required=True, help="The aggregator, HOST:PORT.")
@click.option(
    "--server-name",
    default=None,
    help="The name the aggregator's certificate carries, when --server's host is not one of "
    "its names.",
)
@click.option("--training-uid", default="", help="The training to join [default: any].")
@click.option(
    "--app",
    metavar="MODULE:ATTR",
    default=None,
    help="Your app: a Flower NumPyClient (instance, class, factory or client_fn(context)) or a "
    "fedwarden app; MODULE is imported from the working directory or the installed packages.",
)
@click.option(
    "--app-config",
    metavar="KEY=VALUE",
    multiple=True,
    help="Reaches the app's context.run_config (repeat; true/false, numbers and strings).",
)
@click.option(
    "--task",
    metavar="NAME",
    default=None,
    help="A built-in task instead of --app, dataset-model: digits-logreg, digits-mlp, "
    "mnist1d-mlp, ...",
)
@click.option(
    "--partition",
    default="iid",
    show_default=True,
    help="Built-in task: how the training set is split: iid, dirichlet:<alpha>, shards:<n>.",
)
@click.option(
    "--client-index",
    type=click.IntRange(min=0),
    default=None,
    help="This client's shard (0-based), the app's node_config partition-id [default: the "
    "whole training set].",
)
@click.option(
    "--num-clients",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Shards, the app's node_config num-partitions.",
)
@click.option(
    "--data-seed",
    type=int,
    default=0,
    show_default=True,
    help="Built-in task: seed of the split and partition (the same for every client).",
)
@click.option(
    "--local-epochs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Built-in task: local epochs per round.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=0.1,
    show_default=True,
    help="Built-in task: learning rate.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Built-in task: batch size.",
)
@click.option(
    "--hidden",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Built-in task: hidden units of mlp.",
)
@click.option("--seed", type=int, default=None, help="Built-in task: seed the local SGD order.")
@click.option(
    "--local-dp-clip",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Local DP: clip the update to this norm (with --local-dp-noise). The aggregator's "
    "announced settings take precedence.",
)
@click.option(
    "--local-dp-noise",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Local DP: noise multiplier σ (Gaussian noise σ·C).",
)
@click.option(
    "--max-rounds",
    type=click.IntRange(min=1),
    default=None,
    help="Leave after training this many rounds [default: until the training ends].",
)
@click.option(
    "--give-up-after",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds of consecutive failures to reach the aggregator before giving up.",
)
@click.option(
    "--backoff-max",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    help="Longest wait between retries.",
)
@click.option(
    "--rpc-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Deadline of short calls; long ones get it on top of the round's deadline.",
)
@click.option(
    "--log-level",
    type=click.Choice(("debug", "info", "warning", "error")),
    default="info",
    show_default=True,
)
@json_option
def client(**options: Any) -> None:
    """Take part in a training: dial out to the aggregator over mutual TLS, train, sign, send.

    Exit codes: 0 the training ended (or --max-rounds was reached), 1 an error (among them an
    app that fails to load, raises, or returns NaN or other shapes), 2 a usage mistake, 3
    refused by the aggregator (revoked, banned, not enrolled), 4 the aggregator could not be
    reached for --give-up-after seconds.

    \b
    Examples:
      fedwarden client --tls-dir site-3/ --server 127.0.0.1:8443 \\
          --app my_app.client:client_fn --app-config local-epochs=2 \\
          --client-index 3 --num-clients 10
      fedwarden client --tls-dir site-3/ --server 127.0.0.1:8443 --task digits-logreg \\
          --partition dirichlet:0.5 --client-index 3 --num-clients 10
    """
    from fedwarden.client import AppError, ClientConfig, FederationClient, load_app
    from fedwarden.pki import PKIError, TLSDirectory

    logging.basicConfig(
        level=options["log_level"].upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if options["tls_dir"] is not None:
        tls = TLSDirectory(options["tls_dir"])
        cert = options["cert"] or tls.cert
        key = options["key"] or tls.key
        ca = options["ca"] or tls.ca
    elif options["cert"] and options["key"] and options["ca"]:
        cert, key, ca = options["cert"], options["key"], options["ca"]
    else:
        raise click.UsageError("give --tls-dir, or --cert, --key and --ca")
    for what, path in (("certificate", cert), ("key", key), ("CA bundle", ca)):
        if not Path(path).exists():
            raise click.ClickException(f"the {what} {path} does not exist")
    try:
        spec, run_config = app_selection(
            options["app"], options["app_config"], options["task"], _task_settings(options)
        )
        node_config: dict[str, Any] = {"num-partitions": options["num_clients"]}
        if options["client_index"] is not None:
            node_config["partition-id"] = options["client_index"]
        task = load_app(spec, run_config=run_config, node_config=node_config)
        config = ClientConfig(
            server=options["server"],
            cert=cert,
            key=key,
            ca=ca,
            server_name=options["server_name"],
            training_uid=options["training_uid"],
            rpc_timeout=options["rpc_timeout"],
            backoff_max=max(options["backoff_max"], 0.5),
            give_up_after=options["give_up_after"],
            local_dp_clip=options["local_dp_clip"],
            local_dp_noise=options["local_dp_noise"],
            max_rounds=options["max_rounds"],
        )
        runner = FederationClient(config, task)
    except (AppError, ValueError, PKIError) as exc:
        raise click.ClickException(str(exc)) from exc

    def _terminate(signum: int, frame: Any) -> None:
        threading.Thread(target=runner.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = runner.run()
    except KeyboardInterrupt:
        runner.stop()
        sys.exit(130)
    except (ValueError, PKIError) as exc:
        raise click.ClickException(str(exc)) from exc
    if options["as_json"]:
        emit_json(result.to_dict())
    else:
        accepted = sum(1 for r in result.rounds if r.status == "accepted")
        console.print(
            f"client {result.client_id or '?'}: {result.status} ({result.reason}) — "
            f"{accepted} of {len(result.rounds)} updates accepted. {result.message}"
        )
    sys.exit(result.exit_code)


def _task_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The built-in task's settings, as its run_config names them."""
    settings = {
        "partition": options["partition"],
        "data-seed": options["data_seed"],
        "local-epochs": options["local_epochs"],
        "lr": options["lr"],
        "batch-size": options["batch_size"],
        "hidden": options["hidden"],
    }
    if options["seed"] is not None:
        settings["seed"] = options["seed"]
    return settings
