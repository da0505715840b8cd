"""A Flower app under two runtimes: Flower's own and fedwarden's (issue 12, "What must be
shown 2": the unchanged ``NumPyClient`` trains under fedwarden to within 2 points of the
accuracy it reaches under Flower's runtime, same rounds and data split).

The same Flower App directory (a ``pyproject.toml`` naming a ServerApp and a ClientApp, a
``client_fn(context)`` that reads ``partition-id`` / ``num-partitions``) is trained for the same
rounds by N clients, client ``i`` holding partition ``i`` of N, every client in every round:

* **Flower**: a Flower 1.42 deployment on 127.0.0.1 (``flower-superlink``, N
  ``flower-supernode --node-config "partition-id=i num-partitions=N"``), the app submitted with
  ``flwr run``. The ServerApp is the app's own ``server_fn`` (its strategy unchanged), wrapped
  by :mod:`fedwarden.bench.flower_app.parity_server_app` to keep the final global model.
* **fedwarden**: ``fedwarden aggregator --app MODULE:client_fn`` (the initial model from the
  app, loaded as partition 0 of 1) and N ``fedwarden client --app MODULE:client_fn
  --client-index i --num-clients N`` processes over mutual TLS with signed updates; the
  pipeline is plain FedAvg (``--defence none``, like for like with Flower's ``FedAvg``) and,
  as a second row, the recommended robust one. The final model is the aggregator's last
  checkpoint.

Both final models are then evaluated by the same code, here: the app's own ``evaluate`` on
every partition's held-out data, the metric weighted by the partitions' example counts (what
Flower's quickstarts report as their distributed accuracy). What each runtime reported itself
is kept beside it. Nothing depends on timing: every round waits for all N clients.

The app's run config must name its rounds ``num-server-rounds`` (as Flower's templates do) and
the least number of clients its strategy waits for ``min-clients``; both are set to this run's.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedwarden.bench import _runtime_fedwarden, _runtime_flower, flower_app
from fedwarden.bench._processes import (
    DeploymentError,
    MemoryGuard,
    ProcessSet,
    free_ports,
    tail,
    terminate_on_sigterm,
    wait_for,
)
from fedwarden.bench.runtime import Environment, describe_environment

__all__ = [
    "FEDWARDEN_FEDAVG",
    "FEDWARDEN_RECOMMENDED",
    "FLOWER",
    "SIDES",
    "TOLERANCE",
    "AppsBenchResult",
    "FlowerApp",
    "SideResult",
    "evaluate_model",
    "run",
    "to_markdown",
]

TOLERANCE = 0.02
"""|accuracy under fedwarden (fedavg) − accuracy under Flower| must not exceed this."""

FLOWER = "flower"
FEDWARDEN_FEDAVG = "fedwarden-fedavg"
FEDWARDEN_RECOMMENDED = "fedwarden-recommended"
SIDES: tuple[str, ...] = (FLOWER, FEDWARDEN_FEDAVG, FEDWARDEN_RECOMMENDED)
ROUNDS_KEY = "num-server-rounds"
MIN_CLIENTS_KEY = "min-clients"
PARITY_SERVER_MODULE = "fedwarden_parity_server"
_DEFENCES = {
    FEDWARDEN_FEDAVG: ("none", "plain FedAvg (--defence none): weighted by example counts"),
    FEDWARDEN_RECOMMENDED: ("recommended", "recommended (--defence recommended), no DP"),
}

Progress = Callable[[str], None]
ConfigValue = bool | int | float | str


@dataclass(frozen=True)
class FlowerApp:
    """A Flower App directory and the names the two runtimes run it by."""

    directory: Path
    client_fn: str
    """``module:attr`` of its ``client_fn`` (what ``fedwarden client --app`` takes)."""
    server_fn: str
    """``module:attr`` of its ServerApp's ``server_fn``."""
    run_config: dict[str, ConfigValue]
    """The defaults of ``[tool.flwr.app.config]``."""

    @classmethod
    def load(
        cls, directory: Path, client_fn: str | None = None, server_fn: str | None = None
    ) -> FlowerApp:
        """Read ``directory/pyproject.toml``; by default the ``client_fn`` and ``server_fn``
        are those of the modules its ``clientapp`` and ``serverapp`` components live in."""
        pyproject = directory / "pyproject.toml"
        try:
            flwr = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["flwr"]["app"]
            components, config = flwr["components"], dict(flwr.get("config", {}))
        except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(
                f"{directory} is not a Flower App: {pyproject} needs [tool.flwr.app.components] "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        missing = [k for k in (ROUNDS_KEY, MIN_CLIENTS_KEY) if k not in config]
        if missing:
            raise ValueError(
                f"{pyproject}: [tool.flwr.app.config] must have {' and '.join(missing)} "
                "(the rounds and the cohort this benchmark sets)"
            )
        module_of = {name: str(components[name]).partition(":")[0] for name in components}
        return cls(
            directory=directory.resolve(),
            client_fn=client_fn or f"{module_of['clientapp']}:client_fn",
            server_fn=server_fn or f"{module_of['serverapp']}:server_fn",
            run_config=config,
        )


@dataclass(frozen=True)
class SideResult:
    side: str
    status: str
    """``ok``, ``failed`` (``detail`` says why) or ``skipped``."""
    accuracy: float | None = None
    """The final model's metric over every partition's held-out data (:func:`evaluate_model`)."""
    reported: dict[str, Any] = field(default_factory=dict)
    """What the runtime reported itself, round by round."""
    seconds: float | None = None
    """From submitting the run (Flower) or starting the aggregator (fedwarden) to the end."""
    security: str = ""
    pipeline: str = ""
    detail: str = ""
    log_dir: str | None = None


@dataclass(frozen=True)
class AppsBenchResult:
    app: str
    client_fn: str
    server_fn: str
    clients: int
    rounds: int
    run_config: dict[str, ConfigValue]
    metric: str
    sides: dict[str, SideResult]
    difference: float | None
    """|fedwarden fedavg − Flower|; ``None`` unless both ran."""
    difference_recommended: float | None
    tolerance: float
    passed: bool | None
    method: str
    environment: Environment
    elapsed_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppsBenchResult:
        """The inverse of :meth:`to_dict` (e.g. to format a saved ``apps.json`` again)."""
        env = dict(data["environment"])
        for key in ("loadavg_start", "loadavg_end"):
            if env.get(key) is not None:
                env[key] = tuple(env[key])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{
                **{k: v for k, v in data.items() if k in known},
                "sides": {
                    name: SideResult(**data["sides"][name])
                    for name in SIDES
                    if name in data["sides"]
                },
                "environment": Environment(**env),
            }
        )


METHOD = (
    "The same Flower App, {clients} clients (client i holds partition i of {clients}: "
    "node_config partition-id / num-partitions), {rounds} rounds, every client in every round. "
    "Flower: a Flower {flwr} deployment on 127.0.0.1 (flower-superlink, one flower-supernode "
    "per client), the app's own server_fn and strategy, submitted with flwr run. fedwarden: "
    "fedwarden aggregator --app and one fedwarden client --app process per client over mutual "
    "TLS with signed updates. The final global model of each run is evaluated by the same "
    "code: the app's evaluate on every partition's held-out data, {metric} weighted by the "
    "partitions' example counts"
)


# --- evaluation -------------------------------------------------------------------------------


def evaluate_model(
    app: FlowerApp,
    model: Sequence[np.ndarray[Any, Any]],
    clients: int,
    run_config: Mapping[str, ConfigValue],
    metric: str = "accuracy",
) -> float:
    """``metric`` of ``model`` (the app's arrays, in order) over the held-out data of the
    ``clients`` partitions, weighted by their example counts, by the app's own ``evaluate``."""
    from fedwarden.client import NumPyClientApp, load_app
    from fedwarden.pipeline import flatten

    vector = flatten(list(model)).astype(np.float32)
    total = weighted = 0.0
    for index in range(clients):
        client = load_app(
            app.client_fn,
            run_config=run_config,
            node_config={"partition-id": index, "num-partitions": clients},
            search_path=(app.directory,),
        )
        if isinstance(client, NumPyClientApp):
            client.adopt_layout(_layout_of(model))
        evaluation = client.evaluate(vector)
        if evaluation is None or metric not in evaluation.metrics:
            raise ValueError(f"the app's evaluate reports no {metric!r} for partition {index}")
        total += evaluation.num_examples
        weighted += evaluation.num_examples * evaluation.metrics[metric]
    return weighted / total


def _layout_of(model: Sequence[np.ndarray[Any, Any]]) -> Any:
    from fedwarden.pipeline import ParameterLayout

    return ParameterLayout.of_arrays(list(model))


# --- the Flower side --------------------------------------------------------------------------


def _toml(value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a JSON string of printable text is a TOML basic string


def _copy_app(app: FlowerApp, target: Path) -> Path:
    shutil.copytree(
        app.directory, target, ignore=shutil.ignore_patterns("__pycache__", ".flwr", "*.fab")
    )
    return target


def _parity_flower_app(app: FlowerApp, target: Path) -> Path:
    """A copy of the app whose ServerApp is the app's ``server_fn`` behind the recorder."""
    _copy_app(app, target)
    shutil.copyfile(
        flower_app.source_dir() / "parity_server_app.py", target / f"{PARITY_SERVER_MODULE}.py"
    )
    pyproject = target / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    text, replaced = re.subn(
        r"(?m)^serverapp\s*=.*$", f'serverapp = "{PARITY_SERVER_MODULE}:app"', text
    )
    text, added = re.subn(
        r"(?m)^\[tool\.flwr\.app\.config\]\s*$",
        '[tool.flwr.app.config]\nfedwarden-server-fn = ""\nfedwarden-result-path = ""',
        text,
    )
    if replaced != 1 or added != 1:
        raise ValueError(
            f"{app.directory / 'pyproject.toml'}: expected one serverapp = ... line and one "
            "[tool.flwr.app.config] table"
        )
    pyproject.write_text(text, encoding="utf-8")
    return target


def _run_flower(
    app: FlowerApp,
    clients: int,
    rounds: int,
    run_config: dict[str, ConfigValue],
    metric: str,
    timeout: float,
    keep_logs: bool,
    say: Progress,
) -> SideResult:
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    work = Path(tempfile.mkdtemp(prefix="fedwarden-bench-apps-flower-"))
    logs = work / "logs"
    flwr_home = work / "flwr-home"
    flwr_home.mkdir(parents=True)
    env = _runtime_flower.flower_environment(flwr_home)
    result_path = work / "result.json"
    processes = ProcessSet(marker=str(work))
    guard = MemoryGuard(processes, check=_runtime_flower.relaunch_storm(clients))
    run_id = ""
    failed = True
    try:
        bundle = _parity_flower_app(app, work / "app")
        _runtime_flower.start_deployment(
            work,
            env,
            clients,
            processes,
            guard,
            left,
            say,
            node_configs=[f"partition-id={i} num-partitions={clients}" for i in range(clients)],
        )
        overrides = work / "run-config.toml"
        settings: dict[str, ConfigValue] = {
            **run_config,
            "fedwarden-server-fn": app.server_fn,
            "fedwarden-result-path": str(result_path),
        }
        overrides.write_text(
            "".join(f"{key} = {_toml(value)}\n" for key, value in settings.items()),
            encoding="utf-8",
        )
        say(f"Flower: flwr run, {rounds} rounds of {clients} clients")
        started = time.monotonic()
        run_id = _runtime_flower.submit(env, work, bundle, overrides, logs, left)
        wait_for(
            result_path.exists,
            left(),
            f"the ServerApp of run {run_id} to finish",
            processes,
            interval=0.5,
            guard=guard,
        )
        seconds = time.monotonic() - started
        summary = json.loads(result_path.read_text(encoding="utf-8"))
        short = [r for r in summary["rounds"] if r["replies"] != clients or r["failures"]]
        if summary["status"] != "ok" or short:
            raise DeploymentError(
                f"run {run_id} did not train {rounds} rounds with all {clients} clients: "
                f"{summary['status']}, rounds {summary['rounds']}",
                processes.tails(),
            )
        with np.load(result_path.with_suffix(".npz")) as saved:
            model = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        say("Flower: evaluating the final model")
        accuracy = evaluate_model(app, model, clients, run_config, metric)
        failed = False
        return SideResult(
            FLOWER,
            "ok",
            accuracy=accuracy,
            reported={
                "by": "the app's strategy (evaluate_metrics_aggregation_fn), per round",
                "evaluations": summary["evaluations"],
            },
            seconds=seconds,
            security=_runtime_flower.SECURITY,
            pipeline="the app's strategy (its server_fn, unchanged)",
            detail=f"run {run_id}",
            log_dir=str(logs) if keep_logs else None,
        )
    except DeploymentError as exc:
        if run_id:
            _runtime_flower.save_serverapp_log(env, run_id, logs / "serverapp.log")
            exc.logs.setdefault("ServerApp (flwr log)", tail(logs / "serverapp.log"))
        return SideResult(
            FLOWER,
            "failed",
            security=_runtime_flower.SECURITY,
            detail=f"{exc} (logs kept in {logs})",
            log_dir=str(logs),
        )
    finally:
        say(f"Flower: stopping {len(processes.processes)} processes")
        processes.stop_all()
        if not failed and not keep_logs:
            shutil.rmtree(work, ignore_errors=True)


# --- the fedwarden side -----------------------------------------------------------------------


def _app_config_args(run_config: Mapping[str, ConfigValue]) -> list[str]:
    args = []
    for key, value in run_config.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        args += ["--app-config", f"{key}={text}"]
    return args


def _run_fedwarden(
    side: str,
    app: FlowerApp,
    clients: int,
    rounds: int,
    run_config: dict[str, ConfigValue],
    metric: str,
    timeout: float,
    keep_logs: bool,
    say: Progress,
) -> SideResult:
    from fedwarden.aggregator.checkpoint import load_checkpoint

    defence, pipeline = _DEFENCES[side]
    fedwarden_bin = _runtime_fedwarden.fedwarden_command()
    if fedwarden_bin is None:
        return SideResult(side, "failed", detail="the `fedwarden` command is not installed")
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    work = Path(tempfile.mkdtemp(prefix="fedwarden-bench-apps-"))
    logs, report, state = work / "logs", work / "report.jsonl", work / "state"
    processes = ProcessSet(marker=str(work))
    guard = MemoryGuard(processes)
    failed = True
    try:
        directory = _copy_app(app, work / "app")
        tls_dirs = _runtime_fedwarden.issue_certificates(work, clients)
        (port,) = free_ports(1)
        app_args = ["--app", app.client_fn, *_app_config_args(run_config)]
        say(f"{side}: the aggregator and {clients} clients")
        started = time.monotonic()
        command = [fedwarden_bin, "aggregator", "--pki-dir", str(work / "pki")]
        command += ["--listen", f"127.0.0.1:{port}", "--rounds", str(rounds)]
        command += ["--min-available", str(clients), "--min-clients", str(clients)]
        command += ["--fraction", "1.0", "--sampling", "fixed", "--seed", "0"]
        # every round waits for every client, however slow the machine
        command += ["--round-timeout", str(max(60.0, timeout)), "--defence", defence]
        command += ["--evaluation", "federated", "--checkpoint-dir", str(state)]
        command += ["--report-jsonl", str(report), "--quiet", "--json", *app_args]
        aggregator = processes.start("aggregator", command, logs / "aggregator.log", cwd=directory)
        for i, tls_dir in enumerate(tls_dirs):
            command = [fedwarden_bin, "client", "--tls-dir", str(tls_dir)]
            command += ["--server", f"127.0.0.1:{port}", *app_args]
            command += ["--client-index", str(i), "--num-clients", str(clients)]
            command += ["--give-up-after", str(max(60.0, timeout)), "--json"]
            processes.start(f"client-{i:03d}", command, logs / f"client-{i:03d}.log", cwd=directory)

        def finished() -> bool:
            events = _runtime_fedwarden.read_events(report)
            return any(e.get("event") == "training_finished" for e in events)

        wait_for(
            lambda: finished() or not aggregator.alive(),
            left(),
            f"{rounds} rounds",
            ProcessSet(processes.processes, clean_exit_ok=True),
            interval=0.5,
            guard=guard,
        )
        seconds = time.monotonic() - started
        events = _runtime_fedwarden.read_events(report)
        ended = [e for e in events if e.get("event") == "training_finished"]
        if not ended or ended[-1].get("status") != "completed":
            raise DeploymentError(
                f"the training did not complete: {ended[-1] if ended else 'no training_finished'}",
                {"aggregator": aggregator.tail(), **processes.tails(limit=2)},
            )
        done = [e for e in events if e.get("event") == "round_finished"]
        if side == FEDWARDEN_FEDAVG and any(len(e["accepted"]) != clients for e in done):
            raise DeploymentError(
                "rounds that did not aggregate every client: "
                + str({e["round"]: len(e["accepted"]) for e in done})
            )
        checkpoint = load_checkpoint(state)
        if checkpoint is None:
            raise DeploymentError(f"no checkpoint in {state}")
        say(f"{side}: evaluating the final model")
        layout = _app_layout(app, run_config)
        model = list(layout.split(checkpoint.model).values())
        accuracy = evaluate_model(app, model, clients, run_config, metric)
        failed = False
        return SideResult(
            side,
            "ok",
            accuracy=accuracy,
            reported={
                "by": "federated evaluation: the clients' reports on the previous round's "
                "model, combined robustly (median; mean with capped example counts)",
                "rounds": [
                    {
                        "round": e["round"],
                        "aggregated": len(e["accepted"]),
                        "rejected": e["rejected"],
                        "metrics": e["metrics"],
                    }
                    for e in done
                ],
            },
            seconds=seconds,
            security=_runtime_fedwarden.SECURITY,
            pipeline=pipeline,
            detail=f"updates aggregated per round {[len(e['accepted']) for e in done]}",
            log_dir=str(logs) if keep_logs else None,
        )
    except DeploymentError as exc:
        exc.logs.setdefault("aggregator", tail(logs / "aggregator.log"))
        return SideResult(
            side,
            "failed",
            security=_runtime_fedwarden.SECURITY,
            pipeline=pipeline,
            detail=f"{exc} (logs kept in {logs})",
            log_dir=str(logs),
        )
    finally:
        say(f"{side}: stopping {len(processes.processes)} processes")
        processes.stop_all()
        if not failed and not keep_logs:
            shutil.rmtree(work, ignore_errors=True)


def _app_layout(app: FlowerApp, run_config: Mapping[str, ConfigValue]) -> Any:
    """The model's layout as the aggregator takes it: the app loaded as partition 0 of 1."""
    from fedwarden.client import load_app

    loaded = load_app(
        app.client_fn,
        run_config=run_config,
        node_config={"partition-id": 0, "num-partitions": 1},
        search_path=(app.directory,),
    )
    return loaded.layout


# --- the run ----------------------------------------------------------------------------------


def run(
    app: FlowerApp,
    clients: int = 5,
    rounds: int = 10,
    app_config: Mapping[str, ConfigValue] | None = None,
    sides: Sequence[str] = SIDES,
    metric: str = "accuracy",
    timeout: float = 1800.0,
    keep_logs: bool = False,
    on_progress: Progress | None = None,
) -> AppsBenchResult:
    """Train ``app`` under every runtime in ``sides``, one after the other, and compare the
    final models' ``metric``. ``timeout`` bounds each run. A run that fails is reported as
    ``failed`` with the cause; the others still run."""
    if clients < 1 or rounds < 1:
        raise ValueError("clients and rounds must be >= 1")
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        raise ValueError(f"unknown side {unknown}; choose from {', '.join(SIDES)}")
    if FLOWER in sides:
        _runtime_flower.require_flower()
    say = on_progress or (lambda _msg: None)
    run_config: dict[str, ConfigValue] = {
        **app.run_config,
        **dict(app_config or {}),
        ROUNDS_KEY: rounds,
        MIN_CLIENTS_KEY: clients,
    }
    env = describe_environment()
    started = time.monotonic()
    results: dict[str, SideResult] = {}
    with terminate_on_sigterm():
        for side in SIDES:
            if side not in sides:
                continue
            if side == FLOWER:
                results[side] = _run_flower(
                    app, clients, rounds, run_config, metric, timeout, keep_logs, say
                )
            else:
                results[side] = _run_fedwarden(
                    side, app, clients, rounds, run_config, metric, timeout, keep_logs, say
                )
            say(f"{side}: {results[side].status} {results[side].accuracy}")

    def difference(side: str) -> float | None:
        ours, theirs = results.get(side), results.get(FLOWER)
        if ours is None or theirs is None or ours.accuracy is None or theirs.accuracy is None:
            return None
        return abs(ours.accuracy - theirs.accuracy)

    fedavg = difference(FEDWARDEN_FEDAVG)
    return AppsBenchResult(
        app=str(app.directory),
        client_fn=app.client_fn,
        server_fn=app.server_fn,
        clients=clients,
        rounds=rounds,
        run_config=run_config,
        metric=metric,
        sides=results,
        difference=fedavg,
        difference_recommended=difference(FEDWARDEN_RECOMMENDED),
        tolerance=TOLERANCE,
        passed=None if fedavg is None else fedavg <= TOLERANCE,
        method=METHOD.format(clients=clients, rounds=rounds, flwr=env.flwr, metric=metric),
        environment=env,
        elapsed_seconds=time.monotonic() - started,
    )


# --- formatting -------------------------------------------------------------------------------


def _cell(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _reported_by_round(result: AppsBenchResult) -> list[str]:
    """A table of what each runtime reported of each round's model (Flower's strategy: its
    aggregation of the clients' evaluations; fedwarden: the median of the clients' reports on
    the previous round's model, so the last model has no report of its own)."""
    metric = result.metric
    by_side: dict[str, dict[int, float]] = {}
    flower = result.sides.get(FLOWER)
    if flower is not None and flower.status == "ok":
        by_side[FLOWER] = {
            int(e["round"]): float(e["metrics"][metric])
            for e in flower.reported.get("evaluations", [])
            if metric in e["metrics"]
        }
    for name in (FEDWARDEN_FEDAVG, FEDWARDEN_RECOMMENDED):
        side = result.sides.get(name)
        if side is None or side.status != "ok":
            continue
        by_side[name] = {
            int(e["metrics"]["evaluated_round"]): float(e["metrics"][metric])
            for e in side.reported.get("rounds", [])
            if metric in e["metrics"] and e["metrics"].get("evaluated_round", 0) >= 1
        }
    if not by_side:
        return []
    names = list(by_side)
    lines = [
        f"{metric.capitalize()} of each round's model as the runtimes reported it (Flower: "
        "the app's evaluate_metrics_aggregation_fn; fedwarden: the median of the clients' "
        "reports, sent in the next round's signed updates):",
        "",
        "| round | " + " | ".join(names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for number in range(1, result.rounds + 1):
        cells = [_cell(by_side[n].get(number)) for n in names]
        lines.append(f"| {number} | " + " | ".join(cells) + " |")
    refusals = [
        f"round {e['round']}: {client}: {why['message']}"
        for name in (FEDWARDEN_FEDAVG, FEDWARDEN_RECOMMENDED)
        if name in result.sides
        for e in result.sides[name].reported.get("rounds", [])
        for client, why in e["rejected"].items()
    ]
    if refusals:
        lines += ["", "Updates the pipeline refused:", ""]
        lines += [f"- {refusal}" for refusal in refusals]
    return [*lines, ""]


def to_markdown(result: AppsBenchResult, command: str | None = None) -> str:
    """The results block of ``benchmarks/apps.md``."""
    env = result.environment
    lines = ["## Results", ""]
    if command:
        lines += ["```console", command, "```", ""]
    lines += [
        f"{result.method}. Target: the absolute difference of the final {result.metric} under "
        f"fedwarden (fedavg) and under Flower ≤ {result.tolerance:g}.",
        "",
        f"App: `{result.client_fn}` (clients), `{result.server_fn}` (Flower's ServerApp); run "
        "config "
        + ", ".join(f"`{k}={v}`" for k, v in result.run_config.items())
        + f"; {result.clients} clients, {result.rounds} rounds.",
        "",
        f"| runtime | pipeline | final {result.metric} | difference to Flower | seconds | "
        "security |",
        "|---|---|---:|---:|---:|---|",
    ]
    deltas = {
        FEDWARDEN_FEDAVG: result.difference,
        FEDWARDEN_RECOMMENDED: result.difference_recommended,
    }
    for name, side in result.sides.items():
        accuracy = _cell(side.accuracy) if side.status == "ok" else side.status
        seconds = "—" if side.seconds is None else f"{side.seconds:.0f}"
        lines.append(
            f"| {name} | {side.pipeline or '—'} | {accuracy} | {_cell(deltas.get(name))} | "
            f"{seconds} | {side.security or '—'} |"
        )
    verdict = {True: "pass", False: "FAIL", None: "n/a"}[result.passed]
    lines += ["", f"Parity (fedavg against Flower): **{verdict}**.", ""]
    for name, side in result.sides.items():
        if side.status != "ok":
            lines.append(f"- {name}: {side.status}: {side.detail.splitlines()[0]}")
    lines += _reported_by_round(result)
    lines += [
        f"Environment: {env.cpu}, {env.cpus_usable or env.cpu_count} usable CPUs, "
        f"{env.memory_gb} GiB RAM, Python {env.python}, flwr {env.flwr}, numpy {env.numpy}, "
        f"fedwarden {env.fedwarden}; load average (1, 5, 15 min) {_load(env.loadavg_start)} at "
        f"the start; {env.started_at}; {result.elapsed_seconds:.0f} s in all.",
        "",
    ]
    return "\n".join(lines)


def _load(value: Sequence[float] | None) -> str:
    return "unknown" if value is None else "/".join(f"{v:.1f}" for v in value)
