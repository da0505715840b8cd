"""Numpy models: gradients against finite differences, local SGD, evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from fedwarden.sim.datasets import load_dataset
from fedwarden.sim.models import MLP, LogisticRegression, evaluate, local_sgd, make_model


def _numeric_grad(model: object, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    eps = 1e-6
    grad = np.zeros_like(params)
    for j in range(params.size):
        e = np.zeros_like(params)
        e[j] = eps
        up, _ = model.loss_and_grad(params + e, x, y)  # type: ignore[attr-defined]
        down, _ = model.loss_and_grad(params - e, x, y)  # type: ignore[attr-defined]
        grad[j] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize(
    "model",
    [
        LogisticRegression(5, 3),
        LogisticRegression(5, 3, l2=0.1),
        MLP(5, 3, hidden=4),
    ],
    ids=["logreg", "logreg-l2", "mlp"],
)
def test_gradient_matches_finite_differences(model: object) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5))
    y = rng.integers(0, 3, size=7)
    params = model.init(rng).astype(np.float64)  # type: ignore[attr-defined]
    params += rng.normal(0, 0.5, size=params.shape)  # away from zero, ReLUs mixed
    loss, grad = model.loss_and_grad(params, x, y)  # type: ignore[attr-defined]
    assert grad.shape == params.shape
    assert np.isfinite(loss)
    np.testing.assert_allclose(grad, _numeric_grad(model, params, x, y), rtol=1e-5, atol=1e-7)


def test_parameters_are_one_flat_float32_vector() -> None:
    model = make_model("mlp", 64, 10, hidden=32)
    params = model.init(np.random.default_rng(0))
    assert params.shape == (model.dim,) == ((64 + 1) * 32 + (32 + 1) * 10,)
    assert params.dtype == np.float32
    assert make_model("logreg", 64, 10).dim == 65 * 10


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_local_sgd_lowers_the_loss_and_leaves_the_input_alone(name: str) -> None:
    ds = load_dataset("digits")
    model = make_model(name, ds.n_features, ds.n_classes)
    start = model.init(np.random.default_rng(0))
    before = start.copy()
    x, y = ds.x_train[:200], ds.y_train[:200]
    loss0, _ = model.loss_and_grad(start, x, y)
    trained = local_sgd(
        model, start, x, y, epochs=3, lr=0.1, batch_size=16, rng=np.random.default_rng(1)
    )
    loss1, _ = model.loss_and_grad(trained, x, y)
    assert loss1 < 0.5 * loss0
    assert trained.dtype == np.float32
    np.testing.assert_array_equal(start, before)
    acc, test_loss = evaluate(model, trained, ds.x_test, ds.y_test)
    assert acc > 0.8
    assert test_loss < loss0


def test_local_sgd_is_deterministic_under_a_seed() -> None:
    ds = load_dataset("wine")
    model = make_model("mlp", ds.n_features, ds.n_classes, hidden=8)
    p = model.init(np.random.default_rng(0))
    a, b = (
        local_sgd(
            model,
            p,
            ds.x_train,
            ds.y_train,
            epochs=2,
            lr=0.05,
            batch_size=8,
            rng=np.random.default_rng(5),
        )
        for _ in range(2)
    )
    np.testing.assert_array_equal(a, b)


def test_evaluate_reports_a_broken_model_honestly() -> None:
    model = make_model("logreg", 4, 3)
    params = np.full(model.dim, np.nan, dtype=np.float32)
    acc, loss = evaluate(model, params, np.zeros((5, 4), np.float32), np.zeros(5, np.int64))
    assert acc == 0.0
    assert loss == float("inf")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_model("cnn", 4, 3), "unknown model"),
        (lambda: make_model("mlp", 4, 3, hidden=0), "hidden"),
        (lambda: make_model("logreg", 4, 1), "n_classes"),
    ],
)
def test_bad_model_arguments(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
