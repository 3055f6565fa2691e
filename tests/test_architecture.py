"""The import rule of docs/architecture.md, checked on the source (AST, no import):
which package may import which, the edges (cli, embedded) that nothing imports, no
import cycle between modules, and Faust's internals reached only from faust_ext/.

Imports inside functions count as much as those at the top: a lazy import is still
a dependency, and the usual way to hide a cycle. Imports under `if TYPE_CHECKING:` do
not count: they never run."""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("streams", "detectors", "schemas")

# Bottom of streams/: they import little of each other (below) and nothing above.
FOUNDATION = {
    "streams.errors",
    "streams.settings",
    "streams.retrying",
    "streams.ports",
    "streams.data_dir",
    "streams.auth",
}

# Package -> the packages it may import (itself always). Read top to bottom as layers.
RULES: dict[str, set[str]] = {
    "schemas": set(),
    "detectors": {"schemas"},
    "streams.errors": set(),
    "streams.ports": set(),
    "streams.retrying": set(),
    "streams.data_dir": set(),
    "streams.settings": {"schemas"},
    "streams.auth": {"streams.errors", "streams.data_dir"},
    "streams": set(),  # streams/__init__.py
    "streams.kafka": FOUNDATION,
    "streams.faust_ext": FOUNDATION | {"streams.kafka"},
    "streams.cost": FOUNDATION | {"schemas"},
    "streams.ledger": FOUNDATION | {"schemas"},
    "streams.ingest": FOUNDATION | {"schemas", "streams.kafka", "streams.cost", "streams.ledger"},
    # alerting and spend read their state back from the ledger at start; spend asks
    # the broker which log it reads (a new embedded broker is a new log).
    "streams.alerting": FOUNDATION | {"schemas", "detectors", "streams.ledger"},
    "streams.spend": FOUNDATION
    | {
        "schemas",
        "detectors",
        "streams.kafka",
        "streams.ledger",
        "streams.alerting",
        "streams.faust_ext",
    },
    "streams.http_ingest": FOUNDATION | {"schemas", "streams.ingest", "streams.ledger"},
    "streams.analyst": FOUNDATION | {"schemas", "detectors", "streams.cost", "streams.ledger"},
    "streams.dashboard": FOUNDATION
    | {"schemas", "detectors", "streams.cost", "streams.ledger", "streams.analyst"},
    # Installable without the worker: only retrying (standard library only) of streams/.
    "streams.sdk": {"schemas", "streams.retrying"},
    "streams.runtime": FOUNDATION
    | {
        "schemas",
        "detectors",
        "streams.kafka",
        "streams.faust_ext",
        "streams.cost",
        "streams.ledger",
        "streams.ingest",
        "streams.alerting",
        "streams.spend",
        "streams.http_ingest",
        "streams.analyst",
        "streams.dashboard",
    },
}
# The edges: they may import any package below them, and nothing imports them (but
# the CLI runs the embedded stack).
EDGES = {"streams.embedded", "streams.cli"}
RULES["streams.embedded"] = set(RULES) - {"streams.embedded"}
RULES["streams.cli"] = set(RULES) | {"streams.embedded"}

# What a module outside faust_ext/ may import from Faust, mode and aiokafka: their
# public interfaces. Driver modules and anything else are faust_ext's.
PUBLIC_STREAMING_API = (
    "faust",
    "faust.types",
    "faust.web",
    "mode",
    "aiokafka",
    "aiokafka.abc",
    "aiokafka.admin",
    "aiokafka.errors",
    "aiokafka.partitioner",
    "aiokafka.structs",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for top in FIRST_PARTY:
        for path in (ROOT / top).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imported_names(path: Path) -> Iterator[tuple[str, int]]:
    """Every absolute import in the file: `module` and `module.name` for each from-import
    (`name` may be a module or an attribute)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run: those under `if TYPE_CHECKING:` are for the type
    checker only (a type-only cycle is allowed; a cycle at run time is not)."""
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and "TYPE_CHECKING" in {getattr(node.test, "id", ""), getattr(node.test, "attr", "")}
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in type_only:
            yield node


@cache
def module_imports() -> dict[str, set[str]]:
    """Module -> first-party modules it imports. `from pkg import module` is an import
    of the module, not of the package (whose `__init__` runs for any of its modules)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node in runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in known}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names}
                targets |= submodules & known.keys()
                if not submodules <= known.keys() and node.module in known:
                    targets.add(node.module)
        graph[name] = targets - {name}
    return graph


def package_of(module: str) -> str:
    """The unit the rule speaks of: a sub-package of streams/, a foundation module,
    or schemas/detectors as a whole."""
    parts = module.split(".")
    if parts[0] != "streams":
        return parts[0]
    return ".".join(parts[:2])


def test_every_package_has_a_rule() -> None:
    packages = {package_of(module) for module in modules()}
    missing = sorted(packages - set(RULES))
    assert not missing, f"add these to RULES (and to docs/architecture.md): {missing}"


def test_packages_import_only_what_the_rule_allows() -> None:
    violations = []
    for module, targets in sorted(module_imports().items()):
        package = package_of(module)
        allowed = RULES.get(package, set()) | {package}
        for target in sorted(targets):
            if package_of(target) not in allowed:
                violations.append(f"{module} imports {target}")
    assert not violations, "\n".join(violations)


def test_the_rule_itself_is_layered() -> None:
    # An allowed cycle between packages would let a module cycle in through it.
    graph = {package: allowed - {package} for package, allowed in RULES.items()}
    assert find_cycle(graph) is None


def test_nothing_imports_the_edges() -> None:
    importers = [
        f"{module} imports {target}"
        for module, targets in module_imports().items()
        for target in targets
        if package_of(target) in EDGES
        and package_of(module) != package_of(target)
        and package_of(module) != "streams.cli"
    ]
    assert not importers, "\n".join(importers)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(module_imports())
    assert cycle is None, " -> ".join(cycle or [])


def test_find_cycle_finds_one() -> None:
    # The check above must be able to fail.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
    except ValueError:  # imported already, without a spec (faust replaces its module)
        return name in sys.modules


def streaming_imports(path: Path) -> Iterator[tuple[str, int]]:
    """Modules of Faust, mode and aiokafka imported by the file, `from faust import x`
    counted as `faust.x` when x is a module."""
    for name, line in imported_names(path):
        if name.split(".")[0] in {"faust", "mode", "aiokafka"} and is_module(name):
            yield name, line


def test_only_faust_ext_reaches_past_the_public_streaming_api() -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for module, path in sorted(modules().items())
        if package_of(module) != "streams.faust_ext"
        for name, line in streaming_imports(path)
        if name not in PUBLIC_STREAMING_API
    ]
    assert not violations, "\n".join(violations)


def test_faust_ext_is_where_the_driver_is_reached() -> None:
    # The check above must be able to fail: faust_ext imports the aiokafka driver.
    path = ROOT / "streams" / "faust_ext" / "app.py"
    assert "faust.transport.drivers.aiokafka" in {name for name, _ in streaming_imports(path)}
