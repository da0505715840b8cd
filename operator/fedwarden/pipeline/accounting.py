"""Privacy accounting on Google's ``dp-accounting``: ε spent, budget enforcement, calibration.

Like Opacus's accountants: an abstract :class:`Accountant`, a registry (:func:`get_accountant`,
:func:`register_accountant`), and a state that can be checkpointed and restored.

**What is accounted.** Each round is one Gaussian query on a sampled cohort, with noise
multiplier ``σ = noise std / L2 sensitivity``, where the sensitivity is the largest change of
the query's output between two neighbouring populations *under the accountant's neighbouring
relation* (:attr:`Accountant.relation`; :func:`fedwarden.pipeline.sensitivity.aggregate_sensitivity`
computes it for every aggregator). Two sampling schemes:

- ``poisson`` (default): every client joins a round independently with probability q. Neighbouring
  populations differ by adding or removing one client (``add-remove``). dp-accounting event:
  ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``.
- ``fixed``: a cohort of exactly ``m = q·N`` clients drawn without replacement from a public
  population of N. Neighbours differ by replacing one client's data (``replace-one``), and σ is
  relative to the *replace-one* sensitivity (the distance between the two outputs, e.g. 2C for
  a sum of updates clipped to C). Event: ``SampledWithoutReplacementDpEvent(N, m,
  GaussianDpEvent(σ))`` (Wang, Balle, Kasiviswanathan, AISTATS 2019, Theorem 27), which
  dp-accounting 0.6.0 implements in the RDP accountant only; the PLD accountant refuses it.

**Accountants.** ``pld`` (default; privacy loss distributions, Meiser & Mohammadi 2018, Koskela
et al. 2020; pessimistic discretisation, so ε is an upper bound, and the tightest of the two) and
``rdp`` (Rényi DP, Mironov 2017; a looser upper bound, used as a cross-check).

**State.** An accountant's state is its history of ``(noise_multiplier, sample_rate, steps)``,
consecutive equal entries merged; ε is recomposed from the whole history by dp-accounting. So a
restored accountant gives exactly the ε of one that never stopped, and a history can be
re-accounted by another accountant.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import dp_accounting
from dp_accounting import mechanism_calibration
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from fedwarden.pipeline.errors import PrivacyBudgetExhaustedError

Sampling = Literal["poisson", "fixed"]
Relation = Literal["add-remove", "replace-one"]
SAMPLINGS: tuple[Sampling, ...] = ("poisson", "fixed")
RELATIONS: tuple[Relation, ...] = ("add-remove", "replace-one")

Step = tuple[float, float, int]
"""One entry of an accountant's history: (noise_multiplier, sample_rate, steps)."""

_STATE_FORMAT = 1


class _QuietRdpOrders(logging.Filter):
    """dp-accounting's RDP accountant logs a warning for every fractional order it skips."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


@contextmanager
def _quiet_rdp() -> Iterator[None]:
    # The skipped orders only make the bound looser, never wrong; a warning per order per call
    # would flood a training's logs. The filter is scoped to the computation.
    logger = logging.getLogger("absl")
    quiet = _QuietRdpOrders()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _check_delta(delta: float) -> float:
    value = float(delta)
    if not 0.0 < value < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return value


def _check_step(noise_multiplier: float, sample_rate: float, steps: int) -> Step:
    sigma = float(noise_multiplier)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(
            f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r} "
            "(a round without noise has no DP guarantee to account)"
        )
    q = float(sample_rate)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return sigma, q, steps


def _merge(history: tuple[Step, ...], step: Step) -> tuple[Step, ...]:
    """Append ``step``, merged into the last entry when σ and q are the same."""
    if history and history[-1][0] == step[0] and history[-1][1] == step[1]:
        last = history[-1]
        return (*history[:-1], (last[0], last[1], last[2] + step[2]))
    return (*history, step)


class Accountant(ABC):
    """Privacy accountant: composes the rounds run so far and reports ε for a δ.

    Args:
        sampling: ``poisson`` (add/remove neighbours) or ``fixed`` (fixed-size cohorts drawn
            without replacement; replace-one neighbours; needs ``population``).
        population: N, the number of clients sampled from; required for ``fixed``.
    """

    name: ClassVar[str]

    def __init__(self, *, sampling: str = "poisson", population: int | None = None) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if sampling == "fixed":
            if (
                population is None
                or isinstance(population, bool)
                or not isinstance(population, int)
                or population < 1
            ):
                raise ValueError(
                    "fixed-size sampling needs the population size N, an integer >= 1, "
                    f"got {population!r}"
                )
        elif population is not None and (not isinstance(population, int) or population < 1):
            raise ValueError(f"population must be an integer >= 1 or None, got {population!r}")
        self.sampling: Sampling = "fixed" if sampling == "fixed" else "poisson"
        self.population = population
        self._history: tuple[Step, ...] = ()

    # --- what subclasses provide -------------------------------------------------------------

    @abstractmethod
    def _fresh(self) -> dp_accounting.PrivacyAccountant:
        """An empty dp-accounting accountant with this accountant's neighbouring relation."""

    def _options(self) -> tuple[Any, ...]:
        """What, besides the history, determines ε (part of the memoisation key)."""
        return ()

    def _coarse(self) -> Accountant | None:
        """A cheaper accountant whose ε is an upper bound of this one's, for calibration."""
        return None

    # --- public API ----------------------------------------------------------------------------

    @property
    def relation(self) -> Relation:
        """The neighbouring relation: ``add-remove`` (Poisson) or ``replace-one`` (fixed)."""
        return "replace-one" if self.sampling == "fixed" else "add-remove"

    @property
    def history(self) -> tuple[Step, ...]:
        """(noise_multiplier, sample_rate, steps) of the rounds so far, equal neighbours merged."""
        return self._history

    @property
    def steps(self) -> int:
        return sum(s for _, _, s in self._history)

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` rounds with noise multiplier σ on cohorts sampled at rate q."""
        entry = self._validated(noise_multiplier, sample_rate, steps)
        self._history = _merge(self._history, entry)

    def epsilon(self, delta: float) -> float:
        """ε of everything recorded so far, at ``delta``."""
        return self._epsilon_of(self._history, _check_delta(delta))

    def epsilon_after(
        self, noise_multiplier: float, sample_rate: float, delta: float, steps: int = 1
    ) -> float:
        """ε if ``steps`` more rounds were run; the accountant's state does not change."""
        entry = self._validated(noise_multiplier, sample_rate, steps)
        return self._epsilon_of(_merge(self._history, entry), _check_delta(delta))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the sampling scheme and the history of steps."""
        return {
            "format": _STATE_FORMAT,
            "accountant": self.name,
            "sampling": self.sampling,
            "population": self.population,
            "history": [[sigma, q, steps] for sigma, q, steps in self._history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace this accountant's history with a saved one.

        The sampling scheme and population must match (they define the mechanism). The saved
        ``accountant`` name may differ: a history can be re-accounted, e.g. by ``rdp`` as a
        cross-check of ``pld``.
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown accountant state format {state.get('format')!r}")
        if state.get("sampling") != self.sampling or state.get("population") != self.population:
            raise ValueError(
                f"state is for sampling={state.get('sampling')!r}, "
                f"population={state.get('population')!r}; this accountant uses "
                f"sampling={self.sampling!r}, population={self.population!r}"
            )
        history: tuple[Step, ...] = ()
        for entry in state["history"]:
            sigma, q, steps = entry
            history = _merge(history, self._validated(sigma, q, int(steps)))
        self._history = history

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sampling={self.sampling!r}, population={self.population!r}, "
            f"steps={self.steps})"
        )

    # --- internals -----------------------------------------------------------------------------

    def _validated(self, noise_multiplier: float, sample_rate: float, steps: int) -> Step:
        entry = _check_step(noise_multiplier, sample_rate, steps)
        if self.sampling == "fixed":
            self._cohort_size(entry[1])
        return entry

    def _cohort_size(self, sample_rate: float) -> int:
        assert self.population is not None
        exact = sample_rate * self.population
        m = round(exact)
        if abs(exact - m) > 1e-6 * max(1.0, exact) or m < 1:
            raise ValueError(
                f"with fixed-size sampling, sample_rate × population must be a whole number of "
                f"clients >= 1, got {sample_rate} × {self.population} = {exact:g}"
            )
        return m

    def _event(self, noise_multiplier: float, sample_rate: float) -> dp_accounting.DpEvent:
        gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
        if self.sampling == "fixed":
            assert self.population is not None
            return dp_accounting.SampledWithoutReplacementDpEvent(
                self.population, self._cohort_size(sample_rate), gaussian
            )
        return dp_accounting.PoissonSampledDpEvent(sample_rate, gaussian)

    def _compose(self, history: tuple[Step, ...]) -> dp_accounting.PrivacyAccountant:
        accountant = self._fresh()
        for sigma, q, steps in history:
            accountant.compose(self._event(sigma, q), steps)
        return accountant

    def _epsilon_of(self, history: tuple[Step, ...], delta: float) -> float:
        if not history:
            return 0.0
        key = (type(self), self.sampling, self.population, self._options(), history, delta)
        return _memoised_epsilon(key, lambda: self._compute_epsilon(history, delta))

    def _compute_epsilon(self, history: tuple[Step, ...], delta: float) -> float:
        with _quiet_rdp():
            return float(self._compose(history).get_epsilon(delta))


_EPSILON_CACHE: dict[tuple[Any, ...], float] = {}
_EPSILON_CACHE_SIZE = 256


def _memoised_epsilon(key: tuple[Any, ...], compute: Callable[[], float]) -> float:
    """ε is a pure function of (accountant, sampling, history, δ); PLD costs about a second.

    The orchestrator checks a round's ε before running it and reads it again after spending it;
    both are the same computation.
    """
    cached = _EPSILON_CACHE.get(key)
    if cached is None:
        cached = compute()
        if len(_EPSILON_CACHE) >= _EPSILON_CACHE_SIZE:
            _EPSILON_CACHE.pop(next(iter(_EPSILON_CACHE)))
        _EPSILON_CACHE[key] = cached
    return cached


class PLDAccountant(Accountant):
    """Privacy loss distribution accountant (dp-accounting's ``PLDAccountant``); the default.

    Args:
        value_discretization_interval: the PLD's grid step; dp-accounting's default 1e-4.
            Coarser is faster and, with the pessimistic discretisation, still an upper bound.

    dp-accounting 0.6.0 has no PLD for sampling without replacement: ``sampling="fixed"`` is
    refused; use :class:`RDPAccountant` for fixed-size cohorts.
    """

    name = "pld"

    def __init__(
        self,
        *,
        sampling: str = "poisson",
        population: int | None = None,
        value_discretization_interval: float = 1e-4,
    ) -> None:
        super().__init__(sampling=sampling, population=population)
        if self.sampling == "fixed":
            raise ValueError(
                "the pld accountant (dp-accounting 0.6.0) cannot account fixed-size sampling "
                "without replacement; use the rdp accountant for sampling='fixed', or poisson "
                "sampling with pld"
            )
        interval = float(value_discretization_interval)
        if not (math.isfinite(interval) and 0 < interval <= 0.1):
            raise ValueError(
                f"value_discretization_interval must be in (0, 0.1], got "
                f"{value_discretization_interval!r}"
            )
        self.value_discretization_interval = interval

    def _fresh(self) -> dp_accounting.PrivacyAccountant:
        return pld_privacy_accountant.PLDAccountant(
            dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
            value_discretization_interval=self.value_discretization_interval,
        )

    def _options(self) -> tuple[Any, ...]:
        return (self.value_discretization_interval,)

    def _coarse(self) -> Accountant | None:
        if self.value_discretization_interval * 10 > 0.1:
            return None
        return PLDAccountant(
            sampling=self.sampling,
            population=self.population,
            value_discretization_interval=self.value_discretization_interval * 10,
        )


class RDPAccountant(Accountant):
    """Rényi DP accountant (dp-accounting's ``RdpAccountant``, its default orders).

    Looser than PLD (ε is a larger upper bound); a cross-check, and the accountant for
    fixed-size sampling without replacement.
    """

    name = "rdp"

    def _fresh(self) -> dp_accounting.PrivacyAccountant:
        relation = (
            dp_accounting.NeighboringRelation.REPLACE_ONE
            if self.sampling == "fixed"
            else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
        )
        return rdp_privacy_accountant.RdpAccountant(neighboring_relation=relation)


_REGISTRY: dict[str, type[Accountant]] = {}


def register_accountant(name: str, cls: type[Accountant]) -> None:
    """Make ``cls`` available to :func:`get_accountant` as ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"accountant name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Accountant)):
        raise ValueError(f"{cls!r} is not a subclass of Accountant")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"an accountant named {name!r} is already registered ({existing.__name__})"
        )
    _REGISTRY[name] = cls


def accountant_names() -> tuple[str, ...]:
    """The registered accountant names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_accountant(name: str, **kwargs: Any) -> Accountant:
    """A fresh accountant by name (``pld``, ``rdp`` or a registered one); kwargs go to it."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(
            f"unknown accountant {name!r}; choose one of: {', '.join(accountant_names())}"
        )
    return cls(**kwargs)


register_accountant(PLDAccountant.name, PLDAccountant)
register_accountant(RDPAccountant.name, RDPAccountant)


class PrivacyBudget:
    """An (ε, δ) budget enforced on an accountant: a round that would exceed it is refused.

    Args:
        target_epsilon: the budget; ``None`` accounts and reports ε without enforcing a limit.
        delta: δ of the guarantee, in (0, 1).
        accountant: an :class:`Accountant`, or a registered name (a fresh Poisson one).
    """

    def __init__(
        self, target_epsilon: float | None, delta: float, accountant: Accountant | str = "pld"
    ) -> None:
        if target_epsilon is not None:
            target = float(target_epsilon)
            if not (math.isfinite(target) and target > 0):
                raise ValueError(
                    f"target_epsilon must be a finite number > 0, got {target_epsilon!r}"
                )
            self.target_epsilon: float | None = target
        else:
            self.target_epsilon = None
        self.delta = _check_delta(delta)
        self.accountant = get_accountant(accountant) if isinstance(accountant, str) else accountant

    def epsilon(self) -> float:
        """ε spent so far, at this budget's δ."""
        return self.accountant.epsilon(self.delta)

    @property
    def remaining(self) -> float:
        """ε left before the target (``inf`` without a target)."""
        if self.target_epsilon is None:
            return math.inf
        return max(0.0, self.target_epsilon - self.epsilon())

    def check(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """ε after ``steps`` more rounds; raises if that exceeds the target. Changes nothing.

        Raises:
            PrivacyBudgetExhaustedError: the rounds would take ε past ``target_epsilon``.
        """
        would_be = self.accountant.epsilon_after(noise_multiplier, sample_rate, self.delta, steps)
        if self.target_epsilon is not None and would_be > self.target_epsilon:
            raise PrivacyBudgetExhaustedError(
                f"privacy budget exhausted: {steps} more round(s) at noise multiplier "
                f"{noise_multiplier:g} and sample rate {sample_rate:g} would bring ε to "
                f"{would_be:.4g}, above the target ε = {self.target_epsilon:g} "
                f"(δ = {self.delta:g}); "
                f"spent so far ε = {self.epsilon():.4g} over {self.accountant.steps} round(s)"
            )
        return would_be

    def spend(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """Check, then record ``steps`` rounds; returns the new ε.

        Raises:
            PrivacyBudgetExhaustedError: as :meth:`check`; nothing is recorded then.
        """
        would_be = self.check(noise_multiplier, sample_rate, steps)
        self.accountant.step(noise_multiplier, sample_rate, steps)
        return would_be


def _gdp_guess(target_epsilon: float, delta: float, sample_rate: float, rounds: int) -> float:
    """A starting σ from the central-limit (μ-GDP) approximation of the subsampled Gaussian.

    Bu, Dong, Long, Su, "Deep Learning with Gaussian Differential Privacy", 2020: T rounds at
    rate q and noise σ are about μ-GDP with μ = q·√(T·(exp(σ⁻²) − 1)); μ-GDP gives
    δ(ε) = Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2). Only a guess: the exact σ comes from the accountant.
    """

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    def delta_of(mu: float) -> float:
        return phi(-target_epsilon / mu + mu / 2) - math.exp(target_epsilon) * phi(
            -target_epsilon / mu - mu / 2
        )

    lo, hi = 1e-6, 1.0
    while delta_of(hi) < delta and hi < 1e6:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) < delta else (lo, mid)
    mu = lo
    ratio = mu * mu / (sample_rate * sample_rate * rounds)
    return 1.0 / math.sqrt(math.log1p(ratio)) if ratio > 0 else 1.0


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    rounds: int,
    accountant: str = "pld",
    sampling: str = "poisson",
    population: int | None = None,
    *,
    tolerance: float = 1e-3,
) -> float:
    """The smallest noise multiplier σ with which ``rounds`` rounds at ``sample_rate`` spend at
    most ``target_epsilon`` at ``delta``, to within a relative ``tolerance`` (never below it).

    Uses dp-accounting's ``mechanism_calibration.calibrate_dp_mechanism`` (Brent's method, with
    a guarantee that the σ returned does not exceed the budget) on the same events and
    accountant as ``get_accountant(accountant, sampling=..., population=...)``, in a bracket
    found from a μ-GDP first guess. For PLD the search runs on a 10× coarser discretisation
    (pessimistic, so its σ is an upper bound) and the result is then confirmed, and refined if
    needed, at full resolution: the answer is the same, at a fraction of the cost.

    Raises:
        ValueError: a parameter out of range, or an accountant/sampling combination that does
            not exist (e.g. ``pld`` with ``fixed``).
    """
    target = float(target_epsilon)
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    delta = _check_delta(delta)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if not (math.isfinite(tolerance) and 0 < tolerance < 0.1):
        raise ValueError(f"tolerance must be in (0, 0.1), got {tolerance!r}")
    kwargs: dict[str, Any] = {"sampling": sampling}
    if population is not None or sampling == "fixed":
        kwargs["population"] = population
    exact = get_accountant(accountant, **kwargs)
    _, q, _ = exact._validated(1.0, sample_rate, rounds)
    coarse = exact._coarse()

    guess = max(_gdp_guess(target, delta, q, rounds), 1e-3)
    if exact.sampling == "fixed":
        guess *= 2.0  # σ is relative to the replace-one distance, about twice add/remove's
    sigma = _calibrate(coarse or exact, target, delta, q, rounds, guess, tolerance)
    if coarse is None:
        return sigma

    def fine(s: float) -> float:
        return exact._epsilon_of(((s, q, rounds),), delta)

    if fine(sigma) <= target and fine(sigma / (1.0 + tolerance)) > target:
        return sigma
    return _calibrate(exact, target, delta, q, rounds, sigma, tolerance)


def _calibrate(
    probe: Accountant,
    target: float,
    delta: float,
    q: float,
    rounds: int,
    guess: float,
    tolerance: float,
) -> float:
    def epsilon_for(sigma: float) -> float:
        return probe._epsilon_of(((sigma, q, rounds),), delta)

    # Bracket [lo, hi] with ε(lo) > target >= ε(hi), from the guess outwards.
    lo = hi = guess
    if epsilon_for(guess) > target:
        hi = guess * 1.05
        while epsilon_for(hi) > target:
            lo, hi = hi, hi * 1.5
            if hi > 1e6:
                raise ValueError(f"no noise multiplier below 1e6 reaches ε = {target}")
    else:
        lo = guess / 1.05
        while epsilon_for(lo) <= target:
            hi, lo = lo, lo / 1.5
            if lo < 1e-3:
                return hi  # even σ = 0.001 meets the target: the budget does not bind
    with _quiet_rdp():
        sigma = float(
            mechanism_calibration.calibrate_dp_mechanism(
                probe._fresh,
                lambda s: dp_accounting.SelfComposedDpEvent(probe._event(s, q), rounds),
                target,
                delta,
                bracket_interval=mechanism_calibration.ExplicitBracketInterval(lo, hi),
                tol=tolerance * lo / 2,
            )
        )
    # Confirm on the memoised path that the accountant itself will use.
    return sigma if epsilon_for(sigma) <= target else hi


__all__ = [
    "RELATIONS",
    "Accountant",
    "PLDAccountant",
    "PrivacyBudget",
    "RDPAccountant",
    "Relation",
    "Sampling",
    "accountant_names",
    "calibrate_noise_multiplier",
    "get_accountant",
    "register_accountant",
]
