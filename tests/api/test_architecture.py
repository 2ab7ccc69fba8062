"""The house, pinned: the layers of the package are its folders, and imports only run down.

A module's layer is its folder (``asyncflow/_storage/store.py`` is in ``_storage``); the modules
at the package root are the values (errors, statuses, codec, signatures, specs) and sit at the
bottom, but for ``__init__`` and ``__main__``, which sit on top. A module may import modules of
lower layers and of its own folder, never of a higher one (``TYPE_CHECKING`` imports included),
and the graph of modules has no circles, inside a folder either. docs/architecture.md draws the
same folders.
"""

from __future__ import annotations

import ast
from pathlib import Path

import asyncflow

PACKAGE = Path(asyncflow.__file__).parent

#: Bottom layer first. "values" are the modules at the package root.
LAYERS: list[str] = [
    "values",       # errors, statuses, typed values <-> JSON, signatures, specs, filters
    "_core",        # the waiter registry and wait primitive, health, telemetry, process identity
    "_storage",     # driver, pool, migrations, the store and its SQL, batcher, listener, lease
    "_engine",      # runtime, context, journal, runner, supervisor, dispatch
    "_primitives",  # steps, messages, events, streams, timers, results, handles, wait_first...
    "_operations",  # queues, schedules, deadlines, replay, adoption, retention, admin
    "_front",       # lifecycle, decorators, module-level functions, AsyncFlow, Client
    "_dashboard",   # the dashboard (an ASGI app over the front)
    "web",          # asyncflow.web: ASGI integration
    "__init__",     # the public namespace
    "testing",      # asyncflow.testing, the users' pytest plugin: imported by nothing
    "_cli",         # the command line
    "__main__",
]

#: The values at the package root.
VALUES = {"_errors", "_status", "_encode", "_decode", "_codec", "_signature", "_specs",
          "_recorded", "_filters"}


def _modules() -> dict[str, Path]:
    """Every module, by dotted name relative to the package (``_storage.database.sql.journal``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> str:
    top = module.split(".")[0]
    if top in ("__init__", "__main__"):
        return top
    if top in VALUES:
        return "values"
    return top


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """The package modules an ``import from`` names (relative or absolute)."""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        if module == "__init__":
            package = []
        base = package[:len(package) - (node.level - 1)]
    elif node.module and (node.module == "asyncflow" or node.module.startswith("asyncflow.")):
        base = []
        node = ast.ImportFrom(module=node.module.removeprefix("asyncflow").lstrip(".") or None,
                              names=node.names, level=1)
    else:
        return []
    stem = base + (node.module.split(".") if node.module else [])
    targets = []
    for alias in node.names:
        candidate = ".".join([*stem, alias.name])
        if candidate in MODULES:
            targets.append(candidate)
        elif stem and ".".join(stem) in MODULES:
            targets.append(".".join(stem))
    return targets


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, path, node))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name.removeprefix("asyncflow.")
                if alias.name.startswith("asyncflow.") and name in MODULES:
                    found.add(name)
    found.discard(module)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_module_is_in_a_layer():
    assert {layer_of(module) for module in MODULES} <= set(LAYERS)
    # nothing new lands at the root without being placed on purpose
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert root == VALUES | {"__init__", "__main__"}, root - VALUES


def test_imports_only_run_down_the_layers():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = sorted(
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in GRAPH.items() for target in targets
        if rank[layer_of(target)] > rank[layer_of(module)]
        # a subpackage's modules may import their own package's __init__
        and not module.startswith(target + ".")
    )
    assert not wrong, wrong


def test_no_import_circles():
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if module.startswith(target + "."):
                continue  # a module importing its own package (its __init__) is not a circle
            if state.get(target) == 1:
                circles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])
    assert not circles, circles


def test_the_graph_sees_imports():
    """The checks above would pass on an empty graph: pin a few known edges."""
    assert "_storage.database" in GRAPH["_storage.store"]
    assert "_storage.sql.journal" in GRAPH["_storage.store"]
    assert "_core.wait" in GRAPH["_engine.runner"]
    assert "_front.app" in GRAPH["__init__"]
    assert "_cli.main" in GRAPH["__main__"]


def test_only_the_storage_layer_imports_asyncpg():
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "_storage":
            continue
        text = path.read_text()
        assert "import asyncpg" not in text and "from asyncpg" not in text, path


def test_exports_report_the_public_module():
    for name in asyncflow.__all__:
        obj = getattr(asyncflow, name)
        if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__module__")):
            assert obj.__module__ == "asyncflow", name


def test_sql_is_run_only_by_the_storage_layer():
    """Statements are named methods of the store: no module outside ``_storage`` imports the
    SQL modules (``_front.lifecycle`` only validates the schema name with them) or runs
    statements itself."""
    for module, targets in GRAPH.items():
        if layer_of(module) == "_storage":
            continue
        text = MODULES[module].read_text()
        sql = {t for t in targets if t == "_storage.sql" or t.startswith("_storage.sql.")}
        if module == "_front.lifecycle":
            assert sql == {"_storage.sql"} and text.count("sql.") == 1, module
            continue
        assert not sql, module
        for call in (".fetch(", ".fetchrow(", ".fetchval(", ".execute("):
            assert "storage" + call not in text, (module, call)


def test_modules_stay_small():
    """Every module is under 500 lines but those named here, each with its reason (also in
    docs/architecture.md)."""
    explained = {
        # the dashboard's app: routing, the page table and the action handlers in one place
        "_dashboard._app": 520,
    }
    long = {
        module: n for module, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > explained.get(module, 500)
    }
    assert not long, long
