"""`run_all --only`: splice the benchmarks that ran into the BENCHMARKS.md already there.

A partial run replaces only what its benchmarks wrote: their table rows and their
`### T<n>` details (by target number, T9a … T9e included), the sections only they
write (the worker profile, the hot path), their lines under Runs and their raw
result lines. Everything else stays as it was, hand-written readings and notes
included; the header's Code line is the new document's (it names every run's
revision).

>>> old = "| T1 a | old |\\n| T2 b | kept |\\n\\n## Runs\\n\\n- `python -m bench.x`: old"
>>> new = "| T1 a | new |\\n| T2 b | other |\\n\\n## Runs\\n\\n- `python -m bench.x`: new"
>>> print(merge(old, new, Ran(targets={"T1"}, modules={"bench.x"})))
| T1 a | new |
| T2 b | kept |
<BLANKLINE>
## Runs
<BLANKLINE>
- `python -m bench.x`: new
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

# The top-level sections one benchmark writes on its own: module -> heading prefix.
OWN_SECTIONS = {
    "bench.throughput": "## Worker profile",
    "bench.hot_path": "## Where a worker's time per event goes",
}
RUNS_HEADING = "## Runs"
RAW_HEADING_PREFIX = "## Raw result lines"
TARGET = r"(T\d+[a-z]?)\b"
ROW = re.compile(r"\| " + TARGET)
DETAIL = re.compile(r"### " + TARGET)
RUN_LINE = re.compile(r"- `python -m (bench\.\w+)")
RAW_LINE = re.compile(r'\{"module":"(bench\.\w+)"')

# ("row" | "detail", target), ("section", heading prefix), ("run" | "raw", module)
Key = tuple[str, str]


@dataclass
class Ran:
    """What a partial run wrote: its rows' target numbers and its modules."""

    targets: set[str] = field(default_factory=set)
    modules: set[str] = field(default_factory=set)

    def replaces(self, key: Key | None) -> bool:
        if key is None:
            return False
        kind, name = key
        if kind in ("row", "detail"):
            return name in self.targets
        if kind == "section":
            return any(OWN_SECTIONS.get(m) == name for m in self.modules)
        return name in self.modules


def target_of(title: str) -> str:
    """ "T9a page precision" -> "T9a"."""
    found = re.match(TARGET, title)
    if found is None:
        raise ValueError(f"a benchmark target names its number first: {title!r}")
    return found.group(1)


def blocks(text: str) -> list[tuple[Key | None, list[str]]]:
    """The document as blocks of lines, each with the key of what wrote it (None:
    nothing a benchmark owns)."""
    out: list[tuple[Key | None, list[str]]] = []
    heading = ""
    for line in text.split("\n"):
        key: Key | None = None
        opens = False
        if line.startswith("## "):
            heading, opens = line, True
            own = next((p for p in OWN_SECTIONS.values() if line.startswith(p)), None)
            key = ("section", own) if own else None
        elif line.startswith("### "):
            opens = True
            found = DETAIL.match(line)
            key = ("detail", found.group(1)) if found else None
        elif not heading and (found := ROW.match(line)):
            key = ("row", found.group(1))
        elif heading.startswith(RUNS_HEADING) and (found := RUN_LINE.match(line)):
            key = ("run", found.group(1))
        elif heading.startswith(RAW_HEADING_PREFIX) and (found := RAW_LINE.match(line)):
            key = ("raw", found.group(1))
        if opens or key is not None or not out or (out[-1][0] and out[-1][0][0] in SINGLE):
            out.append((key, [line]))
        else:
            out[-1][1].append(line)
    return out


# Keys of one line: the lines after them open a block of their own.
SINGLE = ("row", "run", "raw")


def merge(existing: str, fresh: str, ran: Ran) -> str:
    """`existing` with the blocks `ran` replaces taken from `fresh`, in place; a fresh
    block with no counterpart goes after the last block of its kind (a section: before
    Runs)."""
    new: dict[Key, list[list[str]]] = defaultdict(list)
    for key, lines in blocks(fresh):
        if key is not None and ran.replaces(key):
            new[key].append(lines)
    out: list[tuple[Key | None, list[str]]] = []
    placed: set[Key] = set()
    for key, lines in blocks(existing):
        if key is None or not ran.replaces(key):
            out.append((key, lines))
        elif key not in placed:
            placed.add(key)
            out += [(key, block) for block in new[key]]
    for key, added in new.items():
        if key not in placed:
            at = _place(out, key[0])
            out[at:at] = [(key, block) for block in added]
    lines = [line for _, block in out for line in block]
    code = next((line for line in fresh.split("\n") if line.startswith("- Code:")), None)
    if code is not None:
        lines = [code if line.startswith("- Code:") else line for line in lines]
    return "\n".join(lines)


def _place(out: list[tuple[Key | None, list[str]]], kind: str) -> int:
    if kind != "section":
        same = [i for i, (key, _) in enumerate(out) if key is not None and key[0] == kind]
        if same:
            return same[-1] + 1
    runs = [i for i, (_, block) in enumerate(out) if block[0].startswith(RUNS_HEADING)]
    return runs[0] if runs else len(out)
