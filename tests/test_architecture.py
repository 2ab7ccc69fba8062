"""The house, pinned: the layers of the package and the directions imports may run.

Every module of ``asyncflow`` is listed below, bottom layer first. A module may import only
modules listed before it (``TYPE_CHECKING`` imports included), so there are no import circles
and no lower layer ever imports the app. docs/architecture.md describes the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import asyncflow

PACKAGE = Path(asyncflow.__file__).parent

LAYERS: list[list[str]] = [
    # values, errors, SQL text
    ["_errors", "_status", "_queries", "_watchdog"],
    # typed values: plain JSON out of them, and back by annotation
    ["_encode", "_decode"],
    ["_codec", "_health", "_embedded", "_telemetry", "_process", "_connect"],
    ["_signature"],
    ["_specs", "_recorded", "_filters"],
    # the database: pool and error seam (asyncpg), then the named operations
    ["_driver"],
    ["_pool"],
    ["_storage", "_batch"],
    ["_store_base", "_pooler"],
    ["_store_batches", "_store_queues", "_store_history", "_store_schedules", "_store_liveness",
     "_store_versions", "_store_runs"],
    ["_store_admin"],
    ["_store"],
    ["_archive"],
    # waking: the registry and wait primitive, the LISTEN connection
    ["_wait"],
    ["_liveness"],
    ["_listener"],
    ["_runtime"],
    ["_context"],
    ["_journal", "_observe"],
    ["_patch"],
    # the primitives
    ["_timers"],
    ["_steps", "_messages", "_events", "_streams", "_results", "_cancel", "_continue",
     "_attributes"],
    ["_wait_first", "_runner", "_handle"],
    ["_supervisor", "_retention", "_dispatch", "_queues", "_replay", "_deadlines", "_schedules"],
    ["_adoption", "_debounce"],
    ["_schedule_ops"],
    ["_admin"],
    # the app and the client, and what picks between variants
    ["_lifecycle"],
    ["_history", "_registration"],
    ["_api", "_client"],
    ["_app"],
    ["_dashboard"],
    ["web"],
    ["__init__"],
    # the users' test kit (a subpackage): on top of everything, imported by nothing
    ["testing"],
    ["_cli_output"],
    ["_cli_embedded", "_cli_lifecycle", "_cli_versions"],
    ["_cli_history"],
    ["_cli"],
    ["__main__"],
]


def _module_names() -> set[str]:
    """Top-level modules, and subpackages (each counted as one unit)."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    return modules | {path.parent.name for path in PACKAGE.glob("*/__init__.py")}


def _imports(name: str) -> set[str]:
    package = PACKAGE / name
    files = sorted(package.rglob("*.py")) if package.is_dir() else [PACKAGE / f"{name}.py"]
    level = 2 if package.is_dir() else 1  # the relative level that means "asyncflow."
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == level and node.module:
                    found.add(node.module.split(".")[0])
                elif node.level == level:
                    found.update(alias.name for alias in node.names)
                elif node.module and node.module.startswith("asyncflow."):
                    found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("asyncflow."):
                        found.add(alias.name.split(".")[1])
    return found & _module_names()


def test_every_module_has_a_layer():
    listed = [m for layer in LAYERS for m in layer]
    assert len(listed) == len(set(listed))
    assert set(listed) == _module_names()


def test_imports_only_run_down_the_layers():
    position = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    wrong = []
    for module, level in position.items():
        for target in _imports(module):
            if target != module and position[target] >= level:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_only_the_storage_layer_and_listener_import_asyncpg():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.name not in ("_storage.py", "_driver.py", "_pool.py", "_listener.py"):
            assert "import asyncpg" not in text and "from asyncpg" not in text, path


def test_exports_report_the_public_module():
    for name in asyncflow.__all__:
        obj = getattr(asyncflow, name)
        if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__module__")):
            assert obj.__module__ == "asyncflow", name


def test_sql_is_run_only_by_the_store_and_storage_layers():
    """Statements are named methods of the store: no other module imports the SQL module
    (``_lifecycle`` only validates the schema name with it) or runs statements itself."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.name in ("_store.py", "_storage.py", "_queries.py") or path.name.startswith(
                "_store_"):
            continue
        if path.name == "_lifecycle.py":
            assert "Q.quote_schema" in text and text.count("Q.") == 1, path
            continue
        assert "_queries" not in text, path
        for call in (".fetch(", ".fetchrow(", ".fetchval(", ".execute("):
            assert "storage" + call not in text, (path, call)
