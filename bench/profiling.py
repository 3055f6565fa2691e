"""A small wall-clock stack sampler for child processes (py-spy is not installed).

`sampler_env(out)` returns environment variables that make any Python child started
with them import this module at start-up (through a generated `sitecustomize.py`) and
sample every thread's stack `BENCH_PROFILE_HZ` times a second (default 50). Counts are
cumulative and rewritten to `out` (JSON) every second, so the benchmark can take two
snapshots and keep only the measured window (`window`). Only the benchmark sets it:
nothing in `streams/` knows about it. `BENCH_SWITCH_INTERVAL` (seconds), passed the
same way (`--t2-env BENCH_SWITCH_INTERVAL=0.0005`), sets the worker's GIL switch
interval: an experiment knob for GIL contention between the event loop and the
ClickHouse thread.

A thread is counted idle when its innermost frame waits (selector, lock, queue). Being
in-process, this sampler needs the GIL to take a sample, so it mostly gets it when a
thread lets the GIL go, at a system call: frames that make system calls (a socket
`write`) are over-represented and pure-Python work under-represented. Per-thread CPU
seconds (from /proc) are exact. When `py-spy` is available (`BENCH_PY_SPY` or PATH),
the benchmark records with it instead (`PySpy`, from outside the process, no such bias).
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

IDLE_LEAVES = {
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("queue.py", "get"),
    ("thread.py", "_worker"),  # concurrent.futures idle worker
}

SKIP_INCLUSIVE = (
    "asyncio/",
    "<frozen",
    "runpy",
    "mode/",
    "threading",
    "concurrent/",
    "streams/cli/main.py",
    "streams/runtime/worker.py",
    "faust/agents/agent.py",
)

SITECUSTOMIZE = """\
import os, sys
sys.path.insert(0, {repo!r})
if os.environ.get("BENCH_SWITCH_INTERVAL"):  # experiment knob: GIL switch interval
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
if os.environ.get("BENCH_PROFILE_OUT"):
    import bench.profiling
    bench.profiling.start(os.environ["BENCH_PROFILE_OUT"])
"""


def sampler_env(out: Path, hz: int = 50) -> dict[str, str]:
    site_dir = Path(tempfile.mkdtemp(prefix="bench-site-"))
    repo = str(Path(__file__).resolve().parent.parent)
    (site_dir / "sitecustomize.py").write_text(SITECUSTOMIZE.format(repo=repo))
    path = os.pathsep.join(p for p in (str(site_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BENCH_PROFILE_OUT": str(out), "BENCH_PROFILE_HZ": str(hz)}


def _where(code: Any, lineno: int | None = None) -> str:
    filename = code.co_filename
    for marker in ("site-packages/", f"/lib/python{sys.version_info[0]}.{sys.version_info[1]}/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    else:
        filename = filename.rsplit("/main/", 1)[-1]
    return f"{filename}:{code.co_name}"


class Sampler:
    def __init__(self, out: str, hz: float) -> None:
        self.out = Path(out)
        self.interval = 1.0 / hz
        self.samples: Counter[str] = Counter()  # per thread name
        self.idle: Counter[str] = Counter()
        self.self_time: Counter[str] = Counter()  # busy samples, innermost function
        self.inclusive: Counter[str] = Counter()  # busy samples, any frame on the stack
        self.me = threading.get_ident()
        # Off when py-spy samples from outside: then only per-thread CPU is kept here.
        self.stacks = os.environ.get("BENCH_PROFILE_STACKS", "1") == "1"

    def run(self) -> None:
        self.me = threading.get_ident()
        last_dump = time.monotonic()
        while True:
            time.sleep(self.interval)
            self.take()
            if time.monotonic() - last_dump >= 1.0:
                self.dump()
                last_dump = time.monotonic()

    def take(self) -> None:
        if not self.stacks:
            return
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident == self.me:
                continue
            thread = names.get(ident, "?")
            if thread.startswith("clickhouse"):
                thread = "clickhouse"
            elif thread.startswith("ThreadPoolExecutor") or thread.startswith("asyncio_"):
                thread = "executor"
            self.samples[thread] += 1
            leaf = frame.f_code
            if (Path(leaf.co_filename).name, leaf.co_name) in IDLE_LEAVES:
                self.idle[thread] += 1
                continue
            self.self_time[f"{thread} {_where(leaf)}"] += 1
            seen = set()
            f: Any = frame
            while f is not None:
                key = f"{thread} {_where(f.f_code)}"
                if key not in seen:
                    seen.add(key)
                    self.inclusive[key] += 1
                f = f.f_back

    def thread_cpu(self, system_only: bool = False) -> dict[str, float]:
        """CPU seconds (or only kernel-mode seconds) of each thread so far, from /proc."""
        out: dict[str, float] = {}
        for thread in threading.enumerate():
            name = thread.name
            if name.startswith("clickhouse"):
                name = "clickhouse"
            elif name.startswith(("ThreadPoolExecutor", "asyncio_")):
                name = "executor"
            try:
                stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            ticks = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
            out[name] = out.get(name, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
        return out

    def dump(self) -> None:
        data = {
            "time": time.monotonic(),
            "thread_cpu": self.thread_cpu(),
            "thread_sys": self.thread_cpu(system_only=True),
            "samples": dict(self.samples),
            "idle": dict(self.idle),
            "self": dict(self.self_time),
            "inclusive": dict(self.inclusive),
        }
        tmp = self.out.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data))
        tmp.replace(self.out)


def start(out: str) -> None:
    sampler = Sampler(out, float(os.environ.get("BENCH_PROFILE_HZ", "50")))
    threading.Thread(target=sampler.run, name="bench-sampler", daemon=True).start()
    atexit.register(sampler.dump)


def snapshot(path: Path) -> dict[str, Any] | None:
    try:
        return dict(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return None


def window(first: dict[str, Any] | None, last: dict[str, Any] | None) -> dict[str, Any]:
    """Counts between two snapshots."""
    if last is None:
        return {}
    first = first or {}

    def diff(key: str) -> Counter[str]:
        out = Counter(last.get(key, {}))
        out.subtract(first.get(key, {}))
        return +out

    cpu = Counter(last.get("thread_cpu", {}))
    cpu.subtract(first.get("thread_cpu", {}))
    system = Counter(last.get("thread_sys", {}))
    system.subtract(first.get("thread_sys", {}))
    return {
        "thread_sys": {k: round(v, 1) for k, v in system.items() if v > 0},
        "seconds": round(last["time"] - first.get("time", last["time"]), 1),
        "thread_cpu": {k: round(v, 1) for k, v in cpu.items() if v > 0},
        "samples": diff("samples"),
        "idle": diff("idle"),
        "self": diff("self"),
        "inclusive": diff("inclusive"),
    }


def summary(win: dict[str, Any], top: int = 15) -> list[str]:
    """Text lines: per thread busy share, then the hottest functions among busy samples."""
    if not win:
        return ["(no profile)"]
    lines = [
        f"source: {win.get('source', 'in-process sampler 50 Hz (biased to system calls)')}",
        f"window {win['seconds']} s of wall time; per thread: busy samples / total "
        "(wall time not waiting), and CPU seconds used in the window:",
    ]
    for thread, total in win["samples"].most_common():
        busy = total - win["idle"].get(thread, 0)
        cpu = win.get("thread_cpu", {}).get(thread)
        system = win.get("thread_sys", {}).get(thread, 0.0)
        lines.append(
            f"  {thread}: {busy}/{total} busy ({100 * busy / total:.0f}%), "
            f"CPU {cpu if cpu is not None else '?'} s (kernel {system} s)"
            if "source" not in win
            else f"  {thread}: {total} active samples"
        )
    busy_all = sum(win["samples"].values()) - sum(win["idle"].values())
    if not busy_all:
        return lines
    lines.append(f"innermost function, % of {busy_all} busy samples:")
    for key, count in win["self"].most_common(top):
        lines.append(f"  {100 * count / busy_all:5.1f}%  {key}")
    lines.append(
        "on the stack (inclusive), % of busy samples, without the stdlib and entry points:"
    )
    shown = 0
    for key, count in win["inclusive"].most_common():
        name = key.split(" ", 1)[1]
        if name.startswith(SKIP_INCLUSIVE):
            continue
        lines.append(f"  {100 * count / busy_all:5.1f}%  {key}")
        shown += 1
        if shown >= top:
            break
    return lines


# --- py-spy, when available: samples from outside, without the GIL bias ------------------


def py_spy_binary() -> str | None:
    """`BENCH_PY_SPY` or `py-spy` on PATH (it is not a project dependency)."""
    import shutil

    return os.environ.get("BENCH_PY_SPY") or shutil.which("py-spy")


class PySpy:
    """`py-spy record` on a pid from `start()` to `stop()`, collapsed stacks, 100 Hz."""

    def __init__(self, binary: str, pid: int, out: Path) -> None:
        import subprocess

        self.out = out
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> dict[str, Any]:
        import signal
        import subprocess

        seconds = time.monotonic() - self.started
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return collapsed_window(self.out, seconds)


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "file path (trimmed):function"
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"/lib/python{sys.version_info[0]}.{sys.version_info[1]}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.rsplit("/main/", 1)[-1]
    return f"{path}:{name}"


def collapsed_window(path: Path, seconds: float) -> dict[str, Any]:
    """The same counters as `window`, from py-spy's collapsed stacks (active samples only:
    py-spy leaves idle threads out, so every sample is busy)."""
    samples: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    try:
        text = path.read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        # py-spy names a thread "thread (0x…): Name" (quoted in some versions)
        thread = parts[0].rsplit("):", 1)[-1].strip().strip('"').replace(" ", "_") or "?"
        thread = "clickhouse" if "clickhouse" in thread else thread
        frames = [_frame_name(f) for f in parts[1:]]
        if not frames or thread == "bench-sampler":  # asleep; py-spy counts it active
            continue
        samples[thread] += count
        self_time[f"{thread} {frames[-1]}"] += count
        for key in {f"{thread} {f}" for f in frames}:
            inclusive[key] += count
    return {
        "seconds": round(seconds, 1),
        "samples": samples,
        "idle": Counter(),
        "self": self_time,
        "inclusive": inclusive,
        "source": "py-spy 100 Hz, active samples only",
    }
