"""Apps that misbehave, one way each (no Flower needed: duck-typed NumPyClients)."""

from __future__ import annotations

import numpy as np


class Base:
    def get_parameters(self, config):
        return [np.zeros((2, 2), np.float32)]

    def fit(self, parameters, config):
        return parameters, 1, {}


class RaisesInFit(Base):
    def fit(self, parameters, config):
        raise RuntimeError("CUDA out of memory")


class ReturnsNaN(Base):
    def fit(self, parameters, config):
        out = [p.copy() for p in parameters]
        out[0][0, 0] = np.nan
        return out, 1, {}


class ChangesShapes(Base):
    def __init__(self) -> None:
        self.calls = 0

    def fit(self, parameters, config):
        self.calls += 1
        if self.calls > 1:
            return [np.zeros((4,), np.float32)], 1, {}
        return parameters, 1, {}


not_an_app = 42


def factory_that_raises():
    raise FileNotFoundError("data/train.csv")


import_time_dependency = None
