"""Accounting: reference values, state round trips, budget enforcement, calibration."""

from __future__ import annotations

import json
import math
from typing import Any

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant

from fedwarden.pipeline.accounting import (
    Accountant,
    PLDAccountant,
    PrivacyBudget,
    RDPAccountant,
    accountant_names,
    calibrate_noise_multiplier,
    get_accountant,
    register_accountant,
)
from fedwarden.pipeline.errors import PipelineError, PrivacyBudgetExhaustedError

DELTA = 1e-5

# dp-accounting 0.6.0, δ = 1e-5, Poisson sampling: (q, σ, T) -> (ε by PLD, ε by RDP)
REFERENCE = [
    (0.3, 1.1, 100, 19.23, 21.00),
    (0.1, 1.0, 100, 7.05, 7.90),
    (0.3, 5.0, 100, 2.53, 2.76),
]


@pytest.mark.parametrize(("q", "sigma", "rounds", "pld", "rdp"), REFERENCE)
def test_reference_values(q: float, sigma: float, rounds: int, pld: float, rdp: float) -> None:
    for name, expected in (("pld", pld), ("rdp", rdp)):
        accountant = get_accountant(name)
        accountant.step(sigma, q, rounds)
        assert round(accountant.epsilon(DELTA), 2) == expected
    # PLD is the tighter upper bound
    assert pld < rdp


def test_registry_names_and_errors() -> None:
    assert {"pld", "rdp"} <= set(accountant_names())
    assert isinstance(get_accountant("pld"), PLDAccountant)
    assert isinstance(get_accountant("rdp"), RDPAccountant)
    with pytest.raises(ValueError, match=r"unknown accountant 'gdp'; choose one of: .*pld, rdp"):
        get_accountant("gdp")
    with pytest.raises(ValueError, match="already registered"):
        register_accountant("pld", RDPAccountant)
    with pytest.raises(ValueError, match="not a subclass"):
        register_accountant("dict", dict)  # type: ignore[arg-type]


def test_a_registered_accountant_is_available_by_name() -> None:
    class CoarsePLD(PLDAccountant):
        name = "pld-coarse"

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(value_discretization_interval=1e-2, **kwargs)

    register_accountant("pld-coarse", CoarsePLD)
    register_accountant("pld-coarse", CoarsePLD)  # idempotent
    accountant = get_accountant("pld-coarse")
    accountant.step(5.0, 0.3, 10)
    assert accountant.epsilon(DELTA) >= get_accountant("pld").epsilon(DELTA)


@pytest.mark.parametrize("name", ["pld", "rdp"])
def test_state_round_trip_equals_an_uninterrupted_run(name: str) -> None:
    first = get_accountant(name)
    first.step(5.0, 0.3, 40)
    state = json.loads(json.dumps(first.state_dict()))  # JSON-serialisable
    resumed = get_accountant(name)
    resumed.load_state_dict(state)
    resumed.step(5.0, 0.3, 60)
    uninterrupted = get_accountant(name)
    uninterrupted.step(5.0, 0.3, 100)
    assert resumed.history == uninterrupted.history == ((5.0, 0.3, 100),)
    assert resumed.epsilon(DELTA) == uninterrupted.epsilon(DELTA)


def test_one_step_at_a_time_is_the_same_as_all_at_once() -> None:
    stepwise = get_accountant("rdp")
    for _ in range(25):
        stepwise.step(2.0, 0.05)
    at_once = get_accountant("rdp")
    at_once.step(2.0, 0.05, 25)
    assert stepwise.epsilon(DELTA) == at_once.epsilon(DELTA)


def test_a_history_can_be_re_accounted_by_the_other_accountant() -> None:
    pld = get_accountant("pld")
    pld.step(5.0, 0.3, 100)
    rdp = get_accountant("rdp")
    rdp.load_state_dict(pld.state_dict())
    assert round(rdp.epsilon(DELTA), 2) == 2.76


def test_mixed_histories_compose() -> None:
    accountant = get_accountant("rdp")
    accountant.step(1.0, 0.1, 50)
    accountant.step(2.0, 0.05, 50)
    assert accountant.history == ((1.0, 0.1, 50), (2.0, 0.05, 50))
    direct = RdpAccountant()
    direct.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.0)), 50)
    direct.compose(
        dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(2.0)), 50
    )
    assert accountant.epsilon(DELTA) == pytest.approx(direct.get_epsilon(DELTA), rel=1e-12)


def test_loading_refuses_another_sampling_scheme_or_format() -> None:
    fixed = get_accountant("rdp", sampling="fixed", population=100)
    fixed.step(2.0, 0.1, 3)
    with pytest.raises(ValueError, match="sampling='fixed'"):
        get_accountant("rdp").load_state_dict(fixed.state_dict())
    with pytest.raises(ValueError, match="format"):
        get_accountant("rdp").load_state_dict({"history": []})
    bad = get_accountant("rdp").state_dict()
    bad["history"] = [[0.0, 0.1, 1]]
    with pytest.raises(ValueError, match="noise_multiplier"):
        get_accountant("rdp").load_state_dict(bad)


@pytest.mark.parametrize("name", ["pld", "rdp"])
def test_epsilon_grows_with_every_round(name: str) -> None:
    accountant = get_accountant(name)
    assert accountant.epsilon(DELTA) == 0.0
    previous = 0.0
    for _ in range(3):
        accountant.step(5.0, 0.3, 5)
        current = accountant.epsilon(DELTA)
        assert current > previous
        previous = current


def test_epsilon_after_does_not_change_the_state() -> None:
    accountant = get_accountant("rdp")
    accountant.step(2.0, 0.1, 10)
    before = accountant.epsilon(DELTA)
    after = accountant.epsilon_after(2.0, 0.1, DELTA, steps=5)
    assert after > before
    assert accountant.epsilon(DELTA) == before
    assert accountant.steps == 10


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: a.step(0.0, 0.1), "noise_multiplier"),
        (lambda a: a.step(math.inf, 0.1), "noise_multiplier"),
        (lambda a: a.step(1.0, 0.0), "sample_rate"),
        (lambda a: a.step(1.0, 1.5), "sample_rate"),
        (lambda a: a.step(1.0, 0.1, 0), "steps"),
        (lambda a: a.step(1.0, 0.1, 2.5), "steps"),
        (lambda a: a.epsilon(0.0), "delta"),
        (lambda a: a.epsilon(1.0), "delta"),
    ],
)
def test_bad_parameters_say_what_is_allowed(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(get_accountant("rdp"))


# --- sampling schemes --------------------------------------------------------------------------


def test_poisson_is_add_remove_and_fixed_is_replace_one() -> None:
    assert get_accountant("pld").relation == "add-remove"
    assert get_accountant("rdp").relation == "add-remove"
    assert get_accountant("rdp", sampling="fixed", population=10).relation == "replace-one"


def test_pld_refuses_fixed_size_sampling_and_points_to_rdp() -> None:
    with pytest.raises(ValueError, match="use the rdp accountant for sampling='fixed'"):
        get_accountant("pld", sampling="fixed", population=100)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampling": "fixed"}, "population size"),
        ({"sampling": "fixed", "population": 0}, "population size"),
        ({"sampling": "stratified"}, "sampling must be one of poisson, fixed"),
    ],
)
def test_bad_sampling_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_accountant("rdp", **kwargs)


def test_fixed_size_cohorts_must_be_whole_clients() -> None:
    accountant = get_accountant("rdp", sampling="fixed", population=7)
    with pytest.raises(ValueError, match="whole number of clients"):
        accountant.step(1.0, 0.3)
    accountant.step(1.0, 3 / 7)


def test_fixed_sampling_uses_sampling_without_replacement_under_replace_one() -> None:
    ours = get_accountant("rdp", sampling="fixed", population=1000)
    ours.step(2.0, 0.1, 50)
    direct = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        1000, 100, dp_accounting.GaussianDpEvent(2.0)
    )
    direct.compose(event, 50)
    assert ours.epsilon(DELTA) == direct.get_epsilon(DELTA)


def test_fixed_sampling_sigma_is_relative_to_the_replace_one_distance() -> None:
    # With the whole population in every cohort, replace-one with σ relative to the distance
    # between neighbouring outputs is exactly the plain Gaussian mechanism with that σ.
    everyone = get_accountant("rdp", sampling="fixed", population=10)
    everyone.step(3.0, 1.0, 4)
    gaussian = RdpAccountant().compose(dp_accounting.GaussianDpEvent(3.0), 4)
    assert everyone.epsilon(DELTA) == pytest.approx(gaussian.get_epsilon(DELTA), rel=1e-12)


# --- the budget --------------------------------------------------------------------------------


def test_budget_refuses_the_round_that_would_exceed_it_without_spending() -> None:
    budget = PrivacyBudget(target_epsilon=2.0, delta=DELTA, accountant=get_accountant("rdp"))
    rounds = 0
    refused: PrivacyBudgetExhaustedError | None = None
    while refused is None:
        try:
            budget.check(10.0, 1.0)
        except PrivacyBudgetExhaustedError as error:
            refused = error
        else:
            budget.spend(10.0, 1.0)
            rounds += 1
    assert 0 < rounds < 100
    spent = budget.epsilon()
    assert spent <= 2.0
    assert budget.accountant.steps == rounds
    would_be = budget.accountant.epsilon_after(10.0, 1.0, DELTA)
    assert would_be > 2.0
    message = str(refused)
    assert f"{would_be:.4g}" in message
    assert "target ε = 2" in message
    assert isinstance(refused, PipelineError)
    with pytest.raises(PrivacyBudgetExhaustedError):
        budget.spend(10.0, 1.0)
    assert budget.accountant.steps == rounds
    assert budget.remaining == pytest.approx(2.0 - spent)


def test_a_budget_without_target_accounts_but_never_refuses() -> None:
    budget = PrivacyBudget(target_epsilon=None, delta=DELTA, accountant="rdp")
    assert budget.spend(0.5, 1.0, 10) > 10
    assert budget.remaining == math.inf


@pytest.mark.parametrize(
    ("target", "delta", "match"),
    [(0.0, DELTA, "target_epsilon"), (-1.0, DELTA, "target_epsilon"), (1.0, 1.0, "delta")],
)
def test_budget_refuses_bad_parameters(target: float, delta: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PrivacyBudget(target, delta, "rdp")


# --- calibration -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pld", "rdp"])
def test_calibration_inverts_epsilon(name: str) -> None:
    target = {"pld": 2.5324, "rdp": 2.7592}[name]  # ε of σ = 5, q = 0.3, T = 100
    sigma = calibrate_noise_multiplier(target, DELTA, 0.3, 100, accountant=name)
    assert sigma == pytest.approx(5.0, rel=2e-3)
    accountant = get_accountant(name)
    accountant.step(sigma, 0.3, 100)
    assert accountant.epsilon(DELTA) <= target
    # and the budget admits exactly the planned rounds
    budget = PrivacyBudget(target, DELTA, get_accountant(name))
    budget.spend(sigma, 0.3, 100)
    with pytest.raises(PrivacyBudgetExhaustedError):
        budget.check(sigma, 0.3)


def test_calibration_for_fixed_size_sampling() -> None:
    sigma = calibrate_noise_multiplier(
        3.0, DELTA, 0.1, 50, accountant="rdp", sampling="fixed", population=100, tolerance=1e-2
    )
    accountant = get_accountant("rdp", sampling="fixed", population=100)
    accountant.step(sigma, 0.1, 50)
    assert 2.9 < accountant.epsilon(DELTA) <= 3.0


def test_calibration_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="target_epsilon"):
        calibrate_noise_multiplier(0.0, DELTA, 0.1, 10)
    with pytest.raises(ValueError, match="rounds"):
        calibrate_noise_multiplier(1.0, DELTA, 0.1, 0)
    with pytest.raises(ValueError, match="sample_rate"):
        calibrate_noise_multiplier(1.0, DELTA, 1.5, 10)
    with pytest.raises(ValueError, match="rdp accountant"):
        calibrate_noise_multiplier(1.0, DELTA, 0.1, 10, sampling="fixed", population=100)


def test_an_accountant_is_an_abc() -> None:
    with pytest.raises(TypeError):
        Accountant()  # type: ignore[abstract]
