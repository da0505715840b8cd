"""``fedwarden privacy``: the privacy calculator (ε for a noise level, noise for a target ε)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from fedwarden.commands._common import console, emit_json, json_option, user_errors
from fedwarden.pipeline.accounting import (
    Accountant,
    accountant_names,
    calibrate_noise_multiplier,
    get_accountant,
)

_TERMS = """
\b
Terms:
  sample rate q       fraction of the client population in each round: with
                      Poisson sampling each client joins independently with
                      probability q; with fixed sampling every round draws
                      exactly q·N clients without replacement
  noise multiplier σ  Gaussian noise standard deviation divided by the L2
                      sensitivity of the aggregate (for a sum of updates
                      clipped to C: noise std σ·C)
  rounds T            rounds (compositions) accounted
  δ, ε                (ε, δ)-DP at client level: whether or not any one
                      client took part (Poisson) or whatever its data
                      (fixed), the released models' distribution changes by
                      at most a factor e^ε, except with probability δ;
                      choose δ well below 1 / population
  accountant          pld: privacy loss distributions (tightest); rdp: Rényi
                      DP (looser, a cross-check). Both from Google's
                      dp-accounting.
"""

_Q = click.FloatRange(0.0, 1.0, min_open=True)
_POSITIVE = click.FloatRange(0.0, min_open=True)
_DELTA = click.FloatRange(0.0, 1.0, min_open=True, max_open=True)


def _accounting_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--sample-rate", "-q", type=_Q, required=True, help="q, in (0, 1]."),
            click.option(
                "--rounds", "-T", type=click.IntRange(min=1), required=True, help="T >= 1."
            ),
            click.option(
                "--delta",
                "-d",
                type=_DELTA,
                default=1e-5,
                show_default=True,
                help="δ, in (0, 1).",
            ),
            click.option(
                "--accountant",
                type=click.Choice(accountant_names()),
                default="pld",
                show_default=True,
                help="Privacy accountant.",
            ),
            click.option(
                "--sampling",
                type=click.Choice(["poisson", "fixed"]),
                default="poisson",
                show_default=True,
                help="poisson: add/remove neighbours; fixed: fixed-size cohorts without "
                "replacement, replace-one neighbours (needs --population; rdp only).",
            ),
            click.option(
                "--population",
                "-N",
                type=click.IntRange(min=1),
                default=None,
                help="N, the number of clients (required with --sampling fixed).",
            ),
        ]
    ):
        f = option(f)
    return f


def _check_sampling(
    accountant: str, sampling: str, population: int | None, sample_rate: float
) -> None:
    if sampling == "fixed" and population is None:
        raise click.BadParameter(
            "fixed-size sampling needs the population size", param_hint="'--population'"
        )
    if sampling == "fixed" and accountant == "pld":
        raise click.BadParameter(
            "the PLD accountant of dp-accounting has no event for fixed-size sampling without "
            "replacement; use --accountant rdp with --sampling fixed",
            param_hint="'--accountant'",
        )
    if sampling == "poisson" and population is not None:
        raise click.BadParameter(
            "--population only applies to --sampling fixed (Poisson sampling needs only q)",
            param_hint="'--population'",
        )
    if population is not None:
        cohort = sample_rate * population
        if abs(cohort - round(cohort)) > 1e-6 * max(1.0, cohort) or round(cohort) < 1:
            raise click.BadParameter(
                f"q × N must be a whole number of clients >= 1, got {sample_rate} × "
                f"{population} = {cohort:g}",
                param_hint="'--sample-rate'",
            )


def _accountant(name: str, sampling: str, population: int | None) -> Accountant:
    kwargs: dict[str, Any] = {"sampling": sampling}
    if population is not None:
        kwargs["population"] = population
    return get_accountant(name, **kwargs)


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    return table


def _common_rows(payload: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("accountant", payload["accountant"]),
        ("sampling", payload["sampling"]),
        ("neighbouring relation", payload["neighbouring_relation"]),
        ("sample rate q", f"{payload['sample_rate']:g}"),
    ]
    if payload["population"] is not None:
        rows.append(("population N", str(payload["population"])))
    rows += [("rounds T", str(payload["rounds"])), ("δ", f"{payload['delta']:g}")]
    return rows


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def privacy() -> None:
    """Privacy calculator: ε for a noise multiplier, or the noise for a target ε.

    Both use the same accountants as a training (dp-accounting), so the numbers shown are the
    ones the aggregator enforces.
    """


@privacy.command(epilog=_TERMS)
@click.option("--noise-multiplier", "-s", type=_POSITIVE, required=True, help="σ > 0.")
@_accounting_options
@json_option
def epsilon(
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    accountant: str,
    sampling: str,
    population: int | None,
    as_json: bool,
) -> None:
    """ε spent by T rounds at sample rate q with noise multiplier σ, at δ.

    Example (ε ≈ 19.23 with pld, 21.00 with rdp):

        fedwarden privacy epsilon -q 0.3 -s 1.1 -T 100 -d 1e-5
    """
    _check_sampling(accountant, sampling, population, sample_rate)
    with user_errors():
        counter = _accountant(accountant, sampling, population)
        counter.step(noise_multiplier, sample_rate, rounds)
        value = counter.epsilon(delta)
    payload = {
        "accountant": accountant,
        "sampling": sampling,
        "neighbouring_relation": counter.relation,
        "population": population,
        "sample_rate": sample_rate,
        "noise_multiplier": noise_multiplier,
        "rounds": rounds,
        "delta": delta,
        "epsilon": value,
    }
    if as_json:
        emit_json(payload)
        return
    rows = _common_rows(payload)
    rows.insert(4 if population is None else 5, ("noise multiplier σ", f"{noise_multiplier:g}"))
    rows.append(("ε", f"[bold green]{value:.4f}[/]"))
    console.print(_table("Privacy spent", rows))


@privacy.command(epilog=_TERMS)
@click.option("--target-epsilon", "-e", type=_POSITIVE, required=True, help="The ε budget, > 0.")
@_accounting_options
@json_option
def noise(
    target_epsilon: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    accountant: str,
    sampling: str,
    population: int | None,
    as_json: bool,
) -> None:
    """The smallest noise multiplier σ with which T rounds at sample rate q stay within ε.

    Example (σ ≈ 1.10 with pld):

        fedwarden privacy noise -e 19.23 -q 0.3 -T 100 -d 1e-5
    """
    _check_sampling(accountant, sampling, population, sample_rate)
    with user_errors():
        if not as_json:
            with console.status("calibrating the noise multiplier…"):
                sigma = calibrate_noise_multiplier(
                    target_epsilon, delta, sample_rate, rounds, accountant, sampling, population
                )
        else:
            sigma = calibrate_noise_multiplier(
                target_epsilon, delta, sample_rate, rounds, accountant, sampling, population
            )
        counter = _accountant(accountant, sampling, population)
        counter.step(sigma, sample_rate, rounds)
        reached = counter.epsilon(delta)
    payload = {
        "accountant": accountant,
        "sampling": sampling,
        "neighbouring_relation": counter.relation,
        "population": population,
        "sample_rate": sample_rate,
        "target_epsilon": target_epsilon,
        "rounds": rounds,
        "delta": delta,
        "noise_multiplier": sigma,
        "epsilon": reached,
    }
    if as_json:
        emit_json(payload)
        return
    rows = _common_rows(payload)
    rows.insert(0, ("target ε", f"{target_epsilon:g}"))
    rows += [
        ("noise multiplier σ", f"[bold green]{sigma:.4f}[/]"),
        ("ε at that σ", f"{reached:.4f}"),
    ]
    console.print(_table("Noise for a privacy budget", rows))
