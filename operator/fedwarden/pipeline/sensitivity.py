"""L2 sensitivity of each aggregator's output, for central DP on top of robust aggregation.

The orchestrator adds ``N(0, (σ·l2)²)`` to the aggregator's output and steps the accountant with
σ under the same neighbouring relation. :func:`aggregate_sensitivity` returns ``l2`` with the
argument that proves it. Every input row is an update clipped to the ball ``B_C`` of radius C
(the zero vector, used for refused updates, is one). Aggregation is unweighted (``weights=None``):
client-reported weights are attacker-controlled and make the sensitivity unbounded, so the DP
path never passes them.

Two kinds of argument, and the smaller valid bound is returned:

**Per-input (Lipschitz) bounds, replace-one only.** One of the ``n`` rows changes by Δ,
``‖Δ‖ ≤ 2C``. The mean moves by ‖Δ‖/n. Each order statistic of a coordinate is non-decreasing in
every input, and the sum of all of them grows by exactly the change of the one input, so the sum
of any *window* of order statistics moves by at most ``|Δ_j|`` in coordinate j: a trimmed mean
over a window of w values moves by ``|Δ_j|/w`` per coordinate, ``‖Δ‖/w`` in L2 (median: w = 1 for
odd n, 2 for even n). Under add/remove the cohort size changes, and with it the trimming
count, the window and every selection, so these bounds do not carry over.

**Diameter bounds, any relation.** If every possible output lies in a ball of radius R around
the origin, two outputs differ by at most 2R, whatever differs between the two cohorts: their
size, one row or many. Krum and Multi-Krum select or average inputs, the geometric median's
Weiszfeld iterates are convex combinations of them, and centered clipping started from the origin
keeps every iterate a convex combination of the origin and the inputs: all stay in ``B_C``,
R = C. For a window mean a_j of the sorted values of coordinate j with t values trimmed below and
above (w = n − 2t kept): if a_j > 0, the w window values and the t values above them, all ≥ the
window maximum ≥ a_j, give ``(n − t)·a_j² ≤ Σ_i x_ij²`` (the window by Jensen, the upper tail
directly), and symmetrically for a_j < 0; summing over j, ``‖a‖² ≤ n·C²/(n − t)``. Trimmed mean:
R = C·√(n/(n−t)) ≤ C/√(1−β); median (t = ⌊(n−1)/2⌋): R < √2·C. Bulyan averages, per coordinate,
κ = θ − 2f of its θ = n − 2f selected rows, so by Jensen ``‖a‖² ≤ θ·C²/κ``. Block-wise DnC
averages, in each block b of coordinates, m = n − ⌊φn⌋ rows chosen for that block, so by Jensen
``‖a_b‖² ≤ (1/m) Σ_{kept} ‖x_{i,b}‖² ≤ (1/m) Σ_i ‖x_{i,b}‖²``, and summing over the blocks
``‖a‖² ≤ n·C²/m``: R = C·√(n/(n − ⌊φn⌋)) ≤ C/√(1−φ). Which rows are kept depends on the whole
cohort, so it has no per-input bound.

Neighbouring relations (they must match the accountant's, :attr:`Accountant.relation`):

- ``replace-one`` (fixed-size cohorts): the cohort size n is public and the same on both sides.
- ``add-remove`` (Poisson sampling): the size changes by one and is itself private, so the noise
  scale must not depend on it: diameter bounds are taken over every cohort size the aggregator
  accepts. FedAvg is the exception (McMahan, Ramage, Talwar, Zhang, "Learning Differentially
  Private Recurrent Language Models", ICLR 2018): the DP output is the *fixed-denominator*
  estimate ``Σ_i x_i / n`` with n fixed in advance (the expected cohort size q·N), not the mean
  over whoever took part; adding or removing one client moves it by at most C/n.

Cohort-dependent filtering: when whether a row is kept (or zeroed) depends on *other* clients'
updates (a cohort outlier score, a free-rider test against a robust reference), one client's
data can change many rows. Pass ``rows_depend_on_cohort=True``: only diameter bounds survive.

Preaggregation: **bucketing** (random buckets of s, the permutation independent of the data)
puts a replaced client in one bucket, whose mean moves by at most 2C/s_min (s_min the smallest
bucket); the inner aggregator sees k = ⌈n/s⌉ rows. **NNM** replaces every row by the mean of its
n − f nearest rows, so one client appears in many mixed rows. In exact arithmetic a replaced
client changes its own mixed row by up to 2C and every other row by one neighbour swap, at most
2C/(n − f); but the neighbour sets come from distances computed in floating point through the
cohort's centred Gram matrix, which depends on the replaced client too, so an exact tie in
distance (which an adversarial cohort can arrange) can resolve differently on the two cohorts
and swap further neighbours of any row. No per-input bound is claimed for NNM: only the diameter
bound, which holds because mixed rows are means of clipped rows and stay in ``B_C``. **DnC**
keeps a subset of the clipped rows chosen by the cohort's spectrum, so one client can change
which others are kept: again only the diameter bound, on the ``n − ⌊φn⌋`` rows kept. Every
pre-aggregation keeps every row in ``B_C``, so diameter bounds hold unchanged.

Robust aggregators pay for their robustness: a bound independent of n (median, Krum, Multi-Krum,
Bulyan, geometric median, centered clipping: about 2C) against FedAvg's 2C/n means n/2 times as
much noise for the same ε. Each argument states that factor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedwarden.pipeline import aggregators
from fedwarden.pipeline.accounting import RELATIONS, Relation
from fedwarden.pipeline.errors import UnsoundPrivacyError

_IN_BALL = ("krum", "multi-krum", "geometric-median", "centered-clip")
_IN_BALL_WHY = {
    "krum": "Krum outputs one of its input rows",
    "multi-krum": "Multi-Krum outputs the average of m of its input rows",
    "geometric-median": (
        "every smoothed-Weiszfeld iterate of the geometric median is a convex combination of "
        "its input rows"
    ),
    "centered-clip": (
        "centered clipping starts at the origin and each step moves to a convex combination of "
        "the current iterate and the input rows, so every iterate stays in the convex ball"
    ),
}


@dataclass(frozen=True)
class Sensitivity:
    """L2 sensitivity of an aggregator's output, the relation it holds under, and why.

    Attributes:
        l2: the largest L2 distance between the outputs on two neighbouring cohorts.
        relation: ``add-remove`` or ``replace-one``; the accountant must use the same.
        argument: the proof sketch, in one paragraph, with the numbers filled in.
    """

    l2: float
    relation: Relation
    argument: str


@dataclass(frozen=True)
class _Setup:
    name: str
    params: dict[str, Any]
    preaggregation: str | None
    inner_min: int
    min_clients: int


def _trim(name: str, params: Mapping[str, Any], k: int) -> int:
    """Values trimmed per side when a window-mean aggregator sees k rows."""
    if name == "median":
        return (k - 1) // 2
    beta = float(params["beta"])
    return int(beta * k)


def _radius_sq(name: str, params: Mapping[str, Any], k: int) -> float:
    """(R / C)² for k input rows in the C-ball; R bounds the output's norm."""
    if name in _IN_BALL or name == "fedavg":
        return 1.0
    if name in ("median", "trimmed-mean"):
        return k / (k - _trim(name, params, k))
    if name == "block-dnc":
        return k / (k - int(float(params["filter_fraction"]) * k))
    if name == "bulyan":
        f = int(params["f"])
        theta = k - 2 * f
        return theta / (theta - 2 * f)
    raise AssertionError(name)  # pragma: no cover - names are checked first


def _radius_sq_sup(name: str, params: Mapping[str, Any], k_min: int) -> float:
    """sup over every cohort size k >= k_min of (R / C)²."""
    if name == "median":
        return 2.0  # k / (k − ⌊(k−1)/2⌋) < 2 for every k
    if name == "trimmed-mean":
        return 1.0 / (1.0 - float(params["beta"]))  # t = ⌊βk⌋ <= βk
    if name == "block-dnc":
        return 1.0 / (1.0 - float(params["filter_fraction"]))  # ⌊φk⌋ <= φk
    return _radius_sq(name, params, k_min)  # constant, or decreasing in k (Bulyan)


def _window(name: str, params: Mapping[str, Any], k: int) -> int | None:
    """w for aggregators that move by at most (Σ‖δ_a‖)/w when rows move by δ_a; else None."""
    if name == "fedavg":
        return k
    if name in ("median", "trimmed-mean"):
        return k - 2 * _trim(name, params, k)
    return None


def _setup(name: str, params: Mapping[str, Any]) -> _Setup:
    if name not in aggregators.names():
        raise ValueError(
            f"unknown aggregator {name!r}; choose one of: {', '.join(aggregators.names())}"
        )
    configured = aggregators.get(name, **dict(params))  # refuses unknown or impossible params
    effective = configured.params
    preaggregation = effective.get("preaggregation")
    inner_params = {k: v for k, v in effective.items() if k not in ("preaggregation",)}
    inner = aggregators.get(
        name,
        **{
            k: v
            for k, v in inner_params.items()
            if k not in ("bucket_size", "seed", "filter_fraction", "min_share")
            and not (name == "fedavg" and k == "f")
        },
    )
    return _Setup(
        name=name,
        params=inner_params,
        preaggregation=None if preaggregation is None else str(preaggregation),
        inner_min=inner.min_clients,
        min_clients=configured.min_clients,
    )


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def aggregate_sensitivity(
    aggregator: str,
    params: Mapping[str, Any],
    n: int,
    clip_norm: float,
    *,
    relation: Relation = "add-remove",
    rows_depend_on_cohort: bool = False,
) -> Sensitivity:
    """L2 sensitivity of ``aggregators.get(aggregator, **params)`` on updates clipped to C.

    Args:
        aggregator: one of :func:`fedwarden.pipeline.aggregators.names`.
        params: its parameters, as given to ``aggregators.get`` (``preaggregation`` included).
        n: replace-one: the cohort size (rows given to the aggregator, refused ones included as
            zeros). add-remove: used by FedAvg only, as the fixed denominator of ``Σ x_i / n``;
            robust aggregators get a bound valid for every cohort size.
        clip_norm: C, the norm every row is clipped to.
        relation: the accountant's neighbouring relation (``Accountant.relation``).
        rows_depend_on_cohort: True when which rows are kept or zeroed depends on other clients'
            updates; then only bounds that hold for any two cohorts are used.

    Raises:
        ValueError: unknown aggregator or parameters, n below the aggregator's minimum
            (replace-one), C not > 0, unknown relation.
        UnsoundPrivacyError: no sound bound is known for the combination.
    """
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {', '.join(RELATIONS)}, got {relation!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    c = float(clip_norm)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm!r}")
    setup = _setup(aggregator, params)
    if relation == "replace-one" and n < setup.min_clients:
        raise ValueError(
            f"{aggregator} with {dict(params)} needs at least {setup.min_clients} clients, n = {n}"
        )
    if relation == "replace-one":
        l2, argument = _replace_one(setup, n, c, rows_depend_on_cohort)
    else:
        l2, argument = _add_remove(setup, n, c, rows_depend_on_cohort)
    fedavg_l2 = (c if relation == "add-remove" else 2.0 * c) / n
    if setup.name != "fedavg" or setup.preaggregation is not None:
        ratio = l2 / fedavg_l2
        argument += (
            f" For comparison, FedAvg on {n} clients has sensitivity {_fmt(fedavg_l2)}: this "
            f"aggregator needs {_fmt(ratio)}× its noise for the same ε"
            + (" (a robust aggregator's bound does not shrink with n)." if ratio > 2 else ".")
        )
    argument += (
        " Rows are clipped to C and aggregated without client weights (reported weights are "
        "attacker-controlled and would make the sensitivity unbounded)."
    )
    return Sensitivity(l2=l2, relation=relation, argument=argument)


def _inner_rows(setup: _Setup, n: int) -> tuple[int, float | None, str]:
    """Rows the inner aggregator sees, the total row perturbation Σ‖δ_a‖ / C when one client's
    update is replaced (replace-one, rows independent; None if there is no such bound), and
    how that follows."""
    params = setup.params
    if setup.preaggregation == "bucketing":
        s = int(params["bucket_size"])
        k = math.ceil(n / s)
        smallest = n - s * (k - 1)
        return (
            k,
            2.0 / smallest,
            f"bucketing puts the client in one of k = ⌈{n}/{s}⌉ = {k} buckets (the shuffle does "
            f"not depend on the data), whose mean moves by at most 2C/{smallest} (smallest "
            "bucket)",
        )
    if setup.preaggregation == "dnc":
        kept = n - int(float(params["filter_fraction"]) * n)
        return (
            kept,
            None,
            f"DnC keeps k = {kept} of the {n} rows, chosen by the top singular vector of the "
            "whole centred cohort, so one client can change which other rows are kept; no "
            "per-input bound is claimed",
        )
    if setup.preaggregation == "nnm":
        return (
            n,
            None,
            "NNM can move many mixed rows: the client's own by up to 2C, and the others' "
            "neighbour sets are chosen from floating-point distances that depend on the whole "
            "cohort, so exact ties may resolve differently; no per-input bound is claimed",
        )
    return n, 2.0, "one row moves by ‖Δ‖ ≤ 2C"


def _diameter(setup: _Setup, k: int) -> tuple[float, str]:
    """(R / C)² for the inner aggregator on k rows in the C-ball, and why."""
    name, params = setup.name, setup.params
    r2 = _radius_sq(name, params, k)
    if name in _IN_BALL:
        return r2, f"{_IN_BALL_WHY[name]}, so it lies in the C-ball (R = C)"
    if name == "fedavg":
        return r2, "the mean of rows in the C-ball lies in it (R = C)"
    if name == "bulyan":
        f = int(params["f"])
        theta = k - 2 * f
        return r2, (
            f"Bulyan averages per coordinate κ = θ − 2f = {theta - 2 * f} of its θ = {theta} "
            f"selected rows, so by Jensen ‖out‖² ≤ θC²/κ (R = {_fmt(math.sqrt(r2))}·C)"
        )
    if name == "block-dnc":
        kept = k - int(float(params["filter_fraction"]) * k)
        return r2, (
            f"block-wise DnC averages, in each block of coordinates, {kept} of the {k} rows, "
            f"chosen by that block's spectrum (so one client can change which others are kept: "
            f"no per-input bound); by Jensen ‖out‖² ≤ kC²/{kept}, R = {_fmt(math.sqrt(r2))}·C"
        )
    t = _trim(name, params, k)
    return r2, (
        f"a window mean with t = {t} trimmed per side of k = {k} values satisfies "
        f"‖out‖² ≤ kC²/(k − t) (window by Jensen, upper tail above it), R = "
        f"{_fmt(math.sqrt(r2))}·C"
    )


def _replace_one(setup: _Setup, n: int, c: float, dependent: bool) -> tuple[float, str]:
    k, total, how = _inner_rows(setup, n)
    r2, why_ball = _diameter(setup, k)
    if setup.preaggregation is not None:
        why_ball = (
            f"pre-aggregated rows are clipped rows or means of them, so in the C-ball; {why_ball}"
        )
    diameter = 2.0 * math.sqrt(r2) * c
    head = f"Replace-one on a cohort of n = {n} rows clipped to C = {_fmt(c)}:"
    diameter_text = f"{why_ball}; any two outputs differ by at most 2R = {_fmt(diameter)}"
    window = _window(setup.name, setup.params, k)
    if total is None:
        return diameter, f"{head} {how}; {diameter_text}."
    if dependent:
        return diameter, (
            f"{head} rows may depend on the whole cohort (filtering), so only the diameter "
            f"bound holds: {diameter_text}."
        )
    if window is None:
        return diameter, f"{head} {diameter_text}."
    lipschitz = total * c / window
    kind = {"fedavg": "the mean", "median": "the median", "trimmed-mean": "the trimmed mean"}[
        setup.name
    ]
    lipschitz_text = (
        f"{how}; {kind} averages a window of w = {window} of the {k} values per coordinate, and "
        f"a window sum of order statistics moves by at most the change of the moved input, so "
        f"the output moves by at most {_fmt(total)}·C/{window} = {_fmt(lipschitz)}"
    )
    if lipschitz <= diameter:
        return lipschitz, f"{head} {lipschitz_text}."
    return diameter, (
        f"{head} {diameter_text}, which is smaller than the per-input bound "
        f"({_fmt(lipschitz)}: {lipschitz_text})."
    )


def _add_remove(setup: _Setup, n: int, c: float, dependent: bool) -> tuple[float, str]:
    if setup.name == "fedavg" and setup.preaggregation is None:
        if dependent:
            raise UnsoundPrivacyError(
                "fedavg under add/remove (Poisson sampling) with cohort-dependent filtering has "
                "no sensitivity bound: one client can change which of the other rows enter the "
                "fixed-denominator sum Σx/n. Use sampling='fixed' (replace-one), a robust "
                "aggregator, or filters that look at each update alone"
            )
        l2 = c / n
        return l2, (
            f"Add/remove (Poisson sampling), DP-FedAvg with a fixed denominator (McMahan et al., "
            f"ICLR 2018): the output is Σ x_i / n with n = {n} fixed in advance (the expected "
            f"cohort size), not the mean over the clients who took part; adding or removing one "
            f"row clipped to C = {_fmt(c)} moves it by at most C/n = {_fmt(l2)}."
        )
    # Every cohort size the aggregator accepts: the realised size is private under add/remove.
    if setup.preaggregation == "bucketing":
        k_min = setup.inner_min
        rows = "bucket means (in the C-ball)"
    elif setup.preaggregation == "dnc":
        k_min = setup.inner_min
        rows = "the rows DnC keeps"
    elif setup.preaggregation == "nnm":
        k_min = setup.min_clients
        rows = "NNM-mixed rows (in the C-ball)"
    else:
        k_min = setup.min_clients
        rows = "rows"
    r2 = _radius_sq_sup(setup.name, setup.params, k_min)
    l2 = 2.0 * math.sqrt(r2) * c
    _, why_ball = _diameter(setup, max(k_min, 1))
    if setup.name == "block-dnc":
        why_ball = (
            f"block-wise DnC averages, in each block of coordinates, k − ⌊φk⌋ rows, so by "
            f"Jensen ‖out‖² ≤ kC²/(k − ⌊φk⌋) ≤ C²/(1 − φ) for every k: R = {_fmt(math.sqrt(r2))}·C"
        )
    elif setup.name in ("median", "trimmed-mean"):
        limit = "2" if setup.name == "median" else f"1/(1 − β) = {_fmt(r2)}"
        why_ball = (
            f"a window mean with t values trimmed per side of k satisfies ‖out‖² ≤ kC²/(k − t) "
            f"(window by Jensen, upper tail above it), and k/(k − t) ≤ {limit} for every k, so "
            f"R = {_fmt(math.sqrt(r2))}·C"
        )
    elif setup.name == "bulyan":
        why_ball += f", largest at the smallest cohort it accepts (k = {k_min})"
    extra = " Dependence of rows on the cohort does not matter here." if dependent else ""
    return l2, (
        f"Add/remove (Poisson sampling): the cohort size changes and is private, so the bound "
        f"must hold for every size; on {rows} clipped to C = {_fmt(c)}, {why_ball}; any two "
        f"outputs differ by at most 2R = {_fmt(l2)}.{extra}"
    )


__all__ = ["RELATIONS", "Relation", "Sensitivity", "aggregate_sensitivity"]
