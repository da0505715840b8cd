"""``fedwarden aggregator``: the aggregator process (what the aggregator image runs).

The logic lives in :mod:`fedwarden.aggregator`; this module turns options into an
:class:`~fedwarden.aggregator.Aggregator`, runs it until the training ends and exits with a
code that says how it ended.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fedwarden.commands._common import (
    console,
    emit_json,
    host_port,
    host_port_or_off,
    json_option,
    parse_host_port,
)
from fedwarden.commands._pipeline_options import (
    effective_sampling,
    pipeline_config,
    pipeline_options,
)

if TYPE_CHECKING:
    from fedwarden.pipeline.round import PipelineConfig

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_STOPPED = 3


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--listen``: checked, then kept as written (gRPC takes ``HOST:PORT`` itself)."""
    if value is None:
        return None
    try:
        parse_host_port(value)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (for example 127.0.0.1:8443 or [::]:8443)") from exc
    return value


def _kubernetes_target(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, str] | None:
    if value is None:
        return None
    from fedwarden.aggregator.kubernetes import parse_target

    try:
        return parse_target(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """``--config FILE``: a JSON or YAML object of :class:`~fedwarden.api.AggregatorSettings`
    (keyed by the options' Python names: ``rounds``, ``aggregator``, ``agg_params``...),
    checked against that model. It becomes the command's defaults, so flags on the command line
    override it."""
    if value is None:
        return
    import yaml

    from fedwarden.api.aggregator_config import AggregatorSettings

    try:
        data = yaml.safe_load(value.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror or exc}", ctx, param) from exc
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{value} is neither JSON nor YAML: {exc}", ctx, param) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise click.BadParameter(
            f"{value} must hold an object of option values, not a {type(data).__name__}",
            ctx,
            param,
        )
    try:
        settings = AggregatorSettings.parse(data)
    except ValueError as exc:
        raise click.BadParameter(f"{value}: {exc}", ctx, param) from exc
    params = {p.name: p for p in ctx.command.params if p.name}
    defaults: dict[str, Any] = {}
    for key, item in settings.options().items():
        target = params.get(key)
        if target is None:  # a setting this build's command does not have (yet)
            raise click.BadParameter(
                f"{value}: {key!r} is not an option of this fedwarden aggregator", ctx, param
            )
        if target.multiple:  # agg_params {"f": 2} is --agg-param f=2
            item = [f"{k}={v}" for k, v in item.items()]
        defaults[key] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


_PATH = click.Path(dir_okay=False, path_type=Path)
_DIR = click.Path(file_okay=False, path_type=Path)


@click.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="A JSON or YAML object of option values keyed by the options' Python names "
    "(rounds, aggregator, agg_params, dp, target_epsilon, ...: fedwarden.api."
    "AggregatorSettings); flags override it. The operator renders it into a ConfigMap.",
)
@click.option(
    "--pki-dir",
    type=_DIR,
    default=None,
    help="The training's CA directory (fedwarden pki init-ca): ca-bundle.crt, crl.pem, "
    "server.crt/server.key unless --cert/--key; with ca.key, banned clients are revoked in "
    "its crl.pem.",
)
@click.option(
    "--tls-dir",
    type=_DIR,
    default=None,
    help="A kubernetes.io/tls-shaped directory (tls.crt, tls.key, ca.crt) instead of --pki-dir.",
)
@click.option("--cert", type=_PATH, default=None, help="The server certificate (PEM).")
@click.option("--key", type=_PATH, default=None, help="The server key (PEM).")
@click.option("--ca", type=_PATH, default=None, help="The CA bundle clients are verified with.")
@click.option("--crl", type=_PATH, default=None, help="The CRL file, reloaded when it changes.")
@click.option(
    "--listen",
    default="127.0.0.1:8443",
    show_default=True,
    callback=_address,
    help="gRPC address (port 0 picks a free port).",
)
@click.option(
    "--metrics-address",
    metavar="HOST:PORT",
    callback=host_port_or_off,
    default=None,
    help="Serve /metrics, /healthz and /readyz over HTTP at HOST:PORT (port 0 picks a free "
    "port; 'off': no server, e.g. over a --config value) [default: off].",
)
@click.option("--rounds", type=click.IntRange(min=1), required=True, help="Rounds to complete.")
@click.option(
    "--fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Share of available clients sampled per round (fixed), or the sampling probability q "
    "(poisson).",
)
@click.option(
    "--min-clients",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Least number of clients sampled per round (fixed sampling).",
)
@click.option(
    "--min-available",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="A round starts once this many clients are available.",
)
@click.option(
    "--sampling",
    type=click.Choice(("fixed", "poisson")),
    default=None,
    help="fixed: a share of the available clients; poisson: each with probability --fraction "
    "(what DP accounting assumes) [default: poisson with --dp, fixed without].",
)
@click.option(
    "--round-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a round stays open; stragglers are dropped.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed the client sampling (tests); by default it draws from the OS CSPRNG.",
)
@click.option(
    "--training-uid",
    default=None,
    help="What envelopes must name [default: the training's SPIFFE ID from the CA].",
)
@click.option(
    "--app",
    metavar="MODULE:ATTR",
    default=None,
    help="The training's app (what clients run with --app): the initial model, and the "
    "model's tensor names and shapes. Loaded as partition 0 of 1.",
)
@click.option(
    "--app-config",
    metavar="KEY=VALUE",
    multiple=True,
    help="Reaches the app's context.run_config (repeat).",
)
@click.option(
    "--task",
    default=None,
    metavar="NAME",
    help="A built-in task instead of --app (dataset-model, e.g. digits-logreg): the initial "
    "model and the test-set evaluation of each round.",
)
@click.option(
    "--initial-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="The initial model: a .safetensors or .npz file of named arrays (e.g. from `fedwarden "
    "model init`). With --app or --task it must match their tensors exactly.",
)
@click.option(
    "--num-parameters",
    type=click.IntRange(min=1),
    default=None,
    help="Model size when there is no --app, --task or --initial-model (the initial model is "
    "zeros).",
)
@click.option(
    "--evaluation",
    type=click.Choice(("server", "federated")),
    default=None,
    help="server: the aggregator evaluates each round's model with the app's evaluate; "
    "federated: sampled clients evaluate it on their own held-out data and report in their "
    "signed updates [default: server for --task, federated otherwise].",
)
@click.option(
    "--model-seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the built-in task's initial model.",
)
@click.option(
    "--data-seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the built-in task's train/test split (shared by the training's clients).",
)
@pipeline_options
@click.option(
    "--population",
    type=click.IntRange(min=1),
    default=None,
    help="Enrolled clients, for DP [default: the certificates in --pki-dir/clients, else "
    "--min-available].",
)
@click.option(
    "--noise-seed",
    type=int,
    default=None,
    help="Seed the DP noise (tests only; reported). By default it comes from the OS CSPRNG.",
)
@click.option(
    "--chunk-kib",
    type=click.IntRange(1, 4096),
    default=1024,
    show_default=True,
    help="Chunk size of streamed models and updates.",
)
@click.option(
    "--max-update-mib",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Largest update accepted [default: the model's size].",
)
@click.option(
    "--max-downloads-per-round",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Model downloads per sampled client and round; more are throttled and flagged.",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds a stream may stay silent before it is cut.",
)
@click.option(
    "--poll-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds a long poll is held open.",
)
@click.option(
    "--checkpoint-dir",
    type=_DIR,
    default=None,
    help="Where the atomic checkpoint lives; a restart with the same options resumes from it.",
)
@click.option(
    "--output-model",
    type=_DIR,
    default=None,
    metavar="DIR",
    help="Export the global model at each checkpoint and at the end: DIR/model.safetensors and "
    "DIR/provenance.json, signed with the server's key (check with `fedwarden model verify`).",
)
@click.option(
    "--report-jsonl", type=_PATH, default=None, help="Append one JSON object per event here."
)
@click.option(
    "--kubernetes-status",
    default=None,
    metavar="NAMESPACE/NAME",
    callback=_kubernetes_target,
    help="Write progress, ε spent, bans and strikes onto this FederatedTraining's status and "
    "its FLClients' (server-side apply); in-cluster credentials unless --kubeconfig.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Credentials for --kubernetes-status from this kubeconfig file (tests, runs outside "
    "the cluster).",
)
@click.option(
    "--service-account-dir",
    type=_DIR,
    default=Path("/var/run/secrets/kubernetes.io/serviceaccount"),
    show_default=True,
    help="Where the pod's service account token and ca.crt are (in-cluster credentials of "
    "--kubernetes-status).",
)
@click.option("--quiet", is_flag=True, help="No progress on the console.")
@click.option(
    "--log-level",
    type=click.Choice(("debug", "info", "warning", "error")),
    default="warning",
    show_default=True,
)
@json_option
def aggregator(**options: Any) -> None:
    """Run a training's aggregator: mutual-TLS gRPC server, rounds, checkpoints.

    Clients need a certificate of the training's CA; their identity is taken from it, every
    update is verified against its signature before it is decoded, and each round goes through
    fedwarden's pipeline. Exit codes: 0 the training ended (all rounds, or the privacy budget
    is spent), 1 an error, 2 a usage mistake, 3 stopped before the end (run again with the
    same options to resume from the checkpoint).

    \b
    Example:
      fedwarden pki init-ca --training mnist --namespace team-a --out ca/
      fedwarden pki server --ca-dir ca/ --dns localhost --ip 127.0.0.1 --out ca/server-tls/
      fedwarden aggregator --pki-dir ca/ --cert ca/server-tls/tls.crt \\
          --key ca/server-tls/tls.key --listen 127.0.0.1:8443 --rounds 20 \\
          --task digits-logreg --min-available 5 --checkpoint-dir state/ \\
          --report-jsonl state/report.jsonl --metrics-address 127.0.0.1:9090
    """
    logging.basicConfig(
        level=options["log_level"].upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from fedwarden.pki import PKIError

    if options["kubeconfig"] is not None and options["kubernetes_status"] is None:
        raise click.UsageError("--kubeconfig is for --kubernetes-status; give both")
    try:
        agg = _build(options)
    except click.ClickException:
        raise
    except (ValueError, OSError, PKIError) as exc:
        raise click.ClickException(str(exc)) from exc

    def _terminate(signum: int, frame: Any) -> None:
        agg.stop(timeout=0)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        agg.start()
    except (ValueError, OSError, PKIError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not options["quiet"]:
        message = f"listening on {agg.address}"
        if options["metrics_address"] is not None:
            host, _port = options["metrics_address"]  # port 0: the one the server picked
            message += f"; metrics on http://{host_port((host, agg.metrics_port))}/metrics"
        console.print(message, soft_wrap=True)
    try:
        while (result := agg.wait(0.5)) is None:
            pass
    except KeyboardInterrupt:
        result = agg.stop()
    except Exception as exc:
        raise click.ClickException(f"the aggregator failed: {exc}") from exc
    if result is None:
        raise click.ClickException("the aggregator stopped without a result")
    if options["as_json"]:
        emit_json(
            {
                "status": result.status,
                "message": result.message,
                "rounds": result.rounds,
                "epsilon": result.epsilon,
                "delta": result.delta,
                "banned": result.banned,
                "metrics": result.metrics,
                "fates": agg.fates(),
                "counts": agg.metrics.snapshot(),
            }
        )
    if result.status in ("completed", "budget-exhausted"):
        sys.exit(EXIT_COMPLETED)
    sys.exit(EXIT_STOPPED)


def _population(options: dict[str, Any]) -> int:
    if options["population"] is not None:
        return int(options["population"])
    if options["pki_dir"] is not None:
        enrolled = list((Path(options["pki_dir"]) / "clients").glob("*.crt"))
        if enrolled:
            return len(enrolled)
    return int(options["min_available"])


def _pipeline_config(options: Mapping[str, Any]) -> PipelineConfig:
    """The pipeline the options choose, by the mapping ``fedwarden simulate`` shares, for
    --rounds and --fraction. With DP the aggregator samples by Poisson, what its accountant
    assumes (a simulation may also sample a fixed cohort of its known population)."""
    sampling = effective_sampling(options)
    if options["dp"] in ("central", "local") and sampling != "poisson":
        raise ValueError(
            f"--dp {options['dp']} needs --sampling poisson (the accountant's sampling)"
        )
    return pipeline_config(
        options, rounds=options["rounds"], sample_rate=options["fraction"], sampling=sampling
    )


def _tls(options: dict[str, Any]) -> Any:
    from fedwarden.aggregator import ServerTLS

    if options["pki_dir"] is not None:
        tls = ServerTLS.from_pki_dir(options["pki_dir"], cert=options["cert"], key=options["key"])
        if options["ca"] is not None or options["crl"] is not None:
            tls = dataclasses.replace(
                tls, ca=options["ca"] or tls.ca, crl=options["crl"] or tls.crl
            )
    elif options["tls_dir"] is not None:
        tls = ServerTLS.from_tls_dir(options["tls_dir"], crl=options["crl"])
    elif options["cert"] and options["key"] and options["ca"]:
        tls = ServerTLS(options["cert"], options["key"], options["ca"], options["crl"])
    else:
        raise click.UsageError("give --pki-dir, --tls-dir, or --cert, --key and --ca")
    tls.check()
    return tls


def _build(options: dict[str, Any]) -> Any:

    from fedwarden.aggregator import (
        Aggregator,
        AggregatorConfig,
        ConsoleReporter,
        CRLRevoker,
        JsonlReporter,
        LogOnlyRevoker,
        Reporter,
    )
    from fedwarden.aggregator.reporting import make_reporter
    from fedwarden.pipeline.round import Pipeline

    tls = _tls(options)
    sampling = effective_sampling(options)
    settings = _pipeline_config(options)
    initial, layout, evaluator = _model(options)
    pipeline = Pipeline(
        settings,
        dim=int(initial.size),
        population=_population(options),
        seed=options["noise_seed"],
    )
    announced: dict[str, Any] = {}
    if options["task"] is not None:
        announced.update(task=options["task"], data_seed=options["data_seed"])
    if settings.privacy.mode == "local":
        announced["local_dp"] = {
            "clip_norm": settings.clipping.clip_norm,
            "noise_multiplier": pipeline.noise_multiplier,
        }
    if settings.privacy.mode == "record":
        # each site's budget; the built-in app takes it as dp-epsilon, dp-delta, dp-rounds
        announced["record_dp"] = {
            "target_epsilon": settings.privacy.target_epsilon,
            "delta": settings.privacy.delta,
            "rounds": options["rounds"],
        }
    max_update = (
        None if options["max_update_mib"] is None else int(options["max_update_mib"] * (1 << 20))
    )
    config = AggregatorConfig(
        rounds=options["rounds"],
        fraction=options["fraction"],
        min_per_round=options["min_clients"],
        min_available=options["min_available"],
        sampling=sampling,
        round_timeout=options["round_timeout"],
        seed=options["seed"],
        training_uid=options["training_uid"] or "",
        task=announced,
        chunk_bytes=options["chunk_kib"] * 1024,
        max_update_bytes=max_update,
        max_downloads_per_round=options["max_downloads_per_round"],
        stall_timeout=options["stall_timeout"],
        poll_timeout=options["poll_timeout"],
    )
    reporters: list[Reporter] = []
    if not options["quiet"]:
        reporters.append(ConsoleReporter(console))
    if options["report_jsonl"] is not None:
        reporters.append(JsonlReporter(options["report_jsonl"]))
    if options["kubernetes_status"] is not None:
        from fedwarden.aggregator.kubernetes import KubernetesReporter

        namespace, name = options["kubernetes_status"]
        reporters.append(
            KubernetesReporter(
                namespace,
                name,
                kubeconfig=options["kubeconfig"],
                service_account_dir=options["service_account_dir"],
            )
        )
    can_revoke = tls.pki_dir is not None and (tls.pki_dir / "ca.key").exists()
    return Aggregator(
        config,
        pipeline,
        initial,
        tls=tls,
        listen=options["listen"],
        revoker=CRLRevoker(tls.pki_dir) if can_revoke else LogOnlyRevoker(),
        reporter=make_reporter(reporters) if reporters else Reporter(),
        evaluator=evaluator,
        checkpoint_dir=options["checkpoint_dir"],
        metrics_address=options["metrics_address"],
        layout=layout,
        output_model_dir=options["output_model"],
    )


def _model(options: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``(initial model, layout, evaluator)`` from --app or --task, --initial-model, or
    --num-parameters (whose layout is unknown: ``None``); the evaluator is ``None`` under
    federated evaluation. The initial model never comes from a client."""
    import numpy as np

    from fedwarden.client import AppError, load_app
    from fedwarden.commands._app_options import app_selection
    from fedwarden.model import ModelFileError, check_layout, read_tensors
    from fedwarden.pipeline import ParameterLayout

    sources = [o for o in ("app", "task", "num_parameters") if options[o] is not None]
    if len(sources) > 1 or not (sources or options["initial_model"]):
        raise click.UsageError(
            "give one of --app MODULE:ATTR (the training's app), --task NAME (a built-in task) "
            "or --num-parameters N, and/or --initial-model FILE"
        )
    evaluation = options["evaluation"] or ("server" if options["task"] is not None else "federated")
    if evaluation == "server" and options["app"] is None and options["task"] is None:
        raise click.UsageError("--evaluation server needs --app or --task")
    tensors = None
    if options["initial_model"] is not None:
        try:
            tensors = read_tensors(options["initial_model"])
        except ModelFileError as exc:
            raise click.ClickException(str(exc)) from exc
    if options["app"] is None and options["task"] is None:
        if tensors is None:
            return np.zeros(options["num_parameters"], dtype=np.float32), None, None
        layout = ParameterLayout.of_named(tensors)
        if options["num_parameters"] not in (None, layout.size):
            raise click.ClickException(
                f"{options['initial_model']} holds {layout.size} parameters, --num-parameters "
                f"says {options['num_parameters']}"
            )
        return layout.join(tensors), layout, None
    spec, run_config = app_selection(
        options["app"],
        options["app_config"],
        options["task"],
        {"data-seed": options["data_seed"], "model-seed": options["model_seed"]},
    )
    try:
        app = load_app(
            spec, run_config=run_config, node_config={"partition-id": 0, "num-partitions": 1}
        )
        if tensors is None:
            initial = app.initial_parameters()
        else:
            check_layout(tensors, app.layout)
            initial = app.layout.join(tensors)
    except (AppError, ModelFileError) as exc:
        raise click.ClickException(
            f"{options['initial_model']}: {exc}" if isinstance(exc, ModelFileError) else str(exc)
        ) from exc
    return initial, app.layout, app.evaluate if evaluation == "server" else None
