"""A fedwarden client process for the round-overhead benchmark: no training, a ready update.

Run as ``python -m fedwarden.bench._fedwarden_client --tls-dir DIR --server HOST:PORT
--params D --index I --rounds R --result FILE``. It is :class:`fedwarden.client.FederationClient`
(mTLS, model download and digest check, signed envelope, chunked upload) with a task whose
``fit`` returns an update computed before the first round, so that a round measures the runtime
and not training.

The updates differ per round and per client, ``0.01 · (b_r + 0.5 · n_i)`` with a direction
``b_r`` shared by the cohort in round ``r`` and a client's own ``n_i`` (standard normal, fixed
seeds): a client that sent the same vector every round would be, rightly, refused by the
recommended pipeline as a free rider replaying its own update, and a cohort without a common
direction would look like noise to the contribution test.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


def make_updates(params: int, index: int, rounds: int) -> list[F32]:
    """The ``rounds`` updates client ``index`` sends, round 1 first."""
    own = np.random.default_rng([7, index]).standard_normal(params, dtype=np.float32)
    own *= np.float32(0.5)
    updates = []
    for r in range(1, rounds + 1):
        shared = np.random.default_rng([11, r]).standard_normal(params, dtype=np.float32)
        shared += own
        shared *= np.float32(0.01)
        updates.append(shared)
    return updates


class ReadyUpdateTask:
    """A :class:`fedwarden.client.Task` whose ``fit`` returns a precomputed update."""

    def __init__(self, updates: list[F32]) -> None:
        if not updates:
            raise ValueError("at least one update is needed")
        self._updates = updates
        self.calls = 0

    @property
    def num_parameters(self) -> int:
        return int(self._updates[0].size)

    def fit(self, global_params: F32, round: int) -> tuple[F32, int, dict[str, float]]:
        self.calls += 1
        update = self._updates[(max(round, 1) - 1) % len(self._updates)]
        return update, 1, {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--params", type=int, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--give-up-after", type=float, default=120.0)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from fedwarden.client import ClientConfig, FederationClient
    from fedwarden.pki import TLSDirectory

    tls = TLSDirectory(args.tls_dir)
    task = ReadyUpdateTask(make_updates(args.params, args.index, args.rounds))
    config = ClientConfig(
        server=args.server,
        cert=tls.cert,
        key=tls.key,
        ca=tls.ca,
        give_up_after=args.give_up_after,
    )
    runner = FederationClient(config, task)

    def terminate(signum: int, frame: Any) -> None:
        threading.Thread(target=runner.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, terminate)
    result = runner.run()
    payload = result.to_dict()
    payload["fit_calls"] = task.calls
    tmp = args.result.with_name(args.result.name + ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(args.result)
    return int(result.exit_code)


if __name__ == "__main__":
    sys.exit(main())
