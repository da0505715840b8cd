"""``fedwarden privacy``: reference values through the command, JSON, help, clean errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from fedwarden.commands.privacy import privacy


def _run(args: list[str]) -> Result:
    return CliRunner().invoke(privacy, args)


# dp-accounting 0.6.0, δ = 1e-5, Poisson sampling: (q, σ, T) -> (ε by PLD, ε by RDP)
REFERENCE = [
    ("0.3", "1.1", "100", 19.23, 21.00),
    ("0.1", "1.0", "100", 7.05, 7.90),
    ("0.3", "5.0", "100", 2.53, 2.76),
]


@pytest.mark.parametrize(("q", "sigma", "rounds", "pld", "rdp"), REFERENCE)
def test_reference_values_through_the_command(
    q: str, sigma: str, rounds: str, pld: float, rdp: float
) -> None:
    for accountant, expected in (("pld", pld), ("rdp", rdp)):
        result = _run(
            [
                "epsilon",
                "--sample-rate", q,
                "--noise-multiplier", sigma,
                "--rounds", rounds,
                "--delta", "1e-5",
                "--accountant", accountant,
                "--json",
            ]
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert round(payload["epsilon"], 2) == expected
        assert payload["accountant"] == accountant
        assert payload["neighbouring_relation"] == "add-remove"
        assert payload["sampling"] == "poisson"


def test_the_human_output_is_a_table_with_epsilon() -> None:
    result = _run(["epsilon", "-q", "0.3", "-s", "5.0", "-T", "100"])
    assert result.exit_code == 0, result.output
    assert "Privacy spent" in result.output
    assert "2.5324" in result.output
    assert "add-remove" in result.output


def test_noise_inverts_epsilon() -> None:
    result = _run(["noise", "--target-epsilon", "2.5324", "-q", "0.3", "-T", "100", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["noise_multiplier"] == pytest.approx(5.0, rel=2e-3)
    assert payload["epsilon"] <= 2.5324
    table = _run(["noise", "-e", "2.5324", "-q", "0.3", "-T", "100"])
    assert table.exit_code == 0, table.output
    assert "noise multiplier σ" in table.output


def test_fixed_size_sampling_with_rdp() -> None:
    args = ["epsilon", "-q", "0.1", "-s", "2.0", "-T", "10", "--sampling", "fixed"]
    result = _run([*args, "--population", "100", "--accountant", "rdp", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["neighbouring_relation"] == "replace-one"
    assert payload["population"] == 100
    assert payload["epsilon"] > 0


def test_help_explains_the_terms() -> None:
    for command in ("epsilon", "noise"):
        result = _run([command, "--help"])
        assert result.exit_code == 0
        for term in ("sample rate q", "noise multiplier σ", "δ, ε", "client level", "pld", "rdp"):
            assert term in result.output
    assert "epsilon" in _run(["--help"]).output


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("epsilon -q 1.5 -s 1 -T 3", "--sample-rate"),
        ("epsilon -q -0.1 -s 1 -T 3", "--sample-rate"),
        ("epsilon -q 0 -s 1 -T 3", "--sample-rate"),
        ("epsilon -q 0.1 -s 0 -T 3", "--noise-multiplier"),
        ("epsilon -q 0.1 -s 1 -T 0", "--rounds"),
        ("epsilon -q 0.1 -s 1 -T 3 -d 1", "--delta"),
        ("epsilon -q 0.1 -s 1 -T 3 -d 1.5", "--delta"),
        ("epsilon -q 0.1 -s 1 -T 3 --accountant gdp", "--accountant"),
        ("epsilon -q 0.1 -s 1 -T 3 --sampling fixed", "--population"),
        ("epsilon -q 0.1 -s 1 -T 3 --sampling fixed -N 100", "use --accountant rdp"),
        (
            "epsilon -q 0.3 -s 1 -T 3 --sampling fixed -N 7 --accountant rdp",
            "whole number of clients",
        ),
        ("epsilon -q 0.3 -s 1 -T 3 -N 7", "only applies"),
        ("noise -e -1 -q 0.3 -T 3", "--target-epsilon"),
        ("epsilon -q 0.1 -T 3", "--noise-multiplier"),
    ],
)
def test_bad_input_is_a_clean_error(command: str, message: str) -> None:
    result = _run(command.split())
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, ValueError | TypeError | AssertionError)
