"""L2 clipping of client updates: fixed, and adaptive quantile clipping.

Clipping every update to an L2 norm C bounds each client's influence on the aggregate; both the
robust aggregators' guarantees and the DP sensitivity argument (:mod:`.sensitivity`) rest on it.

Adaptive clipping follows Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning
with Adaptive Clipping", NeurIPS 2021 (arXiv:1905.03871), Algorithm 1. After a round in which
the cohort's update norms were ``‖x_i‖``, with ``b_i = 1[‖x_i‖ ≤ C]``::

    b̄ = 1/2 + (Σ (b_i − 1/2) + N(0, σ_b²)) / m          (m: expected cohort size, or n)
    C ← C · exp(−η (b̄ − γ))

so C *shrinks* when more than the target quantile γ of the updates already lies under C, and
grows otherwise; its fixed point is the γ-quantile of the norms. The noise of a round is computed
with that round's C (the value of :attr:`Clipper.clip_norm` *before* :meth:`Clipper.update`).

Flower 1.42's ``DifferentialPrivacyServerSideAdaptiveClipping``
(``flwr/serverapp/strategy/dp_adaptive_clipping.py``, ``_geometric_update`` and
``aggregate_train``) feeds the fraction of *clipped* updates (``norm_bit = scaling_factor < 1``)
into the same formula, so C shrinks when many updates are clipped: its fixed point is the
(1 − γ)-quantile and it is unstable (C collapses towards 0 or grows without bound), and it adds
the round's noise with the C already updated for the next round. The tests show both.

Privacy of the count query: with DP on, ``Σ b_i`` is released (noised) too. Centring the bits at
1/2 makes its add/remove sensitivity 1/2, so by the paper's Theorem 1 a round is as private as
one Gaussian query with noise multiplier ``σ = (σ_Δ⁻² + (2σ_b)⁻²)^(−1/2)``. To spend a total of
σ per round, the update query must use the larger :func:`adjusted_noise_multiplier`
``σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2)``. Under replace-one a bit can flip from 0 to 1, sensitivity 1,
and the formula uses σ_b instead of 2σ_b.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.dp import noise_generator

FloatArray = npt.NDArray[np.floating[Any]]
Float64Array = npt.NDArray[np.float64]

_BLOCK_ELEMENTS = 1 << 21
"""Column blocks hold about this many elements (16 MiB in float64), whatever n is."""


def _check_clip_norm(clip_norm: float, what: str = "clip_norm") -> float:
    value = float(clip_norm)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a finite number > 0, got {clip_norm!r}")
    return value


def _row_norms(updates: FloatArray) -> Float64Array:
    """L2 norm of each row, accumulated in float64 over column blocks (no full float64 copy)."""
    matrix = np.asarray(updates)
    if matrix.ndim != 2:
        raise ValueError(f"updates must be a 2-D array (n_clients, d), got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise ValueError(
            f"updates must have a floating dtype (float32 or float64), got {matrix.dtype}"
        )
    n, d = matrix.shape
    squares = np.zeros(n, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, d, block):
        chunk = matrix[:, start : start + block].astype(np.float64)
        np.square(chunk, out=chunk)
        squares += chunk.sum(axis=1)
    return np.sqrt(squares)


def clip_to_norm(updates: FloatArray, clip_norm: float) -> tuple[FloatArray, Float64Array]:
    """Scale every row of ``updates`` with L2 norm above ``clip_norm`` down to it.

    Returns ``(clipped, norms)``: a clipped copy in the input's dtype, and the original L2 norms
    (float64, shape ``(n,)``). Norms are accumulated in float64 over column blocks. A scaled row
    is shrunk by a few units in the last place more than ``C / ‖x‖`` so that rounding to the
    output dtype can never leave it above C: the DP sensitivity argument needs ``‖x‖ ≤ C``
    exactly, not approximately.

    Raises:
        ValueError: ``updates`` is not a 2-D floating array, contains NaN or infinity, or
            ``clip_norm`` is not a finite number > 0.
    """
    c = _check_clip_norm(clip_norm)
    matrix = np.asarray(updates)
    norms = _row_norms(matrix)
    if not np.all(np.isfinite(norms)):
        bad = np.flatnonzero(~np.isfinite(norms)).tolist()
        raise ValueError(f"updates must be finite; rows {bad[:10]} contain NaN or infinity")
    dtype = matrix.dtype
    n, d = matrix.shape
    # relative error of the float64 norm (≤ d·u64) plus two roundings in the output dtype
    margin = 4.0 * float(np.finfo(dtype).eps) + d * float(np.finfo(np.float64).eps)
    factor = np.ones(n, dtype=np.float64)
    over = norms > c
    factor[over] = (c / norms[over]) * (1.0 - margin)
    if not np.any(over):
        return matrix.copy(), norms
    cast = factor.astype(dtype)
    # round the scale factors towards zero, never up, when casting to the output dtype
    up = cast.astype(np.float64) > factor
    cast[up] = np.nextafter(cast[up], dtype.type(0))
    clipped: FloatArray = matrix * cast[:, None]
    return clipped, norms


@runtime_checkable
class Clipper(Protocol):
    """A clipping policy: the C of the current round, updated from the round's norms."""

    @property
    def clip_norm(self) -> float:
        """The C to clip to (and to scale DP noise with) in the current round."""
        ...

    def update(self, norms: npt.ArrayLike) -> None:
        """Move to the next round's C, after the round, given its updates' original norms."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state for a checkpoint."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        ...


class FixedClipper:
    """Clip every round to the same C."""

    def __init__(self, clip_norm: float) -> None:
        self._clip_norm = _check_clip_norm(clip_norm)

    @property
    def clip_norm(self) -> float:
        return self._clip_norm

    def update(self, norms: npt.ArrayLike) -> None:
        """Nothing to learn: C stays fixed."""

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "clip_norm": self._clip_norm}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != "fixed":
            raise ValueError(f"not a fixed clipper's state: kind={state.get('kind')!r}")
        saved = _check_clip_norm(state["clip_norm"])
        if not math.isclose(saved, self._clip_norm, rel_tol=1e-12):
            raise ValueError(
                f"checkpoint was clipped at C={saved}, this clipper uses C={self._clip_norm}; "
                "refusing to mix them"
            )


class AdaptiveClipper:
    """Quantile-tracking clipping norm (Andrew et al., NeurIPS 2021, Algorithm 1).

    Args:
        initial_clip_norm: C before the first round.
        target_quantile: γ in (0, 1), the fraction of updates that should end up under C.
        learning_rate: η > 0 of the geometric update ``C ← C·exp(−η(b̄ − γ))``; the paper uses 0.2.
        count_noise_std: σ_b ≥ 0, standard deviation of the Gaussian noise on the count of
            unclipped updates. 0 turns DP on the count off (only correct without DP); with DP the
            paper suggests ``expected_clients / 20``, and the update query's noise multiplier must
            then be raised with :func:`adjusted_noise_multiplier`.
        rng: generator for that noise; by default one seeded from the OS CSPRNG
            (:func:`fedwarden.pipeline.dp.noise_generator`).
        expected_clients: m, the denominator of b̄. The paper divides by the expected cohort
            size, a public constant, so that the release does not depend on how many clients
            actually took part (which is private under add/remove with Poisson sampling). ``None``
            divides by the number of norms of the round (right for fixed-size cohorts).
    """

    def __init__(
        self,
        initial_clip_norm: float,
        target_quantile: float = 0.5,
        learning_rate: float = 0.2,
        count_noise_std: float = 0.0,
        rng: np.random.Generator | None = None,
        *,
        expected_clients: float | None = None,
    ) -> None:
        self._clip_norm = _check_clip_norm(initial_clip_norm, "initial_clip_norm")
        gamma = float(target_quantile)
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"target_quantile must be in (0, 1), got {target_quantile!r}")
        eta = float(learning_rate)
        if not (math.isfinite(eta) and eta > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        sigma_b = float(count_noise_std)
        if not (math.isfinite(sigma_b) and sigma_b >= 0):
            raise ValueError(
                f"count_noise_std must be a finite number >= 0, got {count_noise_std!r}"
            )
        if expected_clients is not None and not (
            math.isfinite(expected_clients) and expected_clients > 0
        ):
            raise ValueError(f"expected_clients must be > 0 or None, got {expected_clients!r}")
        self.target_quantile = gamma
        self.learning_rate = eta
        self.count_noise_std = sigma_b
        self.expected_clients = None if expected_clients is None else float(expected_clients)
        self._rng = rng if rng is not None or sigma_b == 0 else noise_generator(None)
        self.last_unclipped_fraction: float | None = None
        """b̄ of the last update (noised when σ_b > 0), for reporting."""

    @property
    def clip_norm(self) -> float:
        return self._clip_norm

    def update(self, norms: npt.ArrayLike) -> None:
        """Apply one geometric step from this round's original (pre-clipping) update norms.

        A round without updates leaves C unchanged.
        """
        values = np.asarray(norms, dtype=np.float64).reshape(-1)
        if values.size and not np.all(np.isfinite(values) & (values >= 0)):
            raise ValueError("norms must be finite and >= 0")
        n = values.size
        if n == 0:
            return
        unclipped = int(np.count_nonzero(values <= self._clip_norm))
        noise = 0.0
        if self.count_noise_std > 0:
            assert self._rng is not None
            noise = float(self._rng.normal(0.0, self.count_noise_std))
        m = self.expected_clients if self.expected_clients is not None else float(n)
        fraction = 0.5 + (unclipped - n / 2.0 + noise) / m
        self.last_unclipped_fraction = fraction
        self._clip_norm *= math.exp(-self.learning_rate * (fraction - self.target_quantile))

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "adaptive",
            "clip_norm": self._clip_norm,
            "target_quantile": self.target_quantile,
            "learning_rate": self.learning_rate,
            "count_noise_std": self.count_noise_std,
            "expected_clients": self.expected_clients,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore C (the only learned state; γ, η and σ_b stay as configured)."""
        if state.get("kind") != "adaptive":
            raise ValueError(f"not an adaptive clipper's state: kind={state.get('kind')!r}")
        self._clip_norm = _check_clip_norm(state["clip_norm"])


def adjusted_noise_multiplier(
    noise_multiplier: float,
    count_noise_std: float,
    relation: Literal["add-remove", "replace-one"] = "add-remove",
) -> float:
    """σ_Δ for the update query so that update + clipped-count queries together spend σ.

    Andrew et al. 2021, Theorem 1: releasing the update with noise multiplier σ_Δ and the count
    of unclipped updates (bits centred at 1/2, add/remove sensitivity 1/2) with noise σ_b is as
    private as one Gaussian query with ``σ = (σ_Δ⁻² + (2σ_b)⁻²)^(−1/2)``; hence
    ``σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2)``. Under ``replace-one`` a bit changes by up to 1 and 2σ_b
    becomes σ_b. The accountant is then stepped with σ, while the update's noise uses σ_Δ ≥ σ.

    Raises:
        ValueError: σ or σ_b not > 0, or the count noise is too small to leave any budget for
            the update (needs 2σ_b > σ, or σ_b > σ under replace-one).
    """
    sigma = float(noise_multiplier)
    sigma_b = float(count_noise_std)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}")
    if not (math.isfinite(sigma_b) and sigma_b > 0):
        raise ValueError(
            "adaptive clipping under DP needs noise on the clipped count: count_noise_std must be "
            f"> 0 (the paper suggests expected clients / 20), got {count_noise_std!r}"
        )
    if relation == "add-remove":
        count_multiplier = 2.0 * sigma_b
    elif relation == "replace-one":
        count_multiplier = sigma_b
    else:
        raise ValueError(f"relation must be 'add-remove' or 'replace-one', got {relation!r}")
    if count_multiplier <= sigma:
        needed = sigma / 2.0 if relation == "add-remove" else sigma
        raise ValueError(
            f"count noise σ_b={sigma_b} leaves no privacy budget for the update at σ={sigma}: "
            f"σ_b must be > {needed} ({relation})"
        )
    return 1.0 / math.sqrt(sigma**-2 - count_multiplier**-2)
