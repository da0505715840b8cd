"""Numpy models whose parameters are one flat vector.

A model's parameters are a single 1-D array (float32 in the simulation), so a client's update
is simply ``new - old`` of shape ``(d,)``, exactly what the pipeline aggregates. The models are
written against the array's dtype: pass float64 parameters and inputs to check gradients with
finite differences.

- :class:`LogisticRegression`: multinomial logistic regression (softmax cross-entropy),
  optional L2 penalty.
- :class:`MLP`: one hidden layer with ReLU, softmax cross-entropy.

:func:`local_sgd` is a client's local training: ``epochs`` passes of mini-batch SGD over its
shuffled data with a fixed learning rate (FedAvg's ClientUpdate, McMahan et al. 2017).
:func:`dp_sgd` is the same with example-level differential privacy (Abadi et al. 2016).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline import ParameterLayout

Array = npt.NDArray[np.floating]

MODELS: tuple[str, ...] = ("logreg", "mlp")
"""Names accepted by :func:`make_model`."""


class Model(Protocol):
    """What the simulation needs of a model."""

    @property
    def dim(self) -> int:
        """Number of parameters ``d``."""
        ...

    @property
    def layout(self) -> ParameterLayout:
        """The named tensors the flat parameters stand for (what a model file holds)."""
        ...

    def init(self, rng: np.random.Generator) -> npt.NDArray[np.float32]:
        """Fresh float32 parameters of shape ``(d,)``."""
        ...

    def loss_and_grad(
        self, params: Array, x: npt.NDArray[np.floating], y: npt.NDArray[np.integer]
    ) -> tuple[float, Array]:
        """Mean loss over the batch and its gradient with respect to ``params``."""
        ...

    def logits(self, params: Array, x: npt.NDArray[np.floating]) -> Array:
        """Class scores, shape ``(n, n_classes)``."""
        ...

    def predict(self, params: Array, x: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
        """Predicted labels."""
        ...


def _softmax_xent(logits: Array, y: npt.NDArray[np.integer]) -> tuple[float, Array]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    rows = np.arange(n)
    loss = float(np.mean(np.log(sums[:, 0]) - shifted[rows, y]))
    probs = exp / sums
    probs[rows, y] -= 1.0
    probs /= n
    return loss, probs


@dataclass(frozen=True)
class LogisticRegression:
    """Multinomial logistic regression: ``softmax(x W + b)``, parameters ``[W.ravel(), b]``."""

    n_features: int
    n_classes: int
    l2: float = 0.0

    @property
    def dim(self) -> int:
        return (self.n_features + 1) * self.n_classes

    @property
    def layout(self) -> ParameterLayout:
        return ParameterLayout(
            ("weight", "bias"), ((self.n_features, self.n_classes), (self.n_classes,))
        )

    def _split(self, params: Array) -> tuple[Array, Array]:
        k = self.n_features * self.n_classes
        return params[:k].reshape(self.n_features, self.n_classes), params[k:]

    def init(self, rng: np.random.Generator) -> npt.NDArray[np.float32]:
        return np.zeros(self.dim, dtype=np.float32)

    def logits(self, params: Array, x: npt.NDArray[np.floating]) -> Array:
        w, b = self._split(params)
        out: Array = np.asarray(x, dtype=params.dtype) @ w + b
        return out

    def loss_and_grad(
        self, params: Array, x: npt.NDArray[np.floating], y: npt.NDArray[np.integer]
    ) -> tuple[float, Array]:
        x = np.asarray(x, dtype=params.dtype)
        w, _ = self._split(params)
        loss, dlogits = _softmax_xent(self.logits(params, x), y)
        grad = np.empty_like(params)
        gw, gb = self._split(grad)
        np.matmul(x.T, dlogits, out=gw)
        gb[:] = dlogits.sum(axis=0)
        if self.l2:
            loss += 0.5 * self.l2 * float(np.sum(w * w))
            gw += self.l2 * w
        return loss, grad

    def predict(self, params: Array, x: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
        labels: npt.NDArray[np.int64] = np.argmax(self.logits(params, x), axis=1).astype(np.int64)
        return labels


@dataclass(frozen=True)
class MLP:
    """One hidden ReLU layer: ``softmax(relu(x W1 + b1) W2 + b2)``.

    Parameters are ``[W1.ravel(), b1, W2.ravel(), b2]``; weights start with He initialisation,
    biases at zero.
    """

    n_features: int
    n_classes: int
    hidden: int = 32

    @property
    def dim(self) -> int:
        return (self.n_features + 1) * self.hidden + (self.hidden + 1) * self.n_classes

    @property
    def layout(self) -> ParameterLayout:
        f, h, c = self.n_features, self.hidden, self.n_classes
        return ParameterLayout(
            ("hidden.weight", "hidden.bias", "output.weight", "output.bias"),
            ((f, h), (h,), (h, c), (c,)),
        )

    def _split(self, params: Array) -> tuple[Array, Array, Array, Array]:
        f, h, c = self.n_features, self.hidden, self.n_classes
        i1 = f * h
        i2 = i1 + h
        i3 = i2 + h * c
        return (
            params[:i1].reshape(f, h),
            params[i1:i2],
            params[i2:i3].reshape(h, c),
            params[i3:],
        )

    def init(self, rng: np.random.Generator) -> npt.NDArray[np.float32]:
        params = np.zeros(self.dim, dtype=np.float32)
        w1, _, w2, _ = self._split(params)
        w1[:] = rng.normal(0.0, np.sqrt(2.0 / self.n_features), size=w1.shape)
        w2[:] = rng.normal(0.0, np.sqrt(2.0 / self.hidden), size=w2.shape)
        return params

    def logits(self, params: Array, x: npt.NDArray[np.floating]) -> Array:
        w1, b1, w2, b2 = self._split(params)
        h = np.maximum(np.asarray(x, dtype=params.dtype) @ w1 + b1, 0.0)
        out: Array = h @ w2 + b2
        return out

    def loss_and_grad(
        self, params: Array, x: npt.NDArray[np.floating], y: npt.NDArray[np.integer]
    ) -> tuple[float, Array]:
        x = np.asarray(x, dtype=params.dtype)
        w1, b1, w2, b2 = self._split(params)
        pre = x @ w1 + b1
        h = np.maximum(pre, 0.0)
        loss, dlogits = _softmax_xent(h @ w2 + b2, y)
        grad = np.empty_like(params)
        gw1, gb1, gw2, gb2 = self._split(grad)
        np.matmul(h.T, dlogits, out=gw2)
        gb2[:] = dlogits.sum(axis=0)
        dh = dlogits @ w2.T
        dh[pre <= 0.0] = 0.0
        np.matmul(x.T, dh, out=gw1)
        gb1[:] = dh.sum(axis=0)
        return loss, grad

    def predict(self, params: Array, x: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
        labels: npt.NDArray[np.int64] = np.argmax(self.logits(params, x), axis=1).astype(np.int64)
        return labels


def make_model(name: str, n_features: int, n_classes: int, *, hidden: int = 32) -> Model:
    """Build a model by name (one of :data:`MODELS`)."""
    if n_features < 1 or n_classes < 2:
        raise ValueError(f"need n_features >= 1 and n_classes >= 2, got {n_features}, {n_classes}")
    if name == "logreg":
        return LogisticRegression(n_features, n_classes)
    if name == "mlp":
        if hidden < 1:
            raise ValueError(f"the MLP needs at least one hidden unit, got hidden={hidden}")
        return MLP(n_features, n_classes, hidden=hidden)
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")


def local_sgd(
    model: Model,
    params: npt.NDArray[np.float32],
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.integer],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """Train from ``params`` with mini-batch SGD; returns new parameters (input untouched).

    Each epoch visits the client's samples once in a fresh random order, in batches of
    ``batch_size`` (the last one may be smaller).
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}"
        )
    w = np.array(params, copy=True)
    n = len(y)
    if n == 0:
        return w
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            _, grad = model.loss_and_grad(w, x[batch], y[batch])
            w -= np.asarray(lr, dtype=w.dtype) * grad
    return w


def evaluate(
    model: Model,
    params: Array,
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.integer],
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy loss on ``(x, y)``.

    A model whose parameters are not finite (a poisoning attack can do that) has accuracy 0 and
    infinite loss rather than a misleading number.
    """
    if not np.all(np.isfinite(params)):
        return 0.0, float("inf")
    logits = model.logits(params, x)
    with np.errstate(over="ignore", invalid="ignore"):
        loss, _ = _softmax_xent(logits.astype(np.float64), np.asarray(y))
    acc = float(np.mean(np.argmax(logits, axis=1) == y))
    return acc, loss if np.isfinite(loss) else float("inf")


@dataclass(frozen=True)
class DPSGDConfig:
    """Example-level differential privacy for a client's local training (DP-SGD).

    Attributes:
        clip_norm: C, the L2 bound on each example's gradient.
        noise_multiplier: σ; each step adds N(0, (σC)²) to the sum of clipped gradients.
        sample_rate: q, the probability that an example is in a step's batch (Poisson
            sampling, which the accountant assumes). A pass over the data is ⌈1/q⌉ steps.
    """

    clip_norm: float
    noise_multiplier: float
    sample_rate: float

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")

    def steps_per_epoch(self) -> int:
        return math.ceil(1.0 / self.sample_rate)


def dp_sgd(
    model: Model,
    params: npt.NDArray[np.float32],
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.integer],
    *,
    epochs: int,
    lr: float,
    config: DPSGDConfig,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], int]:
    """DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) from ``params``.

    Each step draws a Poisson batch (every example independently with probability q), clips each
    example's gradient to C, adds N(0, (σC)²) to their sum and divides by the *expected* batch
    size q·n, so that neither the noise nor the step depends on how many examples were drawn.
    Returns the new parameters and the number of steps taken, which the client's accountant
    composes with (σ, q). ``rng`` drives the sampling and the noise: pass a generator seeded
    from the OS CSPRNG (:func:`fedwarden.pipeline.dp.noise_generator`) outside tests.
    """
    if epochs < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 1 and lr > 0, got {epochs}, {lr}")
    w = np.array(params, copy=True)
    n = len(y)
    if n == 0:
        return w, 0
    expected_batch = config.sample_rate * n
    steps = epochs * config.steps_per_epoch()
    for _ in range(steps):
        batch = np.flatnonzero(rng.random(n) < config.sample_rate)
        total = np.zeros(w.shape, dtype=np.float64)
        for i in batch:
            _, grad = model.loss_and_grad(w, x[i : i + 1], y[i : i + 1])
            norm = float(np.linalg.norm(grad))
            total += grad * min(1.0, config.clip_norm / norm) if norm > 0 else 0.0
        if config.noise_multiplier > 0:
            total += rng.normal(0.0, config.noise_multiplier * config.clip_norm, size=w.shape)
        w -= (lr * total / expected_batch).astype(w.dtype)
    return w, steps
