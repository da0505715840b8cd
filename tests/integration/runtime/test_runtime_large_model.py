"""A model of 25 million float32 parameters (100 MB) through a real round: downloaded and
uploaded in 1 MiB chunks over mutual TLS, in memory proportional to the model (the process's
peak resident size is measured in a fresh interpreter and bounded by a small multiple of the
model's size, whatever the number of chunks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[2])
from runtime_helpers import RuntimePKI, make_aggregator
from fedwarden.client import ClientConfig, FederationClient, FitResult
from fedwarden.pipeline.round import PipelineConfig

N = 25_000_000
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

class Constant:
    num_parameters = N
    def fit(self, global_params, round):
        return FitResult(np.full(N, 1e-3, np.float32), 1, {})

pki = RuntimePKI.create(Path(sys.argv[1]))
agg, rec = make_aggregator(pki, rounds=1, min_available=1, dim=N,
                           pipeline_config=PipelineConfig.plain_fedavg(), round_timeout=300.0,
                           stall_timeout=60.0)
start = time.perf_counter()
result = FederationClient(pki.client_config("big", agg.port, rpc_timeout=120.0), Constant()).run()
final = agg.wait(300)
seconds = time.perf_counter() - start
agg.stop()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({
    "client": result.status, "rounds": [r.status for r in result.rounds],
    "aggregator": final.status if final else None, "seconds": seconds,
    "peak_bytes": peak, "base_bytes": base,
    "received": agg.metrics.value("update_bytes_received"),
    "sent": agg.metrics.value("model_bytes_sent"),
    "model_first": float(agg.model[0]),
}))
"""


@pytest.mark.slow
def test_25m_parameters_round_trip_in_bounded_memory(tmp_path: Path) -> None:
    here = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(here)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    model_bytes = 25_000_000 * 4
    assert out["client"] == "done"
    assert out["rounds"] == ["accepted"]
    assert out["aggregator"] == "completed"
    assert out["received"] == model_bytes
    assert out["sent"] == model_bytes
    assert out["model_first"] == pytest.approx(1e-3, rel=1e-3)  # initial zeros + the update
    # Both ends in one process: the aggregator's model, update matrix, new model and the
    # pipeline's working copies, the client's model and update. A transport that buffered whole
    # messages or streams would add more copies on top.
    growth = out["peak_bytes"] - out["base_bytes"]
    print(f"25M parameters: {out['seconds']:.1f} s, peak growth {growth / 2**20:.0f} MiB")
    assert growth < 12 * model_bytes
