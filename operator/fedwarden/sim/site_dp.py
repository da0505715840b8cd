"""Record-level DP at one site: DP-SGD with the site's own accountant and budget.

A site that protects its records trains every round with :func:`~fedwarden.sim.models.dp_sgd`
(per-example clipping to C, Gaussian noise σC on each step's sum, Poisson batches of rate
q = batch size / examples), with σ calibrated so that the planned rounds spend exactly its
budget, and composes every step it takes in its own accountant
(:mod:`fedwarden.pipeline.accounting`). It never trains a round that would take it past the
budget: :meth:`SiteDPSGD.train` raises
:class:`~fedwarden.pipeline.errors.PrivacyBudgetExhaustedError` first and spends nothing.

The built-in app (``dp-epsilon`` in its run_config) and the simulation's honest sites under
``--dp record`` both train through this class.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.accounting import (
    PrivacyBudget,
    calibrate_noise_multiplier,
    get_accountant,
)
from fedwarden.sim.models import DPSGDConfig, Model, dp_sgd

F32 = npt.NDArray[np.float32]


class SiteDPSGD:
    """One site's DP-SGD and budget.

    Args:
        target_epsilon, delta: the site's budget.
        rounds: rounds the site plans to train; σ is calibrated so that they spend the target.
        num_examples: the site's training records.
        batch_size: expected Poisson batch; q = batch_size / num_examples (at most 1).
        local_epochs: passes over the data per round (⌈1/q⌉ steps each).
        clip_norm: C, the bound on each example's gradient.
        accountant: ``pld`` or ``rdp``.
    """

    def __init__(
        self,
        *,
        target_epsilon: float,
        delta: float,
        rounds: int,
        num_examples: int,
        batch_size: int,
        local_epochs: int = 1,
        clip_norm: float = 1.0,
        accountant: str = "pld",
    ) -> None:
        if num_examples < 1:
            raise ValueError("record-level DP needs at least one training record at the site")
        q = min(1.0, batch_size / num_examples)
        self.steps_per_round = local_epochs * DPSGDConfig(clip_norm, 0.0, q).steps_per_epoch()
        sigma = _calibrated(target_epsilon, delta, q, rounds * self.steps_per_round, accountant)
        self.config = DPSGDConfig(clip_norm=clip_norm, noise_multiplier=sigma, sample_rate=q)
        self.local_epochs = local_epochs
        self.budget = PrivacyBudget(target_epsilon, delta, get_accountant(accountant))

    @property
    def epsilon(self) -> float:
        """ε spent so far at the budget's δ."""
        return self.budget.epsilon() if self.budget.accountant.steps else 0.0

    @property
    def budget_spent(self) -> bool:
        """True when another round would take the site past its budget."""
        assert self.budget.target_epsilon is not None
        would_be = self.budget.accountant.epsilon_after(
            self.config.noise_multiplier,
            self.config.sample_rate,
            self.budget.delta,
            self.steps_per_round,
        )
        return would_be > self.budget.target_epsilon

    def train(
        self,
        model: Model,
        params: F32,
        x: npt.NDArray[np.floating],
        y: npt.NDArray[np.integer],
        *,
        lr: float,
        rng: np.random.Generator,
    ) -> F32:
        """One round of DP-SGD from ``params``; the new parameters.

        Raises:
            PrivacyBudgetExhaustedError: the round would exceed the budget; nothing is spent.
        """
        sigma, q = self.config.noise_multiplier, self.config.sample_rate
        self.budget.check(sigma, q, self.steps_per_round)
        new, steps = dp_sgd(
            model, params, x, y, epochs=self.local_epochs, lr=lr, config=self.config, rng=rng
        )
        self.budget.spend(sigma, q, steps)
        return new


@functools.lru_cache(maxsize=256)
def _calibrated(
    target_epsilon: float, delta: float, q: float, steps: int, accountant: str
) -> float:
    # sites of the same size share σ; a calibration takes seconds, a simulation has many sites
    return calibrate_noise_multiplier(target_epsilon, delta, q, steps, accountant=accountant)


__all__ = ["SiteDPSGD"]
