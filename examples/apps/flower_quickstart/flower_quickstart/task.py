"""flower_quickstart: a Flower / scikit-learn app."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

N_CLASSES = 10
N_FEATURES = 64  # 8x8 images
SHUFFLE_SEED = 42


def load_data(partition_id: int, num_partitions: int):
    """Partition `partition_id` of `num_partitions` equal IID shards of the digits, split
    80/20 into train and test (stratified, so that every shard's training set holds every
    digit and the model's shapes never depend on the shard)."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixel intensities are 0-16
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(y))
    shard = np.array_split(order, num_partitions)[partition_id]
    X_train, X_test, y_train, y_test = train_test_split(
        X[shard], y[shard], test_size=0.2, random_state=SHUFFLE_SEED, stratify=y[shard]
    )
    return X_train, X_test, y_train, y_test


def get_model(local_epochs: int) -> LogisticRegression:
    return LogisticRegression(max_iter=local_epochs, warm_start=True)


def get_model_params(model: LogisticRegression) -> list[np.ndarray]:
    return [model.coef_, model.intercept_]


def set_model_params(model: LogisticRegression, params: list[np.ndarray]) -> LogisticRegression:
    model.coef_ = params[0]
    model.intercept_ = params[1]
    return model


def set_initial_params(model: LogisticRegression) -> None:
    """scikit-learn creates the parameters in the first `fit`; Flower needs them before."""
    model.classes_ = np.arange(N_CLASSES)
    model.coef_ = np.zeros((N_CLASSES, N_FEATURES))
    model.intercept_ = np.zeros((N_CLASSES,))
