"""The robust-plus-differential-privacy pipeline: pure numpy, no I/O, no network.

Updates are ``numpy`` arrays of shape ``(n_clients, d)``, float32 by default.
"""

from fedwarden.pipeline.flatten import ParameterLayout, flatten, unflatten

__all__ = ["ParameterLayout", "flatten", "unflatten"]
