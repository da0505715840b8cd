"""One participant of ``fedwarden demo``, run as its own process.

``python -m fedwarden.demo.participant --role ROLE ...`` where ROLE is

- ``honest``: trains its shard with DP-SGD (record-level DP: the built-in task with
  ``dp-epsilon``, :class:`fedwarden.sim.site_dp.SiteDPSGD`) calibrated so that the planned rounds
  spend at most ``--epsilon`` at ``--delta``, or with plain local SGD when ``--epsilon`` is not
  given;
- ``poisoner``: trains honestly, then sends the update sign-flipped and boosted ×10, claiming a
  million examples (a model-poisoning attack that also tries to buy influence);
- ``free-rider``: trains nothing and sends the previous round's global update back, with a
  little noise to disguise it (Lin et al. 2019).

Every role runs the real client runtime (:class:`fedwarden.client.runtime.FederationClient`):
mutual TLS, signed envelopes, retries. The result (rounds trained, ε spent, refusals) is
written as JSON to ``--result``, and the exit code is ``fedwarden client``'s (0 the training
ended, 3 refused, 4 unreachable): the red-team sites of ``examples/`` run this module as their
Job, and a poisoner that gave up while the aggregator restarted must fail its pod so that the
Job brings it back, as it does for an honest ``fedwarden client``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedwarden.client.apps import FitResult
from fedwarden.client.runtime import GIVE_UP_AFTER, ClientConfig, FederationClient
from fedwarden.client.tasks import BuiltinTask

F32 = npt.NDArray[np.float32]
ROLES = ("honest", "poisoner", "free-rider")


class PoisoningTask:
    """Honest training, then the update sign-flipped and boosted, with an inflated claim."""

    boost = 10.0
    claimed_examples = 1_000_000

    def __init__(self, inner: BuiltinTask) -> None:
        self.inner = inner

    @property
    def num_parameters(self) -> int:
        return self.inner.num_parameters

    def fit(self, global_params: F32, round: int) -> FitResult:
        honest = self.inner.fit(global_params, round)
        poisoned = (-self.boost * honest.update).astype(np.float32)
        return FitResult(poisoned, self.claimed_examples, {})


class FreeRidingTask:
    """Sends the last global update back (plus small noise) instead of training."""

    def __init__(self, num_parameters: int, seed: int | None = None) -> None:
        self._num_parameters = num_parameters
        self._previous: F32 | None = None
        self._rng = np.random.default_rng(seed)

    @property
    def num_parameters(self) -> int:
        return self._num_parameters

    def fit(self, global_params: F32, round: int) -> FitResult:
        params = np.asarray(global_params, dtype=np.float32)
        replay = np.zeros_like(params) if self._previous is None else params - self._previous
        self._previous = params.copy()
        noise = self._rng.normal(
            0.0, 0.05 * (float(np.linalg.norm(replay)) + 1e-3) / np.sqrt(params.size), params.size
        )
        return FitResult((replay + noise).astype(np.float32), 100, {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--ca", type=Path, help="trust bundle, instead of the tls-dir's ca.crt")
    parser.add_argument("--server", required=True)
    parser.add_argument("--server-name")
    parser.add_argument("--task", default="digits-logreg")
    parser.add_argument("--partition", default="iid")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--num-clients", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--epsilon", type=float)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument(
        "--give-up-after",
        type=float,
        default=GIVE_UP_AFTER,
        # as long as an honest fedwarden client: a red-team site must outlast an aggregator
        # restart exactly as the honest sites do, or it drops out of the training unbanned
        help="seconds of failing to reach the aggregator before giving up",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {args.role}-{args.index} %(message)s"
    )

    private = args.role == "honest" and args.epsilon is not None
    inner = BuiltinTask(
        args.task,
        partition=args.partition,
        client_index=args.index,
        num_clients=args.num_clients,
        lr=args.lr,
        dp_epsilon=args.epsilon if private else None,
        dp_delta=args.delta,
        dp_rounds=args.rounds,
        dp_clip_norm=args.clip_norm,
    )
    task: Any
    if args.role == "poisoner":
        task = PoisoningTask(inner)
    elif args.role == "free-rider":
        task = FreeRidingTask(inner.num_parameters)
    else:
        task = inner
    config = ClientConfig(
        server=args.server,
        cert=args.tls_dir / "tls.crt",
        key=args.tls_dir / "tls.key",
        ca=args.ca or args.tls_dir / "ca.crt",
        server_name=args.server_name,
        give_up_after=args.give_up_after,
        backoff_max=2.0,
    )
    result = FederationClient(config, task).run()
    site_dp = inner.site_dp if private else None
    payload = {
        "role": args.role,
        "result": result.to_dict(),
        "epsilon": None if site_dp is None else site_dp.epsilon,
        "noise_multiplier": None if site_dp is None else site_dp.config.noise_multiplier,
        "sample_rate": None if site_dp is None else site_dp.config.sample_rate,
    }
    args.result.write_text(json.dumps(payload, default=str))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
