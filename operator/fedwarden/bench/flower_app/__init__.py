"""The Flower app that :mod:`fedwarden.bench.runtime` deploys as its baseline.

``server_app.py`` and ``client_app.py`` are copied, with a generated ``pyproject.toml``, into a
temporary Flower App directory that ``flwr run`` packs into a FAB and submits to a local
SuperLink. They import only Flower and numpy (never fedwarden), like any Flower App would.

- The ClientApp does no training: it answers every ``train`` message at once with a fixed
  float32 update of ``params`` values, as one array.
- The ServerApp runs Flower's ``FedAvg`` (Message API, ``fraction_train=1.0``,
  ``min_available_nodes=nodes``, no federated evaluation) for ``warmup + rounds`` rounds, times
  each round from the moment it is configured to the moment its aggregate exists, and writes
  the times as JSON to ``result-path`` (atomically: a temporary file, then a rename).
"""

from __future__ import annotations

from pathlib import Path

APP_MODULE = "fedwarden_bench_flower"
"""The package name the sources take inside the generated Flower App."""

SOURCES = ("server_app.py", "client_app.py")


def source_dir() -> Path:
    """The directory holding the ServerApp and ClientApp sources."""
    return Path(__file__).resolve().parent
