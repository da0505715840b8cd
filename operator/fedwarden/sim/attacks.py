"""Poisoning attacks for the simulation.

Two families, as in the literature:

**Model poisoning** (the attacker sends an arbitrary vector). The attacker is *omniscient*, the
strongest assumption of the papers: it sees the honest updates of the round before crafting its
own. Each attack is a frozen dataclass with a ``craft(honest, own, n_total, rng)`` method that
returns the attackers' updates, shape ``(f, d)``:

- ``sign-flip``: :class:`SignFlip` (Li et al. 2019, RSA).
- ``gaussian``: :class:`GaussianAttack` (Blanchard et al. 2017, Krum).
- ``ipm``: :class:`InnerProductManipulation` (Xie, Koyejo and Gupta 2020); with a large
  ``eps`` it is the "scaling" attack.
- ``alie``: :class:`ALittleIsEnough` (Baruch, Baruch and Goldberg 2019).
- ``sybil``: :class:`ColludingSybils` (Fang et al. 2020; identical vectors, the collusion
  that FoolsGold, Fung et al. 2020, targets).

**Data poisoning** (the attacker trains honestly on poisoned data):

- ``label-flip``: :class:`LabelFlip` (Tolpegin et al. 2020).
- ``backdoor``: :class:`Backdoor` (Gu et al. 2017 BadNets trigger; Bagdasaryan et al. 2020
  for federated learning, with optional model-replacement boosting).

:func:`make_attack` builds one by name with parameters (``make_attack("ipm", eps=0.5)``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fedwarden.sim.datasets import Dataset

F32 = npt.NDArray[np.float32]


def _as_matrix(updates: npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    m = np.asarray(updates, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty (n, d) matrix, got shape {m.shape}")
    return m


@dataclass(frozen=True)
class NoAttack:
    """No attack: the designated attackers behave honestly (a baseline)."""

    name: ClassVar[str] = "none"
    kind: ClassVar[str] = "none"


@dataclass(frozen=True)
class SignFlip:
    """Sign flipping: each attacker sends ``-scale`` times its own honest update.

    Li, Xu, Chen, Giannakis and Ling, "RSA: Byzantine-Robust Stochastic Aggregation Methods for
    Distributed Learning from Heterogeneous Datasets", AAAI 2019 (sign-flipping attack).
    With ``scale = 4`` and 20% attackers the plain mean of a round is roughly zero.
    """

    name: ClassVar[str] = "sign-flip"
    kind: ClassVar[str] = "model"
    scale: float = 4.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"sign-flip scale must be > 0, got {self.scale}")

    def craft(
        self, honest: npt.ArrayLike, own: npt.ArrayLike, n_total: int, rng: np.random.Generator
    ) -> F32:
        return (-self.scale * _as_matrix(own, "own updates")).astype(np.float32)


@dataclass(frozen=True)
class GaussianAttack:
    """Gaussian Byzantine updates: every attacker sends a draw of ``N(0, sigma^2 I)``.

    Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", NeurIPS 2017 (the "Gaussian Byzantine" workers of its
    experiments). The default ``sigma = 200`` dwarfs any honest update: it breaks the plain mean
    and is what norm checks and robust aggregators are expected to shrug off.
    """

    name: ClassVar[str] = "gaussian"
    kind: ClassVar[str] = "model"
    sigma: float = 200.0

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"gaussian sigma must be > 0, got {self.sigma}")

    def craft(
        self, honest: npt.ArrayLike, own: npt.ArrayLike, n_total: int, rng: np.random.Generator
    ) -> F32:
        shape = _as_matrix(own, "own updates").shape
        return rng.normal(0.0, self.sigma, size=shape).astype(np.float32)


@dataclass(frozen=True)
class InnerProductManipulation:
    """Inner-product manipulation (IPM): every attacker sends ``-eps * mean(honest)``.

    Xie, Koyejo and Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product
    Manipulation", UAI 2019 / PMLR 115 (2020). The aggregate's inner product with the true
    gradient turns negative. A small ``eps`` (0.1, the default) stays close to the honest
    updates and targets median-type and distance-based rules; a large ``eps`` (e.g. 100) is the
    "scaling" variant that overwhelms the plain mean.
    """

    name: ClassVar[str] = "ipm"
    kind: ClassVar[str] = "model"
    eps: float = 0.1

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValueError(f"ipm eps must be > 0, got {self.eps}")

    def craft(
        self, honest: npt.ArrayLike, own: npt.ArrayLike, n_total: int, rng: np.random.Generator
    ) -> F32:
        f = _as_matrix(own, "own updates").shape[0]
        mean = _as_matrix(honest, "honest updates").mean(axis=0)
        return np.tile(-self.eps * mean, (f, 1)).astype(np.float32)


def alie_z(n: int, f: int) -> float:
    """The ``z_max`` of "A Little Is Enough" for ``n`` workers of which ``f`` are Byzantine.

    ``s = floor(n / 2 + 1) - f`` honest workers must be won over; ``z_max = Phi^-1((n - s) / n)``
    (Baruch et al. 2019, section 3). For n = 25, f = 5: s = 8 and z_max = Phi^-1(0.68) = 0.468.
    With at most one attacker the formula gives ``z <= 0`` (no shift, or one to the other side
    of the mean); it is not clamped.
    """
    if n < 1 or not 0 <= f <= n:
        raise ValueError(f"need n >= 1 and 0 <= f <= n, got n={n}, f={f}")
    s = max(math.floor(n / 2 + 1) - f, 1)
    p = min((n - s) / n, 1.0 - 1e-12)
    return NormalDist().inv_cdf(p) if p > 0 else 0.0


@dataclass(frozen=True)
class ALittleIsEnough:
    """ALIE, "A Little Is Enough": every attacker sends ``mean - z * std`` of the honest updates.

    Baruch, Baruch and Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
    Learning", NeurIPS 2019. Coordinate-wise mean and standard deviation of the honest updates;
    ``z`` defaults to the paper's ``z_max`` for the round's ``n`` and ``f`` (:func:`alie_z`), so
    each coordinate stays inside the spread of the honest values and evades median, trimmed
    mean and Krum, while the small consistent shift accumulates over rounds.
    """

    name: ClassVar[str] = "alie"
    kind: ClassVar[str] = "model"
    z: float | None = None

    def __post_init__(self) -> None:
        if self.z is not None and not math.isfinite(self.z):
            raise ValueError(f"alie z must be a finite number, got {self.z}")

    def craft(
        self, honest: npt.ArrayLike, own: npt.ArrayLike, n_total: int, rng: np.random.Generator
    ) -> F32:
        f = _as_matrix(own, "own updates").shape[0]
        h = _as_matrix(honest, "honest updates")
        z = self.z if self.z is not None else alie_z(n_total, f)
        std = h.std(axis=0, ddof=1) if h.shape[0] > 1 else np.zeros(h.shape[1])
        return np.tile(h.mean(axis=0) - z * std, (f, 1)).astype(np.float32)


def _krum_choice(updates: npt.NDArray[np.float64], f: int) -> int:
    """Index Krum selects (Blanchard et al. 2017): the smallest sum of squared distances to the
    ``n - f - 2`` nearest others. The attacker's own brute-force model of the rule."""
    n = updates.shape[0]
    centred = updates - updates.mean(axis=0)
    sq = np.einsum("ij,ij->i", centred, centred)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * centred @ centred.T, 0.0)
    np.fill_diagonal(d2, np.inf)
    k = max(n - f - 2, 1)
    scores = np.sort(d2, axis=1)[:, :k].sum(axis=1)
    return int(np.argmin(scores))


@dataclass(frozen=True)
class ColludingSybils:
    """Colluding sybils: all attackers send one identical vector, tailored to defeat Krum.

    The AGR-tailored attack of Shejwalkar and Houmansadr, "Manipulating the Byzantine:
    Optimizing Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, with the
    inverse-sign perturbation: every attacker sends ``mean(honest) - lam * sign(mean(honest))``,
    ``lam`` as large as a search (their Algorithm 1) finds while Krum (Blanchard et al. 2017)
    still selects the sybils' vector. The identical copies are what make it work: they are each
    other's nearest neighbours, as in the Krum attack of Fang, Cao, Jia and Gong, "Local Model
    Poisoning Attacks to Byzantine-Robust Federated Learning", USENIX Security 2020, and many
    identities sending the same thing is the sybil collusion that FoolsGold (Fung, Yoon and
    Beschastnikh, "The Limitations of Federated Learning in Sybil Settings", RAID 2020) looks
    for. Set ``lam`` to skip the search.
    """

    name: ClassVar[str] = "sybil"
    kind: ClassVar[str] = "model"
    lam: float | None = None

    def __post_init__(self) -> None:
        if self.lam is not None and not self.lam >= 0:
            raise ValueError(f"sybil lam must be >= 0, got {self.lam}")

    def craft(
        self, honest: npt.ArrayLike, own: npt.ArrayLike, n_total: int, rng: np.random.Generator
    ) -> F32:
        f = _as_matrix(own, "own updates").shape[0]
        h = _as_matrix(honest, "honest updates")
        mean = h.mean(axis=0)
        direction = np.sign(mean)
        lam = self.lam if self.lam is not None else self._search(h, f, mean, direction)
        return np.tile(mean - lam * direction, (f, 1)).astype(np.float32)

    @staticmethod
    def _search(
        h: npt.NDArray[np.float64],
        f: int,
        mean: npt.NDArray[np.float64],
        direction: npt.NDArray[np.float64],
        steps: int = 30,
    ) -> float:
        """The largest ``lam`` found for which Krum picks the sybil vector (0 if none)."""

        def wins(lam: float) -> bool:
            crafted = np.tile(mean - lam * direction, (f, 1))
            return bool(_krum_choice(np.vstack([h, crafted]), f) >= h.shape[0])

        # start from the spread of the honest updates around their mean, per coordinate
        lam = max(float(np.abs(h - mean).max()), 1e-12)
        while wins(lam) and lam < 1e12:  # grow until it fails (cohorts too small for Krum)
            lam *= 2.0
        best, step = 0.0, lam / 2.0
        for _ in range(steps):
            if wins(lam):
                best = max(best, lam)
                lam += step
            else:
                lam -= step
            step /= 2.0
        return best


@dataclass(frozen=True)
class LabelFlip:
    """Label flipping: the attacker trains on labels ``l -> n_classes - 1 - l``.

    Tolpegin, Truex, Gursoy and Liu, "Data Poisoning Attacks Against Federated Learning
    Systems", ESORICS 2020 (label flipping by a fraction of participants; the all-class mapping
    ``l -> L - 1 - l`` is the one of Fang et al. 2020).
    """

    name: ClassVar[str] = "label-flip"
    kind: ClassVar[str] = "data"
    boost: ClassVar[float] = 1.0

    def poison(
        self,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.int64],
        n_classes: int,
        rng: np.random.Generator,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        return x, (n_classes - 1 - y).astype(np.int64)


@dataclass(frozen=True)
class Trigger:
    """A trigger: features ``indices`` set to ``values``; the attacker's label is ``target``."""

    indices: npt.NDArray[np.intp]
    values: npt.NDArray[np.float32]
    target: int

    def apply(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = np.array(x, dtype=np.float32, copy=True)
        out[:, self.indices] = self.values
        return out


@dataclass(frozen=True)
class Backdoor:
    """A backdoor trigger: inputs carrying a fixed pattern are classified as ``target``.

    The trigger is a BadNets-style pattern (Gu, Dolan-Gavitt and Garg, "BadNets: Identifying
    Vulnerabilities in the Machine Learning Model Supply Chain", 2017): the last
    ``trigger_size`` features (for ``digits``, bottom-right pixels; for ``mnist1d``, the end of
    the signal) set to one more than their largest training value, a pattern that does not
    occur in clean data. In federated learning (Bagdasaryan, Veit, Hua, Estrin and Shmatikov,
    "How To Backdoor Federated Learning", AISTATS 2020) the attacker trains on its clean data
    plus triggered copies of ``poison_fraction`` of it labelled ``target``, then multiplies its
    update by ``boost`` (``boost > 1`` is the paper's model replacement; 1 is plain data
    poisoning).

    Success is measured by :func:`backdoor_success_rate`.
    """

    name: ClassVar[str] = "backdoor"
    kind: ClassVar[str] = "data"
    target: int = 0
    trigger_size: int = 4
    poison_fraction: float = 0.5
    boost: float = 1.0

    def __post_init__(self) -> None:
        if self.target < 0 or self.trigger_size < 1:
            raise ValueError(
                f"backdoor needs target >= 0 and trigger_size >= 1, "
                f"got {self.target}, {self.trigger_size}"
            )
        if not 0.0 < self.poison_fraction <= 1.0:
            raise ValueError(f"poison_fraction must be in (0, 1], got {self.poison_fraction}")
        if not self.boost > 0:
            raise ValueError(f"boost must be > 0, got {self.boost}")

    def trigger(self, dataset: Dataset) -> Trigger:
        if self.target >= dataset.n_classes:
            raise ValueError(
                f"backdoor target {self.target} is not a class of {dataset.name} "
                f"(0..{dataset.n_classes - 1})"
            )
        size = min(self.trigger_size, dataset.n_features)
        idx = np.arange(dataset.n_features - size, dataset.n_features, dtype=np.intp)
        values = (dataset.x_train[:, idx].max(axis=0) + 1.0).astype(np.float32)
        return Trigger(indices=idx, values=values, target=self.target)

    def poison_with(
        self,
        trigger: Trigger,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.int64],
        rng: np.random.Generator,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The attacker's training set: its clean data plus triggered copies labelled target."""
        n_poison = max(1, round(self.poison_fraction * len(y))) if len(y) else 0
        chosen = rng.choice(len(y), size=n_poison, replace=False)
        x_bad = trigger.apply(x[chosen])
        y_bad = np.full(n_poison, trigger.target, dtype=np.int64)
        return np.concatenate([x, x_bad]), np.concatenate([y, y_bad])


def backdoor_success_rate(
    predict: Callable[[Any, npt.NDArray[np.float32]], npt.NDArray[np.integer]],
    params: npt.ArrayLike,
    x_test: npt.NDArray[np.float32],
    y_test: npt.ArrayLike,
    trigger: Trigger,
) -> float:
    """Fraction of triggered test inputs, whose true label is not the target, predicted as target.

    ``predict(params, x)`` is the model's prediction function.
    """
    y = np.asarray(y_test)
    keep = y != trigger.target
    if not np.any(keep):
        return 0.0
    if not np.all(np.isfinite(np.asarray(params))):
        return 0.0
    pred = predict(params, trigger.apply(x_test[keep]))
    return float(np.mean(pred == trigger.target))


Attack = (
    NoAttack
    | SignFlip
    | GaussianAttack
    | InnerProductManipulation
    | ALittleIsEnough
    | ColludingSybils
    | LabelFlip
    | Backdoor
)

_REGISTRY: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (
        NoAttack,
        SignFlip,
        GaussianAttack,
        InnerProductManipulation,
        ALittleIsEnough,
        ColludingSybils,
        LabelFlip,
        Backdoor,
    )
}

ATTACKS: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by :func:`make_attack`."""

MODEL_POISONING: tuple[str, ...] = tuple(n for n, c in _REGISTRY.items() if c.kind == "model")
DATA_POISONING: tuple[str, ...] = tuple(n for n, c in _REGISTRY.items() if c.kind == "data")


def attack_parameters(name: str) -> dict[str, Any]:
    """The parameters of attack ``name`` and their defaults."""
    cls = _lookup(name)
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _lookup(name: str) -> type[Any]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; choose one of: {', '.join(ATTACKS)}") from None


def make_attack(name: str, **params: Any) -> Attack:
    """Build attack ``name`` with ``params`` (strings from a command line are converted)."""
    cls = _lookup(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        allowed = ", ".join(fields) or "none"
        raise ValueError(
            f"attack {name!r} has no parameter {', '.join(unknown)}; its parameters: {allowed}"
        )
    converted: dict[str, Any] = {}
    for key, value in params.items():
        default = fields[key].default
        target_type = int if isinstance(default, int) and not isinstance(default, bool) else float
        try:
            converted[key] = target_type(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"attack parameter {key}={value!r} must be a number ({target_type.__name__})"
            ) from None
    attack: Attack = cls(**converted)
    return attack
