"""No module of streams/ outside faust_ext/ touches a private Faust, mode or aiokafka
attribute: not `obj._name` for a name those libraries keep private, not an override of
one of their private methods, not the internals faust_ext wraps (`recovery`,
`tp_end_offsets`, `tp_committed_offsets`). Read from the source (AST)."""

from __future__ import annotations

import ast
import importlib
from functools import cache
from pathlib import Path

import aiokafka
import faust
import mode

ROOT = Path(__file__).resolve().parents[2]
STREAMS = ROOT / "streams"
FAUST_EXT = STREAMS / "faust_ext"
LIBRARIES = ("faust", "mode", "aiokafka")
# Public names that reach Faust's internal state; faust_ext/progress.py wraps them.
INTERNALS = {"recovery", "tp_end_offsets", "tp_committed_offsets"}


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@cache
def library_private_names() -> frozenset[str]:
    """Every private name the libraries define or use on an object."""
    names: set[str] = set()
    for package in (faust, mode, aiokafka):
        for path in Path(package.__file__).parent.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    name = node.name
                elif isinstance(node, ast.Attribute):
                    name = node.attr
                else:
                    continue
                if is_private(name):
                    names.add(name)
    return frozenset(names)


def library_bases(tree: ast.Module) -> set[str]:
    """Names bound by `from faust… import X` / `import aiokafka…` in the module."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            bound |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    bound.add((alias.asname or alias.name).split(".")[0])
    return bound


def base_name(base: ast.expr) -> str:
    while isinstance(base, ast.Attribute):
        base = base.value
    return base.id if isinstance(base, ast.Name) else ""


def violations_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    private = library_private_names()
    from_libraries = library_bases(tree)
    where = path.relative_to(ROOT)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else ""
            if is_private(node.attr) and node.attr in private and owner not in {"self", "cls"}:
                found.append(f"{where}:{node.lineno}: .{node.attr}")
            elif node.attr in INTERNALS:
                found.append(f"{where}:{node.lineno}: .{node.attr} (Faust internals)")
        elif isinstance(node, ast.ClassDef) and any(
            base_name(base) in from_libraries for base in node.bases
        ):
            found += [
                f"{where}:{item.lineno}: overrides {node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                and is_private(item.name)
                and library_defines(path, node.name, item.name)
            ]
    return found


def library_defines(path: Path, class_name: str, name: str) -> bool:
    """Whether a Faust/mode/aiokafka base of the class defines `name` (an override)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    cls = getattr(importlib.import_module(module), class_name)
    return any(
        name in vars(base) for base in cls.__mro__[1:] if base.__module__.split(".")[0] in LIBRARIES
    )


def test_no_private_faust_or_aiokafka_attribute_outside_faust_ext() -> None:
    found = [
        violation
        for path in sorted(STREAMS.rglob("*.py"))
        if FAUST_EXT not in path.parents
        for violation in violations_in(path)
    ]
    assert not found, "move these behind streams/faust_ext/:\n" + "\n".join(found)


def test_the_check_sees_faust_ext_own_private_points() -> None:
    # It must be able to fail: faust_ext's own private points are what it looks for.
    found = "\n".join(
        violations_in(FAUST_EXT / "app.py") + violations_in(FAUST_EXT / "progress.py")
    )
    assert "._fetch_max_wait_ms" in found
    assert "overrides LogEndConsumer._new_consumer_thread" in found
    assert "overrides ShortWaitConsumerThread._create_worker_consumer" in found
    assert ".recovery (Faust internals)" in found
    assert ".tp_end_offsets (Faust internals)" in found
