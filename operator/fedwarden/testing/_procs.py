"""Child processes that die with the test process, even when it is killed.

A pytest run stopped by ``timeout`` or SIGKILL runs no cleanup, and would leave etcd,
kube-apiserver and pod processes behind. On Linux every child is started through
``setpriv --pdeathsig KILL`` (util-linux), so the kernel kills it when its parent goes. The
"parent" of that rule is the *thread* that forked, so all children are forked by one daemon
thread that lives as long as the interpreter, whichever thread asks for them. (A parent that
dies in the microseconds between the fork and setpriv's prctl call still leaves an orphan.)
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None

_jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
_keeper: threading.Thread | None = None
_lock = threading.Lock()


def _keep() -> None:
    while True:
        fn, fut = _jobs.get()
        try:
            fut.set_result(fn())
        except BaseException as e:
            fut.set_exception(e)


def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **kwargs)``, killed by the kernel if this process dies."""
    global _keeper
    if _SETPRIV is None:
        return subprocess.Popen(argv, **kwargs)
    with _lock:
        if _keeper is None:
            _keeper = threading.Thread(target=_keep, name="fedwarden-process-keeper", daemon=True)
            _keeper.start()
    fut: Future[subprocess.Popen[bytes]] = Future()
    wrapped = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    _jobs.put((lambda: subprocess.Popen(wrapped, **kwargs), fut))
    return fut.result()
