"""The import graph of the code, read from the source (an AST walk; nothing is imported): no two
subpackages import each other (``streaming.X`` <-> ``streaming.Y``, ``assets.X`` <-> ``assets.Y``, and
the three top-level packages), and nothing under ``streaming/`` outside ``streaming/stack/`` imports the
local stack (endpoints are resolved once, where the environment is chosen, and passed in).

Every import counts, also those inside functions: a lazy import is still a dependency. Imports under
``if TYPE_CHECKING:`` do not (they never run; grimp's ``exclude_type_checking_imports`` does the same):
a domain's ``defs(environment)`` names the root's Environment type that way.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streaming", "assets", "orchestration")

#: Loops known and owned elsewhere: (a, b) -> who removes them. Empty it as they go.
ALLOWED_LOOPS: dict[frozenset[str], str] = {}
#: Modules under streaming/ allowed to import streaming.stack, with why.
STACK_USERS_ALLOWED: dict[str, str] = {}


def _unit(module: str) -> str | None:
    """The unit a module belongs to: ``streaming.X`` / ``assets.X`` (a top-level module counts as its
    own unit), or ``orchestration``."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "orchestration":
        return "orchestration"
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    name = ".".join(rel.parts)
    return name.removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from streaming import settings`` names a module too.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _graph() -> dict[str, dict[str, set[str]]]:
    """unit -> unit it imports -> the files that do."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = _unit(_module_name(path))
            for name in _imports(path):
                target = _unit(name)
                if source and target and target != source and target not in PACKAGES[:2]:
                    edges[source][target].add(str(path.relative_to(ROOT)))
    return edges


def _cycles(edges: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_imports() -> None:
    """The walk is not vacuous: it finds edges known to exist."""
    edges = _graph()
    assert "streaming.warehouse" in edges["streaming.reconcile"]
    assert "assets.warehouse" in edges["orchestration"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": set()}, "b": {}}) == []


def test_no_import_cycles_between_subpackages() -> None:
    edges = _graph()
    # The allowed loops' edges (both ways) are left out; any other cycle fails.
    kept = {u: {w: fs for w, fs in ws.items() if frozenset({u, w}) not in ALLOWED_LOOPS} for u, ws in edges.items()}
    bad = [{u: {w: sorted(fs) for w, fs in kept[u].items() if w in component} for u in component}
           for component in _cycles(kept)]
    assert not bad, f"import cycles between subpackages (unit -> unit: the files that import): {bad}"


def test_the_allow_list_is_not_stale() -> None:
    """An allowed loop that no longer exists must leave the list."""
    edges = _graph()
    for pair in ALLOWED_LOOPS:
        a, b = sorted(pair)
        assert b in edges.get(a, {}) and a in edges.get(b, {}), f"{a} <-> {b} is gone: remove it from ALLOWED_LOOPS"


def test_only_the_stack_imports_the_stack() -> None:
    users = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "streaming").rglob("*.py")
        if not path.is_relative_to(ROOT / "streaming" / "stack")
        and any(name == "streaming.stack" or name.startswith("streaming.stack.") for name in _imports(path))
        and str(path.relative_to(ROOT)) not in STACK_USERS_ALLOWED
    )
    assert not users, f"these modules import streaming.stack; take endpoints as parameters instead: {users}"
