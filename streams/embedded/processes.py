"""Child processes that never outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
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


@contextlib.contextmanager
def stop_within(seconds: float) -> Iterator[None]:
    """SIGINT or SIGTERM stops the block in order (a KeyboardInterrupt, so the stack's
    `finally` stops its children), and the process exits `seconds` later whatever is
    still running. asyncio.run cancels its leftover tasks at shutdown and waits for
    them: a library task that swallows the cancellation holds it for ever, and the
    children, which die only with this process, with it. Main thread only."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        deadline = threading.Timer(seconds, os._exit, args=(128 + signum,))
        deadline.daemon = True
        deadline.start()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
