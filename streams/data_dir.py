"""The data dir holds the ledger, dead letters, logs, keys and tokens: only its owner
may read it. Directories are created 0700 and files 0600 whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) 0700; tighten it if it exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def open_private_log(path: Path) -> IO[bytes]:
    """A log file opened for append, 0600 (a child process writes to it)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def use_private_umask() -> None:
    """Every file this process creates afterwards (chdb's parts included) is 0600 and
    every directory 0700."""
    os.umask(PRIVATE_UMASK)
