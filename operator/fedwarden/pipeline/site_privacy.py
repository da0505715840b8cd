"""Record-level differential privacy: each site's own budget, as the aggregator sees it.

Under record-level DP every site trains with DP-SGD (per-example clipping and noise) and keeps
its own accountant; the unit protected is one record (a patient, a transaction) of one site, and
the guarantee holds against everyone who sees what the site sends, the aggregator included. The
aggregator adds no noise and spends nothing: what it does with the sites' updates is
post-processing. What it does is keep the books of what the sites report in their signed
envelopes — each site's ε after its update, and whether another round would exceed its budget —
and enforce the announced budget:

- an update whose site reports an ε above the target, or no ε at all, is refused;
- a site's ε never goes down: a lower report than one seen before (a site that lost its
  accountant, or lies) is refused, and the largest report is what is kept, checkpointed with
  the rest of the pipeline's state;
- the training's ε is the largest over the sites (the weakest guarantee any record has);
- a site that reports its budget spent is not asked to train again, and the training ends when
  every site has.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SiteReport:
    """What a site signs about its privacy with an update: ``epsilon`` spent after it (at the
    training's δ; ``None`` when the site reported none) and ``budget_spent``: another round
    would take it past the target."""

    epsilon: float | None
    budget_spent: bool = False


class SiteBudgets:
    """The sites' record-level ε, largest-ever per site (see the module docstring).

    Args:
        target_epsilon: the per-site budget the aggregator announced.
        delta: δ of the sites' guarantees.
    """

    def __init__(self, target_epsilon: float, delta: float) -> None:
        target = float(target_epsilon)
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        self.target_epsilon = target
        self.delta = float(delta)
        self._epsilon: dict[str, float] = {}
        self._spent: set[str] = set()

    @property
    def epsilon(self) -> float:
        """The largest ε any site reported (0 before the first report)."""
        return max(self._epsilon.values(), default=0.0)

    def epsilon_of(self, site: str) -> float | None:
        return self._epsilon.get(site)

    @property
    def spent(self) -> frozenset[str]:
        """Sites that reported their budget spent."""
        return frozenset(self._spent)

    def refusal(self, site: str, report: SiteReport) -> str | None:
        """Why ``site``'s update must be refused for its privacy report, or ``None``. Changes
        nothing: a refused update's report is not recorded."""
        eps = report.epsilon
        if eps is None:
            return (
                "no record-level epsilon: the training runs record-level DP and every update "
                "must carry its site's ε"
            )
        if not (math.isfinite(eps) and eps >= 0):
            return f"record-level epsilon {eps!r} is not a finite number >= 0"
        if eps > self.target_epsilon:
            return (
                f"over budget: the site reports ε = {eps:.4g}, above the target "
                f"ε = {self.target_epsilon:g} (δ = {self.delta:g})"
            )
        previous = self._epsilon.get(site)
        if previous is not None and eps < previous:
            return (
                f"record-level epsilon went down: the site reports ε = {eps:.4g} after "
                f"{previous:.4g}; a site's spent ε never decreases"
            )
        return None

    def record(self, site: str, report: SiteReport) -> None:
        """Record an accepted update's report (call :meth:`refusal` first)."""
        assert report.epsilon is not None
        self._epsilon[site] = max(report.epsilon, self._epsilon.get(site, 0.0))
        if report.budget_spent:
            self._spent.add(site)

    def state_dict(self) -> dict[str, Any]:
        return {"epsilon": dict(self._epsilon), "spent": sorted(self._spent)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._epsilon = {str(k): float(v) for k, v in dict(state["epsilon"]).items()}
        self._spent = {str(s) for s in state["spent"]}


__all__ = ["SiteBudgets", "SiteReport"]
