"""Free-rider detection: clients that take the global model without contributing to it.

A free rider sends something that costs it nothing: zeros, random noise, the previous global
update played back (possibly with noise to disguise it), or its own earlier update again (Lin et
al., "Free-riders in Federated Learning: Attacks and Defenses", 2019; Fraboni et al., "Free-rider
Attacks on Model Aggregation in Federated Learning", AISTATS 2021). The tests here:

* **zero**: a norm below ``zero_norm_ratio`` times the cohort's median norm;
* **replay of the global update**: cosine similarity to the previous round's global update of at
  least ``global_replay_cosine``;
* **replay of its own update**: a fixed coordinate sample ("sketch") within a relative distance
  of ``own_replay_distance`` of the sketch the same client sent last time. Only a (near-)exact
  copy, and judged by distance, not by angle: a site that trains deterministically (full-batch
  steps, or a shard smaller than a batch) on separable data sends updates whose direction has
  converged (cosines above 0.99999 between rounds with 5 to 10 sites on wine) while their
  length still shrinks by half a percent or more per round; a copy keeps both;
* **no contribution**: the cosine similarity to a robust reference direction is at noise level
  or below, and so is the cosine to the client's own previous update. The second condition
  tells noise (fresh every round) from an honest client whose data is unlike the others' (its
  update does not follow the cohort, but it follows itself). The reference is the
  coordinate-wise median of the *other* clients (leave-one-out, so a client cannot make itself
  look aligned by being part of its own reference, which matters for small cohorts). Random
  vectors in d dimensions have cosine ~ N(0, 1/d), so "noise level" is ``noise_band / sqrt(d)``.
  A client is judged from its second participation on;
* **no fresh contribution**: the same two tests on what remains after removing the component
  along the previous global update, which exposes a replay of it drowned in noise.

One test here is not about free riders but uses the same reference:

* **opposition**: while the cohort agrees (the median of the updates' cosines to the cohort's
  coordinate-wise median is at least ``opposition_agreement``), an update whose cosine to that
  median is at most ``opposition_cosine`` pushes the model against everyone else: a sign flip,
  inner-product manipulation (Xie et al., UAI 2019) or its scaled variant. FLTrust (Cao et al.,
  NDSS 2021) gives such updates no weight against a server-side reference; here the reference is
  the robust median of the clients, and the verdict is a strike (``poisoning``). Unlike a
  norm test, it needs no estimate of how much honest norms vary, which a cohort of a few sites
  cannot give. It is not free of false alarms: in the small-consortium benchmark honest
  breast-cancer sites with skewed labels reached −0.64 in early rounds (36 refused honest
  updates in 185,378 site-rounds), and a clean round forgives a strike, so none of them was
  banned. Late in a non-IID training, when the cohort no longer agrees, honest updates oppose
  each other more, and the test abstains.

The two free-rider tests on the reference only judge when the cohort itself has a common
direction (its median cosine clears twice the noise band). Near convergence on non-IID data
honest updates pull towards their own local optima and stop agreeing with each other; the tests
then abstain rather than call honest clients free riders. A free rider present from the start is
caught in the early rounds, when the honest cohort agrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.validation import row_norms

_BLOCK = 1 << 15


@dataclass(frozen=True)
class FreeRiderConfig:
    """Settings of free-rider detection.

    Attributes:
        enabled: run the tests at all.
        noise_band: a cosine within ``noise_band / sqrt(d)`` of zero counts as no contribution.
        zero_norm_ratio: a norm below this fraction of the cohort's median norm is a zero update.
        global_replay_cosine: cosine at or above this to the previous global update is a replay.
        own_replay_distance: a sketch within this distance of the client's own previous one,
            relative to the previous one's norm, is a replay; near 0, as honest updates can be
            very alike late in training.
        sketch_size: coordinates sampled to remember each client's last update.
        detect_noise: run the noise-level tests. Off in local-DP mode, where every honest update
            is itself mostly noise.
        opposition_cosine: an update at or below this cosine to the cohort's median opposes the
            cohort (``None``: no opposition test).
        opposition_agreement: the opposition test judges only while the median of the cohort's
            cosines is at least this.
    """

    enabled: bool = True
    noise_band: float = 4.0
    zero_norm_ratio: float = 1e-3
    global_replay_cosine: float = 0.995
    own_replay_distance: float = 1e-4
    sketch_size: int = 4096
    detect_noise: bool = True
    opposition_cosine: float | None = -0.5
    opposition_agreement: float = 0.5

    def __post_init__(self) -> None:
        if self.noise_band <= 0:
            raise ValueError(f"noise_band must be > 0, got {self.noise_band}")
        if not 0 < self.zero_norm_ratio < 1:
            raise ValueError(f"zero_norm_ratio must be in (0, 1), got {self.zero_norm_ratio}")
        if not 0 < self.global_replay_cosine <= 1:
            raise ValueError(
                f"global_replay_cosine must be in (0, 1], got {self.global_replay_cosine}"
            )
        if not 0 <= self.own_replay_distance < 1:
            raise ValueError(
                f"own_replay_distance must be in [0, 1), got {self.own_replay_distance}"
            )
        if self.opposition_cosine is not None and not -1 <= self.opposition_cosine < 0:
            raise ValueError(
                f"opposition_cosine must be in [-1, 0) or None, got {self.opposition_cosine}"
            )
        if not 0 < self.opposition_agreement <= 1:
            raise ValueError(
                f"opposition_agreement must be in (0, 1], got {self.opposition_agreement}"
            )
        if self.sketch_size < 16:
            raise ValueError(f"sketch_size must be >= 16, got {self.sketch_size}")


@dataclass(frozen=True)
class Contribution:
    """What the tests saw of one update; ``reason`` is set when it is refused, ``poisoning``
    when the reason is opposition to the cohort rather than free-riding."""

    cosine: float
    fresh_cosine: float | None
    reason: str | None
    poisoning: bool = False


def leave_one_out_median_products(
    updates: npt.NDArray[np.floating], direction: npt.NDArray[np.float64] | None
) -> dict[str, npt.NDArray[np.float64]]:
    """Inner products of each row with the coordinate-wise median of the *other* rows, and with
    that of all rows.

    Returns per row: ``ul`` = u·l, ``ll`` = l·l and, with a unit ``direction`` g, ``ug`` = u·g and
    ``lg`` = l·g, where l is the row's leave-one-out median; ``um`` = u·m and ``mm`` = m·m (the
    same for every row), where m is the median of all rows. Computed one column block at a time
    from a single sort of the block: removing one value from a sorted column moves the median to
    one of its neighbouring order statistics, chosen by comparing the removed value to them.
    """
    n, d = updates.shape
    if n < 3:
        raise ValueError(f"a leave-one-out median needs at least 3 updates, got {n}")
    out = {key: np.zeros(n) for key in ("ul", "ll", "ug", "lg", "um", "mm")}
    k = n // 2
    for start in range(0, d, _BLOCK):
        block = np.ascontiguousarray(updates[:, start : start + _BLOCK].T, dtype=np.float64)
        ordered = np.sort(block, axis=1)
        if n % 2 == 1:
            # n = 2k+1: the median of the 2k others averages two neighbours of s_k
            below = 0.5 * (ordered[:, k - 1] + ordered[:, k])
            above = 0.5 * (ordered[:, k] + ordered[:, k + 1])
            at = 0.5 * (ordered[:, k - 1] + ordered[:, k + 1])
            mid = ordered[:, k : k + 1]
            loo = np.where(
                block < mid, above[:, None], np.where(block > mid, below[:, None], at[:, None])
            )
            median = ordered[:, k]
        else:
            # n = 2k: the median of the 2k-1 others is s_k or s_{k-1}
            loo = np.where(
                block <= ordered[:, k - 1 : k], ordered[:, k : k + 1], ordered[:, k - 1 : k]
            )
            median = 0.5 * (ordered[:, k - 1] + ordered[:, k])
        out["ul"] += np.einsum("ji,ji->i", block, loo)
        out["um"] += median @ block
        out["mm"] += median @ median
        out["ll"] += np.einsum("ji,ji->i", loo, loo)
        if direction is not None:
            g = direction[start : start + _BLOCK]
            out["ug"] += g @ block
            out["lg"] += g @ loo
    return out


class FreeRiderDetector:
    """Scores a cohort's updates; keeps the last global update and each client's last sketch."""

    def __init__(self, config: FreeRiderConfig, dim: int, seed: int = 0) -> None:
        self.config = config
        self.dim = dim
        # The sketch coordinates need not be secret: a free rider gains nothing by knowing them,
        # as replaying its update on those coordinates alone still replays them.
        size = min(config.sketch_size, dim)
        self._sketch_index = np.sort(
            np.random.default_rng(seed).choice(dim, size=size, replace=False)
        )
        self._previous_global: npt.NDArray[np.float64] | None = None
        self._sketches: dict[str, npt.NDArray[np.float32]] = {}

    def assess(
        self, updates: npt.NDArray[np.floating], client_ids: list[str]
    ) -> dict[str, Contribution]:
        """Judge each update; needs the raw (unclipped) updates of the round's valid cohort."""
        n = updates.shape[0]
        if not self.config.enabled or n == 0:
            return {}
        norms = row_norms(updates)
        median_norm = float(np.median(norms))
        reasons: dict[int, str] = {}
        for i in range(n):
            if norms[i] <= self.config.zero_norm_ratio * median_norm or norms[i] == 0.0:
                reasons[i] = f"zero update (norm {norms[i]:.3g}, cohort median {median_norm:.3g})"
        global_dir = self._global_direction()
        if global_dir is not None:
            cos_global = _row_dots(updates, global_dir) / np.maximum(norms, 1e-300)
            for i in range(n):
                if i not in reasons and cos_global[i] >= self.config.global_replay_cosine:
                    reasons[i] = (
                        f"replay of the previous global update (cosine {cos_global[i]:.4f})"
                    )
        sketches = np.ascontiguousarray(updates[:, self._sketch_index], dtype=np.float32)
        for i, client in enumerate(client_ids):
            previous = self._sketches.get(client)
            if i in reasons or previous is None:
                continue
            distance = _relative_distance(sketches[i], previous)
            if distance <= self.config.own_replay_distance:
                reasons[i] = f"replay of its own previous update (relative distance {distance:.2g})"
        cosines, fresh, to_median = self._reference_cosines(updates, norms, global_dir)
        opposing = self._opposing(to_median, reasons)
        reasons.update(opposing)
        band = self.config.noise_band / np.sqrt(self.dim)
        if self.config.detect_noise and n >= 3 and float(np.median(cosines)) > 2 * band:
            own, own_fresh = self._own_coherence(sketches, client_ids, global_dir)
            own_band = self.config.noise_band / np.sqrt(sketches.shape[1])
            fresh_judges = fresh is not None and float(np.median(fresh)) > 2 * band
            for i in range(n):
                own_cosine = own[i]
                if i in reasons or own_cosine is None or abs(own_cosine) > own_band:
                    continue
                if cosines[i] <= band:
                    reasons[i] = (
                        f"no contribution: cosine {cosines[i]:.3f} to the cohort's direction "
                        f"and {own_cosine:.3f} to its own previous update, both at noise level"
                    )
            for i in range(n):
                fresh_own = own_fresh[i]
                if (
                    i in reasons
                    or fresh is None
                    or not fresh_judges
                    or fresh_own is None
                    or abs(fresh_own) > own_band
                ):
                    continue
                if fresh[i] <= band:
                    reasons[i] = (
                        f"no fresh contribution: beyond the previous global update, cosine "
                        f"{fresh[i]:.3f} to the cohort's new direction and {fresh_own:.3f} to "
                        "its own previous update, both at noise level"
                    )
        for i, client in enumerate(client_ids):
            self._sketches[client] = sketches[i]
        return {
            client: Contribution(
                cosine=float(cosines[i]),
                fresh_cosine=None if fresh is None else float(fresh[i]),
                reason=reasons.get(i),
                poisoning=i in opposing,
            )
            for i, client in enumerate(client_ids)
        }

    def _opposing(self, cosines: npt.NDArray[np.float64], judged: dict[int, str]) -> dict[int, str]:
        """Updates that point against a cohort that agrees, with the reason for each.

        ``cosines`` are to the median of the whole cohort, not of the others: with two attackers
        among five sites the others' median mixes two honest updates with two attacks and points
        nowhere, while the median of all five stays with the honest majority. Counting the
        judged update in its reference only makes it look more aligned.
        """
        threshold = self.config.opposition_cosine
        n = len(cosines)
        if threshold is None or n < 3:
            return {}
        agreement = float(np.median(cosines))
        if agreement < self.config.opposition_agreement:
            return {}
        return {
            i: (
                f"opposes the cohort: cosine {cosines[i]:.3f} to its coordinate-wise median, "
                f"while the cohort agrees (median cosine {agreement:.3f})"
            )
            for i in range(n)
            if i not in judged and cosines[i] <= threshold
        }

    def record_global_update(self, update: npt.NDArray[np.floating]) -> None:
        self._previous_global = np.asarray(update, dtype=np.float64).copy()

    def _global_direction(self) -> npt.NDArray[np.float64] | None:
        if self._previous_global is None:
            return None
        norm = float(np.linalg.norm(self._previous_global))
        if norm == 0.0:
            return None
        unit: npt.NDArray[np.float64] = self._previous_global / norm
        return unit

    def _own_coherence(
        self,
        sketches: npt.NDArray[np.float32],
        client_ids: list[str],
        global_dir: npt.NDArray[np.float64] | None,
    ) -> tuple[list[float | None], list[float | None]]:
        """Cosine of each sketch to the same client's previous one, raw and with the global
        direction removed from both; ``None`` for a client seen for the first time.

        Noise is fresh every round, so a noise update does not resemble its predecessor; an
        honest client's update, however unlike the others' (rare labels), resembles its own.
        """
        g = None if global_dir is None else global_dir[self._sketch_index]
        if g is not None and float(np.linalg.norm(g)) > 0:
            g = g / np.linalg.norm(g)
        own: list[float | None] = []
        own_fresh: list[float | None] = []
        for i, client in enumerate(client_ids):
            previous = self._sketches.get(client)
            if previous is None:
                own.append(None)
                own_fresh.append(None)
                continue
            current = sketches[i].astype(np.float64)
            before = previous.astype(np.float64)
            own.append(_cosine(current, before))
            if g is None:
                own_fresh.append(None)
            else:
                own_fresh.append(_cosine(current - (current @ g) * g, before - (before @ g) * g))
        return own, own_fresh

    @staticmethod
    def _reference_cosines(
        updates: npt.NDArray[np.floating],
        norms: npt.NDArray[np.float64],
        global_dir: npt.NDArray[np.float64] | None,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None, npt.NDArray[np.float64]]:
        """Cosines of each update to the median of the others, the same beyond the previous
        global direction (``None`` without one), and cosines to the median of the cohort."""
        n = updates.shape[0]
        if n < 3:
            return np.ones(n), None, np.ones(n)
        p = leave_one_out_median_products(updates, global_dir)
        tiny = 1e-300
        cosines = p["ul"] / np.maximum(norms * np.sqrt(p["ll"]), tiny)
        to_median = p["um"] / np.maximum(norms * np.sqrt(p["mm"]), tiny)
        if global_dir is None:
            return cosines, None, to_median
        residual_dot = p["ul"] - p["ug"] * p["lg"]
        residual_u = np.maximum(norms**2 - p["ug"] ** 2, 0.0)
        residual_l = np.maximum(p["ll"] - p["lg"] ** 2, 0.0)
        fresh = residual_dot / np.maximum(np.sqrt(residual_u * residual_l), tiny)
        return cosines, fresh, to_median

    def state_dict(self) -> dict[str, object]:
        return {
            "previous_global": self._previous_global,
            "sketches": dict(self._sketches),
            "sketch_index": self._sketch_index,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        previous = state["previous_global"]
        self._previous_global = None if previous is None else np.asarray(previous, np.float64)
        sketches = state["sketches"]
        assert isinstance(sketches, dict)
        self._sketches = {str(k): np.asarray(v, np.float32) for k, v in sketches.items()}
        self._sketch_index = np.asarray(state["sketch_index"], dtype=np.int64)


def _row_dots(
    updates: npt.NDArray[np.floating], vector: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    dots = np.zeros(updates.shape[0])
    for start in range(0, updates.shape[1], _BLOCK):
        dots += (
            updates[:, start : start + _BLOCK].astype(np.float64) @ vector[start : start + _BLOCK]
        )
    return dots


def _cosine(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float:
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    denominator = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return float(a64 @ b64) / denominator if denominator > 0 else 0.0


def _relative_distance(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float:
    """‖a − b‖ / ‖b‖ in float64; 0 for two zero vectors, infinite from a zero ``b`` otherwise."""
    b64 = b.astype(np.float64)
    difference = float(np.linalg.norm(a.astype(np.float64) - b64))
    reference = float(np.linalg.norm(b64))
    if reference > 0:
        return difference / reference
    return 0.0 if difference == 0 else math.inf
