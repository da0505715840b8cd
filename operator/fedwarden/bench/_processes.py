"""Processes for the runtime benchmark: each in its own session (so that it and everything it
starts can be stopped as one process group), output captured to a log file, stopped with
SIGTERM, then SIGKILL after a grace period; free loopback ports; waiting with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MARKER",
    "DeploymentError",
    "ManagedProcess",
    "MemoryGuard",
    "ProcessSet",
    "Snapshot",
    "free_ports",
    "mem_available_mb",
    "snapshot",
    "tail",
    "terminate_on_sigterm",
    "wait_for",
]


class DeploymentError(RuntimeError):
    """A process of the benchmark failed to start, died, or a step did not finish in time.

    ``logs`` maps a process name to the tail of its log, to show the cause.
    """

    def __init__(self, message: str, logs: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.logs = dict(logs or {})

    def __str__(self) -> str:
        text = super().__str__()
        for name, log in self.logs.items():
            text += f"\n--- {name} (last lines) ---\n{log}"
        return text


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now.

    All sockets are held open until every port is found, so the ports differ; another process
    could still take one before it is used, which then shows as a start-up failure.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a text file (or a note that it is missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError as exc:
        return f"(no log: {exc})"
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One command in a new session, stdout and stderr appended to ``log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def returncode(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def _signal_group(self, sig: signal.Signals) -> None:
        # the session leader's pid is the group id; the group may outlive the leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after ``grace``."""
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        # children (SuperExec, ClientApp and ServerApp processes) may still run: kill the group
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5.0)


MARKER = "FEDWARDEN_BENCH_DEPLOYMENT"
"""An environment variable every process of a deployment inherits, to find strays at the end."""


class ProcessSet:
    """Processes started for one deployment; :meth:`stop_all` stops them in reverse order.

    ``clean_exit_ok``: :meth:`check_alive` does not count a process that exited with 0.
    ``marker``: the value of :data:`MARKER` given to every process started, which its
    descendants inherit.

    A deployment's processes are the sessions of the processes started here and every session
    one of their descendants starts: Flower's SuperExec detaches into a session of its own, and
    the ServerApp it launches outlives it unless it is found. :meth:`members` remembers each
    session it sees, so an orphan is still found after its parent has gone.
    """

    def __init__(
        self,
        processes: Sequence[ManagedProcess] = (),
        clean_exit_ok: bool = False,
        marker: str | None = None,
    ) -> None:
        self.processes: list[ManagedProcess] = list(processes)
        self.clean_exit_ok = clean_exit_ok
        self.marker = marker
        self.sessions: set[int] = {p.pid for p in self.processes}
        # pid -> start time of every member seen so far: one that calls setsid() after it was
        # seen (and whose parent then dies) is still ours, and a reused pid is not
        self._seen: dict[int, int] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        full_env = dict(os.environ if env is None else env)
        if self.marker is not None:
            full_env[MARKER] = self.marker
        proc = ManagedProcess(name, argv, log, env=full_env, cwd=cwd)
        self.processes.append(proc)
        self.sessions.add(proc.pid)
        return proc

    def members(self) -> dict[int, str]:
        """``pid -> command name`` of every live process of the deployment (Linux ``/proc``)."""
        table = _process_table()
        known = {
            pid
            for pid, row in table.items()
            if row.session in self.sessions or self._seen.get(pid) == row.start
        }
        changed = True
        while changed:  # descendants that started sessions of their own
            changed = False
            for pid, row in table.items():
                if pid not in known and row.ppid in known:
                    known.add(pid)
                    changed = True
        self.sessions.update(table[pid].session for pid in known)
        self._seen.update((pid, table[pid].start) for pid in known)
        return {
            pid: row.name
            for pid, row in table.items()
            if row.session in self.sessions and row.state != "Z"
        }

    def marked(self) -> list[int]:
        """Live processes that carry this deployment's :data:`MARKER` (reads ``environ``)."""
        if self.marker is None:
            return []
        needle = f"{MARKER}={self.marker}".encode()
        found = []
        for pid, row in _process_table().items():
            if row.state == "Z" or pid == os.getpid():
                continue
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(pid)
        return found

    def dead(self) -> list[ManagedProcess]:
        return [
            p
            for p in self.processes
            if not p.alive() and not (self.clean_exit_ok and p.returncode() == 0)
        ]

    def check_alive(self, what: str) -> None:
        """Raise :class:`DeploymentError` naming any process that has exited."""
        dead = self.dead()
        if dead:
            names = ", ".join(f"{p.name} (exit {p.returncode()})" for p in dead)
            raise DeploymentError(f"{what}: {names} exited", {p.name: p.tail() for p in dead[:3]})

    def tails(self, lines: int = 40, limit: int = 4) -> dict[str, str]:
        return {p.name: p.tail(lines) for p in self.processes[:limit]}

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM to every process of the deployment, SIGKILL to what is left after ``grace``
        seconds, then to any stray that still carries the marker."""
        strays = set(self.members()) - {p.pid for p in self.processes}
        # SIGTERM everything first, so that stopping N processes takes one grace period
        for proc in reversed(self.processes):
            proc._signal_group(signal.SIGTERM)
        _signal_pids(strays, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in reversed(self.processes):
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=remaining)
        for proc in reversed(self.processes):
            proc.stop(grace=0.0)
        left = set(self.members()) | set(self.marked())
        _signal_pids(left, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while left and time.monotonic() < deadline:  # a kill takes effect asynchronously
            time.sleep(0.05)
            left = {pid for pid in left if _running(pid)}

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[:1] != ["Z"]


def _signal_pids(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def mem_available_mb() -> float | None:
    """``MemAvailable`` of ``/proc/meminfo`` in MiB (Linux); ``None`` elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


class MemoryGuard:
    """Stops a deployment before it starves the machine (other work shares it).

    Called while waiting. Every ``interval`` seconds it reads the system's available memory and
    raises :class:`DeploymentError` when less than ``reserve_mb`` is left (default: 4 GiB or a
    fifth of the machine, whichever is more). Every ``scan_interval`` seconds it takes a
    :func:`snapshot` of the deployment: the largest memory seen is ``peak_mb`` (a sample, so a
    lower bound of the true peak), and ``check(snapshot)``, if given, may return a reason to
    stop (e.g. a runaway number of processes).
    """

    def __init__(
        self,
        processes: ProcessSet,
        reserve_mb: float | None = None,
        interval: float = 1.0,
        scan_interval: float = 5.0,
        check: Callable[[Snapshot], str | None] | None = None,
    ) -> None:
        self.processes = processes
        total = None
        with (
            contextlib.suppress(OSError, ValueError, IndexError),
            open("/proc/meminfo", encoding="ascii") as fh,
        ):
            total = int(fh.readline().split()[1]) / 1024.0
        self.reserve_mb = (
            reserve_mb if reserve_mb is not None else max(4096.0, 0.2 * (total or 0.0))
        )
        self.interval = interval
        self.scan_interval = scan_interval
        self.check = check
        self.low_mb: float | None = None
        self.peak_mb: float | None = None
        self.last: Snapshot | None = None
        self._next = 0.0
        self._next_scan = 0.0

    def scan(self) -> Snapshot:
        snap = snapshot(self.processes)
        self.last = snap
        if snap.count:
            self.peak_mb = (
                snap.memory_mb if self.peak_mb is None else max(self.peak_mb, snap.memory_mb)
            )
        return snap

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            available = mem_available_mb()
            if available is not None:
                self.low_mb = available if self.low_mb is None else min(self.low_mb, available)
                if available < self.reserve_mb:
                    snap = self.scan()
                    raise DeploymentError(
                        f"memory guard: only {available:.0f} MiB of memory left on this "
                        f"machine ({snap.describe()}); stopped to protect other work",
                        self.processes.tails(lines=15, limit=3),
                    )
        if now >= self._next_scan:
            self._next_scan = time.monotonic() + self.scan_interval
            snap = self.scan()
            reason = self.check(snap) if self.check is not None else None
            if reason:
                raise DeploymentError(
                    f"{reason} ({snap.describe()})", self.processes.tails(lines=15, limit=3)
                )


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    processes: ProcessSet | None = None,
    interval: float = 0.2,
    guard: Callable[[], None] | None = None,
) -> float:
    """Wait until ``condition()`` holds; return the seconds waited.

    Raises :class:`DeploymentError` when ``timeout`` passes first, when one of ``processes``
    exits meanwhile, or when ``guard()`` raises it.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if condition():
            return time.monotonic() - start
        if processes is not None:
            processes.check_alive(f"while waiting for {what}")
        if guard is not None:
            guard()
        if time.monotonic() >= deadline:
            raise DeploymentError(
                f"timed out after {timeout:g} s waiting for {what}",
                processes.tails() if processes is not None else None,
            )
        time.sleep(interval)


@dataclass(frozen=True)
class Snapshot:
    """The processes of a deployment's sessions at one moment (Linux ``/proc``)."""

    count: int
    memory_mb: float
    """Sum of the processes' proportional set sizes (PSS: shared pages split among the
    processes sharing them, so the sum does not count a library twice); resident size where
    PSS cannot be read."""
    names: dict[str, int]
    """How many processes run each command (the kernel's 15-character name)."""

    def describe(self) -> str:
        top = ", ".join(
            f"{n} {name}" for name, n in sorted(self.names.items(), key=lambda x: -x[1])[:4]
        )
        return f"{self.count} processes ({top}) holding {self.memory_mb:.0f} MiB"


@dataclass(frozen=True)
class _Row:
    name: str
    state: str
    ppid: int
    session: int
    start: int  # clock ticks after boot: with the pid, names one process


def _process_table() -> dict[int, _Row]:
    """Every process on the machine from ``/proc/<pid>/stat`` (empty where there is none)."""
    table: dict[int, _Row] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # the name is in parentheses and may hold spaces: split after the last ')'
            name = stat[stat.find("(") + 1 : stat.rfind(")")]
            fields = stat[stat.rfind(")") + 2 :].split()
            state, ppid, session, start = fields[0], fields[1], fields[3], fields[19]
            table[int(entry.name)] = _Row(name, state, int(ppid), int(session), int(start))
        except (OSError, ValueError):
            continue
    return table


def _memory_kb(pid: int) -> int:
    for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return 0


def snapshot(processes: ProcessSet) -> Snapshot:
    """Count, name and measure every live process of the deployment (see
    :meth:`ProcessSet.members`)."""
    names: dict[str, int] = {}
    total_kb = 0
    for pid, name in processes.members().items():
        names[name] = names.get(name, 0) + 1
        total_kb += _memory_kb(pid)
    return Snapshot(sum(names.values()), total_kb / 1024.0, names)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` for the duration, so that ``finally`` blocks stop the
    processes started so far (only in the main thread; elsewhere it does nothing)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
