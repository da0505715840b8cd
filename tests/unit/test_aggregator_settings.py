"""``AggregatorSettings``, the operator→aggregator contract, cannot drift from the command it
configures: every setting is an option of ``fedwarden aggregator`` with the same choices, and
every option is either a setting, on the Job's command line, or named below as one the operator
leaves alone (with the reason)."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import click
import pytest

from fedwarden.api import FederatedTraining
from fedwarden.api.aggregator_config import AggregatorSettings
from fedwarden.commands.aggregator import aggregator as aggregator_command
from fedwarden.resources import aggregator
from fedwarden.resources.names import Owner

OWNER = Owner("FederatedTraining", "mnist", "team-a", "uid-1")
OPTIONS = {p.name: p for p in aggregator_command.params if p.name}

#: settings whose options the app interface adds to the command (issue 12, items 1, 2 and 5,
#: built on other branches): the first test fails once they exist, to empty this set
AWAITING_OPTIONS: set[str] = set()

#: options of the command that the operator does not set, and why
NOT_FROM_THE_OPERATOR = {
    "config": "the settings file itself",
    "evaluation": "its default fits: the built-in task's test set at the aggregator, and "
    "federated evaluation for an app (the aggregator has no data)",
    "pki_dir": "a local CA directory; a pod has --tls-dir",
    "cert": "with --pki-dir or alone, outside a cluster",
    "key": "with --pki-dir or alone, outside a cluster",
    "ca": "with --pki-dir or alone, outside a cluster",
    "kubeconfig": "credentials outside the cluster; a pod has its service account",
    "seed": "client sampling from the OS CSPRNG; seeding is for tests",
    "noise_seed": "DP noise from the OS CSPRNG; seeding is for tests",
    "training_uid": "the training's SPIFFE ID, read from the CA",
    "num_parameters": "a zero model for tests; a training has a task or an app",
    "chunk_kib": "transport tuning: the defaults fit",
    "max_update_mib": "transport tuning: the default is the model's size",
    "max_downloads_per_round": "FL04 rate limit: the default",
    "stall_timeout": "transport tuning: the defaults fit",
    "poll_timeout": "transport tuning: the defaults fit",
    "as_json": "the pod's report is its status and report.jsonl",
}


def _spec(task: dict[str, Any], **spec: Any) -> Any:
    return FederatedTraining.model_validate({"spec": {"rounds": 5, "task": task, **spec}}).spec


BUILTIN = _spec({"builtin": "digits-mlp"})
APP = _spec({"app": {"module": "site.app:client_fn", "image": "registry.example/app:1"}})


def _job_options(spec: Any) -> set[str]:
    """The options on the aggregator Job's command line, by their Python names."""
    pod = aggregator.job(OWNER, spec, config_hash="h")["spec"]["template"]["spec"]
    flags = {arg for arg in pod["containers"][0]["command"] if arg.startswith("--")}
    by_flag = {opt: p.name for p in OPTIONS.values() for opt in p.opts}
    return {by_flag.get(flag, flag) for flag in flags}


def test_every_setting_is_an_option_of_the_command() -> None:
    missing = set(AggregatorSettings.model_fields) - set(OPTIONS)
    assert missing == AWAITING_OPTIONS, (
        "settings without an option (or options that have landed: remove them from "
        f"AWAITING_OPTIONS): {missing ^ AWAITING_OPTIONS}"
    )


def test_every_option_is_a_setting_on_the_command_line_or_left_alone_for_a_reason() -> None:
    job_line = _job_options(BUILTIN) | _job_options(APP)
    accounted = set(AggregatorSettings.model_fields) | job_line | set(NOT_FROM_THE_OPERATOR)
    assert set(OPTIONS) - accounted == set(), "a new option: a setting, or say why it is not"
    # the Job's command line uses options that exist (those awaited aside)
    assert job_line - set(OPTIONS) <= {"--initial-model", "--output-model"}
    assert not job_line & (set(NOT_FROM_THE_OPERATOR) - {"config"})
    required = {name for name, p in OPTIONS.items() if p.required}
    assert required <= set(AggregatorSettings.model_fields)


def _literal_values(annotation: Any) -> set[Any]:
    """The values of the ``Literal`` inside ``X | None``."""
    values: set[Any] = set()
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            values |= set(typing.get_args(arg))
        elif isinstance(arg, types.UnionType) or typing.get_origin(arg) is typing.Union:
            values |= _literal_values(arg)
    return values


@pytest.mark.parametrize(
    "name", [n for n in AggregatorSettings.model_fields if n in OPTIONS], ids=str
)
def test_a_setting_takes_what_its_option_takes(name: str) -> None:
    option = OPTIONS[name]
    annotation = AggregatorSettings.model_fields[name].annotation
    if isinstance(option.type, click.Choice):
        assert _literal_values(annotation) == set(option.type.choices)
    # repeatable KEY=VALUE options are mappings in the file
    assert option.multiple == (typing.get_origin(typing.get_args(annotation)[0]) is dict)


RANGED = [
    name
    for name in AggregatorSettings.model_fields
    if name in OPTIONS and isinstance(OPTIONS[name].type, (click.IntRange, click.FloatRange))
]


def _probes(kind: click.IntRange | click.FloatRange) -> list[float]:
    """Each bound, and just inside and outside it."""
    step = 1 if isinstance(kind, click.IntRange) else 1e-6
    bounds = [b for b in (kind.min, kind.max) if b is not None]
    return [b + d for b in bounds for d in (-step, 0, step)]


def _option_takes(name: str, value: float) -> bool:
    try:
        OPTIONS[name].type.convert(value, None, None)
    except click.BadParameter:
        return False
    return True


def _setting_takes(name: str, value: float) -> bool:
    try:
        AggregatorSettings.parse({name: value})
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", RANGED, ids=str)
def test_a_setting_has_its_options_range(name: str) -> None:
    probes = _probes(OPTIONS[name].type)  # type: ignore[arg-type]
    for value in probes:
        assert _setting_takes(name, value) == _option_takes(name, value), value


def test_the_config_map_is_the_settings() -> None:
    spec = _spec(
        {"builtin": "digits-mlp", "modelSeed": 3},
        aggregation={"method": "trimmed-mean", "beta": 0.2},
        privacy={"mode": "central", "targetEpsilon": 1.0},
        selection={"sampling": "poisson", "fraction": 0.5},
    )
    data = json.loads(aggregator.config_map(OWNER, spec, population=10)["data"]["aggregator.json"])
    settings = AggregatorSettings.parse(data)
    assert settings == aggregator.aggregator_settings(OWNER, spec, population=10)
    assert data["agg_params"] == {"beta": 0.2}
    assert data["kubernetes_status"] == "team-a/mnist"
    assert data["target_epsilon"] == 1.0
    assert (data["task"], data["model_seed"]) == ("digits-mlp", 3)
    assert "data_seed" not in data  # unset: the command's default
    assert set(data) <= set(OPTIONS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rounds": 2, "round_timeout_s": 3}, "unknown key 'round_timeout_s'; the keys are: "),
        ({"rounds": 0}, "rounds: Input should be greater than or equal to 1"),
        ({"dp": "maybe"}, "dp: Input should be 'none', 'central', 'local' or 'record'"),
        ({"aggregator": "teleport"}, "aggregator: Input should be 'fedavg'"),
        ({"agg_params": ["f=1"]}, "agg_params: Input should be a valid dictionary"),
        ({"kubernetes_status": "mnist"}, "is not NAMESPACE/NAME"),
        ({"app": "site.app"}, "app: String should match pattern"),
        ({"app_config": {"a=b": "c"}}, "app_config.a=b.[key]: String should match pattern"),
        ({"fraction": 1.5, "delta": 0}, "fraction: Input should be less than or equal to 1; "
         "delta: Input should be greater than 0"),
    ],
)  # fmt: skip
def test_a_bad_key_or_value_is_one_line_naming_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"^[^\n]*$") as error:  # one line
        AggregatorSettings.parse(data)
    assert message in str(error.value)
