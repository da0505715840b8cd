"""The round-overhead benchmark (``fedwarden bench runtime``): process handling, the result's
structure and JSON, the Flower App it deploys, and tiny real runs (N=2, d=1000, one timed round)
of fedwarden's runtime and of a Flower deployment.

No assertions on wall-clock times (machines are noisy); every run has its own timeout.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from fedwarden.bench import _processes, _runtime_flower
from fedwarden.bench import runtime as rt
from fedwarden.bench._fedwarden_client import ReadyUpdateTask, make_updates
from fedwarden.bench._processes import DeploymentError, ProcessSet, free_ports, wait_for
from fedwarden.commands.bench import bench as bench_command

TINY: dict[str, Any] = {"clients": (2,), "params": 1000, "rounds": 1, "warmup": 1}
TIMEOUT = 180.0


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(bench_command, ["runtime", *args])


def _side(side: str, status: str = "ok", seconds: float | None = 1.0) -> rt.SideResult:
    return rt.SideResult(
        side,
        10,
        1000,
        status,
        seconds_per_round=seconds if status == "ok" else None,
        round_seconds=(seconds,) if status == "ok" and seconds is not None else (),
        detail="" if status == "ok" else f"{side} {status}: why (logs kept in /tmp/x)\nmore",
    )


# --- processes --------------------------------------------------------------------------


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(1024 <= p <= 65535 for p in ports)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    procs = ProcessSet()
    # a child that ignores SIGTERM and a grandchild: both must be gone after stop_all
    script = "trap '' TERM; sleep 300 & echo started; wait"
    proc = procs.start("sh", ["sh", "-c", script], tmp_path / "sh.log")
    wait_for(lambda: "started" in proc.tail(), 10.0, "the shell to start")
    started = time.monotonic()
    procs.stop_all(grace=1.0)
    assert time.monotonic() - started < 15.0
    assert not proc.alive()
    assert _live_members(proc.pid) == []


def _live_members(group: int) -> list[int]:
    """Processes of a process group that still run (zombies, left for init to reap, do not)."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat[stat.rfind(")") + 2 :].split()[:3]
        if int(pgrp) == group and state != "Z":
            live.append(int(entry.name))
    return live


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_stop_finds_processes_that_left_for_a_session_of_their_own(tmp_path: Path) -> None:
    # Flower's SuperExec detaches into a new session; its ServerApp outlives it if not found
    procs = ProcessSet(marker=str(tmp_path))
    seen = procs.start(
        "seen", ["sh", "-c", "setsid sleep 300 & echo $!; sleep 300"], tmp_path / "seen.log"
    )
    orphan = procs.start("orphan", ["sh", "-c", "setsid sleep 301 & echo $!"], tmp_path / "o.log")
    wait_for(lambda: bool(seen.tail().strip() and orphan.tail().strip()), 10.0, "the shells")
    detached, orphaned = int(seen.tail().strip()), int(orphan.tail().strip())
    assert detached in procs.members()  # found through its parent, its session remembered
    os.kill(seen.pid, signal.SIGKILL)  # now an orphan too, in a session nobody started here
    seen.popen.wait(timeout=10)
    assert detached in procs.members()
    assert orphaned in procs.marked()  # its parent had gone before anyone looked
    procs.stop_all(grace=1.0)
    assert not _alive(detached)
    assert not _alive(orphaned)


def test_wait_for_names_a_dead_process_and_shows_its_log(tmp_path: Path) -> None:
    procs = ProcessSet()
    procs.start(
        "failing", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path / "f.log"
    )
    with pytest.raises(DeploymentError, match=r"failing \(exit 3\) exited") as info:
        wait_for(lambda: False, 20.0, "nothing", procs)
    assert "boom" in str(info.value)
    procs.stop_all()


def test_wait_for_times_out_with_a_clear_message() -> None:
    with pytest.raises(DeploymentError, match=r"timed out after 0\.3 s waiting for the moon"):
        wait_for(lambda: False, 0.3, "the moon", interval=0.05)


def test_clean_exits_are_not_failures_when_allowed(tmp_path: Path) -> None:
    procs = ProcessSet()
    procs.start("ok", [sys.executable, "-c", "pass"], tmp_path / "ok.log")
    procs.processes[0].popen.wait(timeout=30)
    ProcessSet(procs.processes, clean_exit_ok=True).check_alive("now")
    with pytest.raises(DeploymentError):
        procs.check_alive("now")


def test_memory_guard_stops_when_the_machine_runs_low(tmp_path: Path) -> None:
    if _processes.mem_available_mb() is None:
        pytest.skip("no /proc/meminfo")
    procs = ProcessSet()
    guard = _processes.MemoryGuard(procs, reserve_mb=1e12)  # more than any machine has
    with pytest.raises(DeploymentError, match="memory guard"):
        guard()
    _processes.MemoryGuard(procs, reserve_mb=0.0)()  # enough left: nothing happens


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_snapshot_counts_and_measures_the_sessions_and_the_check_can_stop(
    tmp_path: Path,
) -> None:
    procs = ProcessSet()
    script = "sleep 60 & sleep 60 & echo started; wait"
    proc = procs.start("sh", ["sh", "-c", script], tmp_path / "sh.log")
    try:
        wait_for(lambda: "started" in proc.tail(), 10.0, "the shell to start")
        # "started" follows the forks, not the children's exec: until then they are named sh
        wait_for(lambda: _processes.snapshot(procs).names.get("sleep") == 2, 10.0, "both sleeps")
        snap = _processes.snapshot(procs)
        assert snap.names.get("sleep") == 2
        assert snap.count >= 3
        assert snap.memory_mb > 0
        assert "2 sleep" in snap.describe()

        def too_many_sleeps(s: _processes.Snapshot) -> str | None:
            return "too many sleeps" if s.names.get("sleep", 0) > 1 else None

        guard = _processes.MemoryGuard(procs, reserve_mb=0.0, check=too_many_sleeps)
        with pytest.raises(DeploymentError, match="too many sleeps"):
            guard()
        assert guard.peak_mb is not None
    finally:
        procs.stop_all(grace=1.0)


# --- the clients' updates -----------------------------------------------------------------


def test_ready_updates_differ_per_round_and_client_and_share_a_direction() -> None:
    a = make_updates(1000, index=0, rounds=3)
    b = make_updates(1000, index=1, rounds=3)
    assert [u.dtype for u in a] == [np.float32] * 3
    assert [u.shape for u in a] == [(1000,)] * 3
    np.testing.assert_array_equal(a[0], make_updates(1000, index=0, rounds=3)[0])

    def cos(x: np.ndarray, y: np.ndarray) -> float:
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    assert cos(a[0], a[1]) < 0.5  # not a replay of its own last update
    assert cos(a[0], b[0]) > 0.5  # the cohort agrees within a round
    task = ReadyUpdateTask(a)
    assert task.num_parameters == 1000
    update, examples, metrics = task.fit(np.zeros(1000, np.float32), 2)
    assert update is a[1]
    assert examples == 1
    assert metrics == {}


# --- the Flower App -----------------------------------------------------------------------


def test_the_flower_app_is_a_valid_flower_app(tmp_path: Path) -> None:
    pytest.importorskip("flwr")
    import tomllib

    from flwr.common.config import validate_config

    app = _runtime_flower.write_app(tmp_path / "app", params=1000, nodes=2, rounds=1, warmup=1)
    config = tomllib.loads((app / "pyproject.toml").read_text())
    valid, errors, _ = validate_config(config, check_module=False)
    assert valid, errors
    assert config["tool"]["flwr"]["app"]["config"]["params"] == 1000
    for name in ("server_app.py", "client_app.py"):
        source = (app / "fedwarden_bench_flower" / name).read_text()
        assert "fedwarden" not in source.replace("fedwarden_bench", "")  # self-contained


# --- results and formatting ---------------------------------------------------------------


def test_ratio_and_target_need_both_sides() -> None:
    passing = rt._case(
        10,
        1000,
        {
            rt.FLOWER: _side(rt.FLOWER, seconds=20.0),
            rt.FEDWARDEN_FEDAVG: _side(rt.FEDWARDEN_FEDAVG, seconds=1.0),
            rt.FEDWARDEN_RECOMMENDED: _side(rt.FEDWARDEN_RECOMMENDED, seconds=3.0),
        },
    )
    assert passing.ratio_fedavg == pytest.approx(0.05)
    assert passing.ratio_recommended == pytest.approx(0.15)
    assert passing.passed is True
    failing = rt._case(
        10,
        1000,
        {rt.FLOWER: _side(rt.FLOWER, seconds=2.0), rt.FEDWARDEN_FEDAVG: _side("x", seconds=1.0)},
    )
    assert failing.passed is False
    no_flower = rt._case(
        10,
        1000,
        {
            rt.FLOWER: _side(rt.FLOWER, status="failed"),
            rt.FEDWARDEN_FEDAVG: _side(rt.FEDWARDEN_FEDAVG),
        },
    )
    assert no_flower.ratio_fedavg is None
    assert no_flower.passed is None


def _result(cases: list[rt.CaseResult]) -> rt.RuntimeBenchResult:
    return rt.RuntimeBenchResult(
        clients=tuple(c.clients for c in cases),
        params=1000,
        rounds=1,
        warmup=1,
        sides=rt.SIDES,
        method="m",
        target="t",
        environment=rt.describe_environment(),
        cases=tuple(cases),
        elapsed_seconds=1.0,
    )


def test_markdown_shows_failures_as_failures_not_numbers() -> None:
    case = rt._case(
        50,
        1000,
        {
            rt.FLOWER: _side(rt.FLOWER, status="failed"),
            rt.FEDWARDEN_FEDAVG: _side(rt.FEDWARDEN_FEDAVG, seconds=2.5),
            rt.FEDWARDEN_RECOMMENDED: _side(rt.FEDWARDEN_RECOMMENDED, status="pending"),
        },
    )
    text = rt.to_markdown(_result([case]), command="fedwarden bench runtime --clients 50")
    assert text.startswith("### Results\n")
    assert "fedwarden bench runtime --clients 50" in text
    row = next(line for line in text.splitlines() if line.startswith("| 50 |"))
    assert row.split(" | ")[2:] == ["failed", "2.50 s", "pending", "—", "—", "n/a |"]
    assert "flower failed: why" in text
    assert "/tmp/x" not in text
    assert "more" not in text
    result = _result([case])
    saved = json.loads(json.dumps(result.to_dict()))
    assert rt.RuntimeBenchResult.from_dict(saved) == result


def test_settling_between_deployments_is_bounded() -> None:
    waited = rt._settle(minimum=0.0, maximum=2.0)
    assert 0.0 < waited < 10.0
    assert rt.RUN_ORDER[-1] == rt.FLOWER
    assert set(rt.RUN_ORDER) == set(rt.SIDES)


def test_run_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="clients"):
        rt.run(clients=())
    with pytest.raises(ValueError, match="unknown side"):
        rt.run(clients=(2,), sides=("tensorflow",))
    with pytest.raises(ValueError, match="params and rounds"):
        rt.run(clients=(2,), rounds=0)
    with pytest.raises(ValueError, match="settle"):
        rt.run(clients=(2,), settle=-1)


# --- the command --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "ten"], "'ten' is not an integer"),
        (["--clients", "0"], "must be ≥ 1"),
        (["--sides", "tensorflow"], "unknown side 'tensorflow'"),
        (["--json", "--markdown"], "choose one"),
    ],
)
def test_cli_usage_errors_are_clean(args: list[str], message: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_failed_flower_deployment_is_a_result_and_ours_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise DeploymentError("flower-superlink exited", {"superlink": "address in use"})

    monkeypatch.setattr(_runtime_flower, "run_flower", broken)
    result = _invoke(
        "--clients", "2", "--params", "1000", "--rounds", "1", "--sides", "flower", "--json"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    flower = payload["cases"][0]["sides"]["flower"]
    assert flower["status"] == "failed"
    assert "address in use" in flower["detail"]
    assert payload["cases"][0]["passed"] is None

    from fedwarden.bench import _runtime_fedwarden

    monkeypatch.setattr(_runtime_fedwarden, "run_fedwarden", broken)
    result = _invoke("--clients", "2", "--params", "1000", "--sides", "fedwarden-fedavg")
    assert result.exit_code == 1
    assert "fedwarden-fedavg N=2 failed" in result.output


# --- real runs ----------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_fedwarden_run_structure_and_json() -> None:
    result = rt.run(
        sides=(rt.FEDWARDEN_FEDAVG, rt.FEDWARDEN_RECOMMENDED), timeout=TIMEOUT, settle=0, **TINY
    )
    (case,) = result.cases
    assert (case.clients, case.params) == (2, 1000)
    assert set(case.sides) == {rt.FEDWARDEN_FEDAVG, rt.FEDWARDEN_RECOMMENDED}
    for side in case.sides.values():
        assert side.status == "ok", side.detail
        assert len(side.round_seconds) == 1
        assert len(side.warmup_seconds) == 1
        assert side.seconds_per_round == side.round_seconds[0] > 0
        assert side.extra["aggregated_per_round"] == [2, 2]
        assert "mutual TLS" in side.security
    assert case.ratio_fedavg is None
    assert case.passed is None
    assert json.loads(json.dumps(result.to_dict()))["cases"][0]["clients"] == 2


@pytest.mark.slow
@pytest.mark.flower
def test_tiny_run_of_every_side_through_the_command(tmp_path: Path) -> None:
    pytest.importorskip("flwr")
    out = tmp_path / "runtime.json"
    result = _invoke(
        "--clients", "2", "--params", "1000", "--rounds", "1", "--warmup", "1",
        "--timeout", str(TIMEOUT), "--settle", "5", "--output", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    payload = json.loads(result.stdout)
    assert payload == json.loads(out.read_text())
    assert payload["command"].startswith("fedwarden bench runtime --clients 2 --params 1000")
    assert payload["environment"]["flwr"] == _runtime_flower.flower_version()
    (case,) = payload["cases"]
    assert set(case["sides"]) == set(rt.SIDES)
    for name, side in case["sides"].items():
        assert side["status"] == "ok", (name, side["detail"])
        assert len(side["round_seconds"]) == 1
        assert side["seconds_per_round"] > 0
    flower = case["sides"]["flower"]
    assert flower["extra"]["clientapp_launches"] >= 2  # one ClientApp process per message
    assert case["ratio_fedavg"] == pytest.approx(
        case["sides"]["fedwarden-fedavg"]["seconds_per_round"] / flower["seconds_per_round"]
    )
    assert case["passed"] == (case["ratio_fedavg"] < rt.TARGET_RATIO)
    assert result.exit_code == (0 if case["passed"] else 1)


def test_terminate_on_sigterm_turns_sigterm_into_system_exit() -> None:
    def signalled() -> None:
        with _processes.terminate_on_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

    with pytest.raises(SystemExit):
        signalled()
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
