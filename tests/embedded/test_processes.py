"""A stopped replay exits even when asyncio's shutdown cannot (stop_within)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

# asyncio.run cancels its leftover tasks at shutdown and waits for them: one that
# swallows its cancellation holds the process for ever.
PROGRAM = textwrap.dedent(
    """
    import asyncio, contextlib, sys
    from streams.embedded.processes import stop_within

    async def stubborn():
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    async def main():
        asyncio.get_running_loop().create_task(stubborn())
        # Let it reach its sleep: a task cancelled before its first step never runs
        # its body, and a signal right after "ready" would find nothing stubborn.
        await asyncio.sleep(0)
        print("ready", flush=True)
        await asyncio.sleep(3600)

    guard = stop_within(1.0) if sys.argv[1] == "bounded" else contextlib.nullcontext()
    with guard:
        asyncio.run(main())
    """
)


def started(mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, mode], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_the_process_when_asyncio_shutdown_hangs(sig: int) -> None:
    process = started("bounded")
    began = time.monotonic()
    process.send_signal(sig)
    code = process.wait(timeout=20)
    assert code == 128 + sig
    assert time.monotonic() - began < 10


def test_without_it_the_same_shutdown_hangs() -> None:
    """The case stop_within exists for: Ctrl-C alone leaves the process running."""
    process = started("plain")
    try:
        process.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    finally:
        process.kill()
        process.wait()
