"""A small wall-clock stack sampler for child processes (py-spy is not installed).

`sampler_env(out)` returns environment variables that make any Python child started
with them import this module at start-up (through a generated `sitecustomize.py`) and
sample every thread's stack `BENCH_PROFILE_HZ` times a second (default 50). Counts are
cumulative and rewritten to `out` (JSON) every second, so the benchmark can take two
snapshots and keep only the measured window (`window`). Only the benchmark sets it:
nothing in `streams/` knows about it.

A thread is counted idle when its innermost frame waits (selector, lock, queue). While
a C extension holds the GIL no sample is taken: time spent there shows up as fewer
samples, so busy shares are read against the busy samples, and the process CPU time
is reported beside them.
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
    "streams/cli.py",
    "streams/worker.py",
    "faust/agents/agent.py",
)

SITECUSTOMIZE = """\
import os, sys
sys.path.insert(0, {repo!r})
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

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds of each thread so far (from /proc), by the names used above."""
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
            ticks = int(fields[11]) + int(fields[12])
            out[name] = out.get(name, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
        return out

    def dump(self) -> None:
        data = {
            "time": time.monotonic(),
            "thread_cpu": self.thread_cpu(),
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
    return {
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
        f"window {win['seconds']} s of wall time; per thread: busy samples / total "
        "(wall time not waiting), and CPU seconds used in the window:"
    ]
    for thread, total in win["samples"].most_common():
        busy = total - win["idle"].get(thread, 0)
        cpu = win.get("thread_cpu", {}).get(thread)
        lines.append(
            f"  {thread}: {busy}/{total} busy ({100 * busy / total:.0f}%), "
            f"CPU {cpu if cpu is not None else '?'} s"
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
