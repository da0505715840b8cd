"""The pipeline options (``--defence``, ``--aggregator``, ``--clipping``, ``--dp``...) are one
set of flags for ``fedwarden simulate`` and ``fedwarden aggregator``: the same flags build the
same :class:`PipelineConfig` in both commands, from the command line and, for the aggregator,
from its ``--config`` file (the operator's ConfigMap)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import click
import numpy as np
import pytest

from fedwarden.commands import aggregator as aggregator_command
from fedwarden.commands import simulate as simulate_command
from fedwarden.pipeline.errors import UnsoundPrivacyError
from fedwarden.pipeline.round import (
    ClippingConfig,
    FreeRiderConfig,
    Pipeline,
    PipelineConfig,
    PrivacyConfig,
)

ROUNDS = 4
SAMPLE_RATE = 0.5
# a simulation and a training that both sample each of 10 clients with probability 1/2
SIMULATION = ["--rounds", str(ROUNDS), "--clients", "10", "--clients-per-round", "5"]
TRAINING = ["--rounds", str(ROUNDS), "--fraction", str(SAMPLE_RATE), "--population", "10",
            "--num-parameters", "8", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedwarden.pki import TrainingPKI, TrainingRef

    pki = TrainingPKI.init(tmp_path_factory.mktemp("pki") / "ca", TrainingRef("team-a", "mnist"))
    pki.issue_server(["localhost"], ["127.0.0.1"], keep_key=True)
    return pki.dir.root


def simulated(flags: list[str]) -> PipelineConfig:
    """The pipeline ``fedwarden simulate`` runs with these flags."""
    options = simulate_command.simulate.make_context("simulate", [*SIMULATION, *flags]).params
    pipeline: PipelineConfig = simulate_command._build_config(options).pipeline
    return pipeline


def trained(flags: list[str], pki_dir: Path) -> PipelineConfig:
    """The pipeline of the aggregator ``fedwarden aggregator`` builds with these flags."""
    args = [*TRAINING, "--pki-dir", str(pki_dir), *flags]
    options = aggregator_command.aggregator.make_context("aggregator", args).params
    pipeline: PipelineConfig = aggregator_command._build(options).pipeline.config
    return pipeline


def dp(
    mode: Literal["central", "local"] = "central",
    *,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    delta: float = 1e-5,
    accountant: str = "pld",
) -> PrivacyConfig:
    """The privacy configuration both commands should build for the run above."""
    return PrivacyConfig(
        mode=mode,
        noise_multiplier=noise_multiplier,
        target_epsilon=target_epsilon,
        delta=delta,
        accountant=accountant,
        rounds=ROUNDS,
        sample_rate=SAMPLE_RATE,
        sampling="poisson",
    )


RECOMMENDED = PipelineConfig.recommended()
DP_FEDAVG = PipelineConfig.recommended(dp(noise_multiplier=1.0))
PLAIN = PipelineConfig.plain_fedavg()

CASES = {
    "recommended": ([], RECOMMENDED),
    "central DP: the DP-FedAvg recommendation": (
        ["--dp", "central", "--noise-multiplier", "1.0"],
        DP_FEDAVG,
    ),
    "central DP calibrated for ε over the run's rounds and sample rate": (
        ["--dp", "central", "--target-epsilon", "2", "--delta", "1e-6", "--accountant", "rdp"],
        PipelineConfig.recommended(dp(target_epsilon=2.0, delta=1e-6, accountant="rdp")),
    ),
    "local DP keeps the robust recommendation": (
        ["--dp", "local", "--noise-multiplier", "0.5"],
        dataclasses.replace(RECOMMENDED, privacy=dp("local", noise_multiplier=0.5)),
    ),
    "another aggregator starts from no parameters": (
        ["--aggregator", "trimmed-mean", "--agg-param", "beta=0.1"],
        dataclasses.replace(
            RECOMMENDED, aggregator="trimmed-mean", aggregator_params={"beta": 0.1}
        ),
    ),
    "parameters alone merge over the defence's": (
        ["--agg-param", "block_size=32"],
        dataclasses.replace(
            RECOMMENDED, aggregator_params={**RECOMMENDED.aggregator_params, "block_size": 32}
        ),
    ),
    "the defence's own aggregator keeps its parameters": (
        ["--aggregator", "block-dnc"],
        RECOMMENDED,
    ),
    "a named aggregator under central DP keeps the recommended tests": (
        ["--dp", "central", "--noise-multiplier", "1.0", "--aggregator", "median"],
        dataclasses.replace(
            RECOMMENDED, aggregator="median", aggregator_params={}, privacy=dp(noise_multiplier=1.0)
        ),
    ),
    "the recommended aggregator named under central DP is the non-private recommendation": (
        ["--dp", "central", "--noise-multiplier", "1.0", "--aggregator", "block-dnc"],
        dataclasses.replace(RECOMMENDED, privacy=dp(noise_multiplier=1.0)),
    ),
    "aggregator parameters alone under central DP stay on DP-FedAvg": (
        ["--dp", "central", "--noise-multiplier", "1.0", "--agg-param", "preaggregation=nnm"],
        dataclasses.replace(DP_FEDAVG, aggregator_params={"preaggregation": "nnm"}),
    ),
    "clipping overrides replace only their fields": (
        ["--clip-norm", "2", "--clip-quantile", "0.8"],
        dataclasses.replace(
            RECOMMENDED,
            clipping=ClippingConfig(mode="adaptive", clip_norm=2.0, target_quantile=0.8),
        ),
    ),
    "free-rider tests and strikes": (
        ["--no-free-rider-detection", "--strikes-to-ban", "5"],
        dataclasses.replace(
            RECOMMENDED, free_riders=FreeRiderConfig(enabled=False), strikes_to_ban=5
        ),
    ),
    "no defence": (["--defence", "none"], PLAIN),
    "no defence, fixed clipping and central DP": (
        ["--defence", "none", "--clipping", "fixed", "--dp", "central", "--noise-multiplier", "1"],
        dataclasses.replace(
            PLAIN,
            clipping=dataclasses.replace(PLAIN.clipping, mode="fixed"),
            privacy=dp(noise_multiplier=1.0),
        ),
    ),
}


@pytest.mark.parametrize(("flags", "expected"), CASES.values(), ids=CASES.keys())
def test_the_same_flags_build_the_same_pipeline_in_both_commands(
    flags: list[str], expected: PipelineConfig, pki_dir: Path
) -> None:
    assert simulated(flags) == expected
    assert trained(flags, pki_dir) == expected


def first_round_noise(config: PipelineConfig) -> float:
    """The standard deviation of the noise the real pipeline adds to a first round of 5 of
    the 10 clients (the expected cohort); building the pipeline checks that its sensitivity
    bound is sound."""
    pipeline = Pipeline(config, dim=8, population=10, seed=0)
    updates = np.random.default_rng(0).normal(scale=0.1, size=(5, 8)).astype(np.float32)
    return pipeline.run_round(updates, [f"site-{i}" for i in range(5)]).noise_std


@pytest.mark.parametrize("aggregator", ["block-dnc", "median", "geometric-median"])
def test_a_named_aggregator_under_central_dp_keeps_the_tests_with_its_own_sound_noise(
    aggregator: str, pki_dir: Path
) -> None:
    flags = ["--dp", "central", "--noise-multiplier", "1.0"]
    named = [*flags, "--aggregator", aggregator]
    chosen_by_fedwarden = simulated(flags)
    assert chosen_by_fedwarden == trained(flags, pki_dir) == DP_FEDAVG
    robust = simulated(named)
    assert robust == trained(named, pki_dir)
    assert robust.aggregator == aggregator
    assert robust.validation == RECOMMENDED.validation  # the outlier test
    assert robust.free_riders == RECOMMENDED.free_riders
    assert robust.privacy == dp(noise_multiplier=1.0)
    # DP-FedAvg's sensitivity is C/n for the expected cohort n = 5; a robust rule's does not
    # shrink with n (about 2C), so the same σ means at least 2n = 10 times the noise
    assert first_round_noise(robust) / first_round_noise(chosen_by_fedwarden) > 10 - 1e-9


def test_fedavg_named_under_central_dp_keeps_the_tests_and_is_refused(pki_dir: Path) -> None:
    # leaving --aggregator out is how to ask for DP-FedAvg
    flags = ["--dp", "central", "--noise-multiplier", "1.0", "--aggregator", "fedavg"]
    assert simulated(flags).validation == RECOMMENDED.validation
    with pytest.raises(UnsoundPrivacyError, match="fedavg under add/remove"):
        trained(flags, pki_dir)


def test_the_config_file_builds_the_pipeline_its_flags_do(tmp_path: Path, pki_dir: Path) -> None:
    config = tmp_path / "aggregator.json"
    config.write_text(
        json.dumps(
            {
                "dp": "central",
                "noise_multiplier": 1.0,
                "aggregator": "median",
                "clip_quantile": 0.8,
                "agg_params": {"preaggregation": "nnm"},
            }
        )
    )
    flags = ["--dp", "central", "--noise-multiplier", "1.0", "--aggregator", "median",
             "--clip-quantile", "0.8", "--agg-param", "preaggregation=nnm"]  # fmt: skip
    from_file = trained(["--config", str(config)], pki_dir)
    assert from_file == trained(flags, pki_dir) == simulated(flags)
    assert from_file.clipping.target_quantile == 0.8
    assert from_file.aggregator_params == {"preaggregation": "nnm"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target-epsilon", "1"], "need --dp central, local or record"),
        (["--noise-multiplier", "1"], "need --dp central, local or record"),
        (["--dp", "central"], "noise_multiplier or a target_epsilon"),
    ],
)
def test_the_same_flags_are_refused_by_both_commands(
    flags: list[str], message: str, pki_dir: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        simulated(flags)
    with pytest.raises(ValueError, match=message):
        trained(flags, pki_dir)


def test_an_aggregator_parameter_must_be_key_value(pki_dir: Path) -> None:
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        simulated(["--agg-param", "beta"])
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        trained(["--agg-param", "beta"], pki_dir)


def test_only_the_aggregator_needs_poisson_sampling_for_dp(pki_dir: Path) -> None:
    flags = ["--dp", "central", "--noise-multiplier", "1.0", "--sampling", "fixed"]
    assert simulated(flags).privacy.sampling == "fixed"  # the simulation knows its population
    with pytest.raises(ValueError, match="--dp central needs --sampling poisson"):
        trained(flags, pki_dir)
    # record-level DP is each site's own: the aggregator's sampling does not enter it
    record = ["--dp", "record", "--target-epsilon", "1", "--sampling", "fixed"]
    assert trained(record, pki_dir).privacy.mode == "record"
