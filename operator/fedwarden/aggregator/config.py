"""The aggregator's settings, and client sampling.

Sampling draws from the clients *available* for the round: seen (any authorised RPC) within
``availability_ttl`` seconds and not banned.

- ``fixed``: ``k = max(min_per_round, ceil(fraction × available))`` clients, without
  replacement (capped at the number available). The accountant cannot use it with DP: the
  population a fixed-size sample is drawn from (who is online) is not fixed.
- ``poisson``: each available client independently with probability ``fraction``; this is what
  the DP accountant assumes (sample rate q = ``fraction``; an unavailable client has a
  probability of 0 ≤ q of being in the round). ``min_per_round`` is not enforced by drawing
  again, which would change the distribution the accountant assumes; a round with too few
  updates for the aggregator is skipped by the pipeline without spending privacy.

The randomness comes from the OS CSPRNG (:class:`random.SystemRandom`) unless a ``seed`` is
given; a seeded sampler derives round ``r``'s draw from ``(seed, r, attempt)`` alone, so a
restarted aggregator draws the same cohort for the same round attempt.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fedwarden.wire import DEFAULT_CHUNK_BYTES, check_chunk_bytes

Sampling = Literal["fixed", "poisson"]


@dataclass(frozen=True)
class AggregatorConfig:
    """How the aggregator runs a training.

    Attributes:
        rounds: rounds to complete (an exhausted privacy budget may stop the training earlier).
        fraction: the share of available clients sampled per round (``fixed``), or the
            sampling probability q (``poisson``).
        min_per_round: the least number of clients sampled per round (``fixed``).
        min_available: a round starts once at least this many clients are available; each
            banned client lowers it by one (a banned client is never available again).
        sampling: ``fixed`` or ``poisson`` (see the module docstring).
        round_timeout: seconds from the opening of a round to its close; stragglers are dropped.
        seed: fixes the sampling (tests, simulations); ``None`` draws from the OS CSPRNG.
        training_uid: what envelopes must name; the FederatedTraining's uid in Kubernetes.
        task: what the aggregator announces to clients (JSON-serialisable), e.g. the task name
            and local-DP settings.
        chunk_bytes: the size of model chunks sent, and the largest update chunk accepted.
        max_update_bytes: the largest update accepted; ``None``: exactly the model's size.
        max_downloads_per_round: model downloads a sampled client may make per round; more are
            throttled (RESOURCE_EXHAUSTED) and flagged.
        max_attempts_per_round: refused submissions a client may make per round.
        max_refusals_per_round: refusals of one client (updates, model downloads, requests)
            reported one by one per round; past it the client is flagged once for
            ``flooding``, its further refusals are only counted, and the round counts as one
            strike against it (no honest client comes near: it makes a few requests a round).
        stall_timeout: seconds a stream may go without a message before it is cut (``stalled``).
        poll_timeout: how long a Poll is held open before the server answers WAIT.
        availability_ttl: a client counts as available this long after its last RPC.
        finish_grace: after the training ends, how long the server keeps answering DONE so
            that clients learn it (it stops sooner once every known client has been told).
        nonce_rounds: how many recent rounds' envelope nonces are kept (older rounds' envelopes
            are refused as ``wrong-round`` anyway).
    """

    rounds: int
    fraction: float = 1.0
    min_per_round: int = 1
    min_available: int = 1
    sampling: Sampling = "fixed"
    round_timeout: float = 60.0
    seed: int | None = None
    training_uid: str = ""
    task: dict[str, object] | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_update_bytes: int | None = None
    max_downloads_per_round: int = 2
    max_attempts_per_round: int = 3
    max_refusals_per_round: int = 20
    stall_timeout: float = 10.0
    poll_timeout: float = 10.0
    availability_ttl: float = 30.0
    finish_grace: float = 10.0
    nonce_rounds: int = 100

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.min_per_round < 1 or self.min_available < 1:
            raise ValueError("min_per_round and min_available must be >= 1")
        if self.sampling == "fixed" and self.min_per_round > self.min_available:
            raise ValueError(
                f"min_per_round ({self.min_per_round}) cannot exceed min_available "
                f"({self.min_available}) with fixed-size sampling"
            )
        if self.sampling not in ("fixed", "poisson"):
            raise ValueError(f"sampling must be fixed or poisson, got {self.sampling!r}")
        for name in ("round_timeout", "stall_timeout", "poll_timeout", "availability_ttl"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.finish_grace < 0:
            raise ValueError(f"finish_grace must be >= 0, got {self.finish_grace}")
        check_chunk_bytes(self.chunk_bytes)
        if self.max_update_bytes is not None and self.max_update_bytes < 4:
            raise ValueError(f"max_update_bytes must be >= 4, got {self.max_update_bytes}")
        if (
            min(
                self.max_downloads_per_round,
                self.max_attempts_per_round,
                self.max_refusals_per_round,
            )
            < 1
        ):
            raise ValueError(
                "max_downloads_per_round, max_attempts_per_round and max_refusals_per_round "
                "must be >= 1"
            )
        if self.nonce_rounds < 1:
            raise ValueError(f"nonce_rounds must be >= 1, got {self.nonce_rounds}")


class Sampler:
    """Draws each round's cohort (see the module docstring)."""

    def __init__(
        self,
        sampling: Sampling,
        fraction: float,
        min_per_round: int = 1,
        seed: int | None = None,
    ) -> None:
        self.sampling = sampling
        self.fraction = fraction
        self.min_per_round = min_per_round
        self.seed = seed

    @property
    def seeded(self) -> bool:
        return self.seed is not None

    def _rng(self, round_number: int, attempt: int) -> random.Random:
        if self.seed is None:
            return random.SystemRandom()
        return random.Random(f"fedwarden-sampling/{self.seed}/{round_number}/{attempt}")

    def sample(
        self, available: Sequence[str], round_number: int, attempt: int = 0
    ) -> tuple[list[str], float]:
        """``(cohort, sample rate)`` for a round; the rate is what the accountant is told."""
        pool = sorted(available)
        rng = self._rng(round_number, attempt)
        if not pool:
            return [], self.fraction
        if self.sampling == "poisson":
            return [c for c in pool if rng.random() < self.fraction], self.fraction
        k = min(len(pool), max(self.min_per_round, math.ceil(self.fraction * len(pool))))
        return sorted(rng.sample(pool, k)), k / len(pool)
