"""Child processes that never outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux: the kernel kills the child when the parent dies, even by SIGKILL, so a
    # killed `spendstream dev` leaves no orphan broker or worker. SIGKILL, not SIGTERM:
    # the in-memory broker dies with the parent, so a worker's graceful stop has nothing
    # to commit to and only held the data dir's lock (and the web port) for 2-4 s after
    # the parent was gone; a `dev` started again at once found the data dir "in use".
    # The ledger is safe under SIGKILL (a chdb insert is one atomic part).
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C reaches only the parent, which then stops its
    # children in order (workers before the broker they commit to).
    return subprocess.Popen(
        list(args), preexec_fn=_die_with_parent, start_new_session=True, **kwargs
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, wait, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env
