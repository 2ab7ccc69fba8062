"""The public surface and the project's own rules, pinned."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import asyncflow

PACKAGE = Path(asyncflow.__file__).parent

EXPECTED = {
    "AsyncFlow", "AsyncFlowError", "AsyncFlowTimeoutError", "CANCELLED", "Client",
    "ComponentHealth", "ConfigurationError", "DatabaseError", "DatabaseUnavailableError",
    "DistributionError",
    "ERROR",
    "ExecutorIdInUseError", "Health", "Status",
    "InvalidArgumentError", "InvalidSettingError", "MAX_ID_LENGTH",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "MAX_VALUE_BYTES",
    "MaxRecoveryAttemptsExceededError", "NonDeterministicWorkflowError", "NotInWorkflowError",
    "NotLaunchedError", "PENDING", "RecordedError", "SUCCESS", "SchemaVersionError",
    "SerializationError", "StepFailedError", "StepInfo", "StreamClosedError",
    "TransactionStateError",
    "ValueTooLargeError", "WorkflowCancelledError", "WorkflowConflictError",
    "WorkflowFailedError", "WorkflowHandle", "WorkflowNotFoundError", "WorkflowStatus",
    "Branch", "Fired", "event", "message", "result", "timer", "wait_first",
    "DELAYED", "ENQUEUED", "Queue", "QueueDeduplicatedError",
    "__version__", "close_stream", "connection", "get_all_events", "get_event", "read_stream",
    "recv", "send", "set_event", "sleep", "start_workflow", "workflow_id", "write_stream",
    # history (issue 14): replay, export/import, patches
    "ExportFormatError", "ImportResult", "ReplayError", "ReplayResult", "deprecate_patch",
    "patched",
    # operating workflows (docs/operating-lifecycle.md)
    "Retention", "StepTimeoutError", "WorkflowPendingError",
    "Telemetry", "logging_filter",
    # timeouts and schedules (docs/operating-timeouts-schedules.md)
    "WorkflowTimeoutError", "ScheduleNotFoundError", "ScheduleStatus",
    # production Postgres (docs/operations.md, "Deploying on managed Postgres")
    "ReadOnlyDatabaseError",
    # typed values (docs/guide.md, Values)
    "DecodeError",
    # endless workflows and attributes (docs/guide.md)
    "CONTINUED_AS_NEW", "continue_as_new", "set_attributes",
    # what a send from outside a workflow says became of the message
    "Delivery",
    # debounce, schedules made at runtime, delayed workflows (docs/guide.md)
    "Debouncer", "ScheduleConflictError", "WorkflowNotQueuedError",
}
WEB = {"AuthHook", "Dashboard", "EventStream", "EventWatch", "StreamSnapshot", "dashboard",
       "event_watch_response", "lifespan", "sse_response", "stream_snapshot"}


def test_public_names_are_pinned():
    assert set(asyncflow.__all__) == EXPECTED
    assert len(asyncflow.__all__) == len(set(asyncflow.__all__))
    for name in asyncflow.__all__:
        assert hasattr(asyncflow, name), name


def test_web_helpers_live_in_asyncflow_web():
    import asyncflow.web

    assert set(asyncflow.web.__all__) == WEB
    for name in WEB - {"AuthHook"}:  # AuthHook is a type alias
        obj = getattr(asyncflow.web, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
    # The old top-level names still resolve (to the same objects), outside __all__.
    for name in ("EventStream", "StreamSnapshot", "lifespan", "sse_response", "stream_snapshot"):
        assert getattr(asyncflow, name) is getattr(asyncflow.web, name)


def test_every_public_object_has_a_docstring():
    for name in asyncflow.__all__:
        obj = getattr(asyncflow, name)
        if callable(obj) and not isinstance(obj, str):
            assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"


def test_errors_share_one_root():
    for name in asyncflow.__all__:
        obj = getattr(asyncflow, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, asyncflow.AsyncFlowError), name


def test_only_storage_and_listener_import_asyncpg():
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "asyncpg" or n.startswith("asyncpg.") for n in names):
                importers.add(path.relative_to(PACKAGE).as_posix())
    assert importers <= {"_storage/database.py", "_storage/driver.py", "_storage/pool.py",
                         "_storage/listener.py"}


# Where the library may call sleep: retry backoffs, the listener's reconnect backoff, the SSE
# keep-alive timer, and
# asyncflow.sleep outside a workflow (a plain sleep by definition). Waiting for database state
# is always a registered waiter woken by NOTIFY, never a sleep in a loop.
ALLOWED_SLEEPS = {
    ("_primitives/steps.py", "run_step"),
    ("_primitives/steps.py", "run_transaction"),
    ("_storage/listener.py", "run"),
    ("_front/api.py", "sleep"),
    ("web/_sse.py", "keep_alive"),  # the SSE keep-alive comment timer
    # the dashboard coalesces a burst of changes (at most 4 pushes/s)
    ("_dashboard/_live.py", "serve"),
    # asyncflow.testing's relaunch: backoff while the executor lock of the app's own previous
    # launch is still held by its exiting backend
    ("testing/_launch.py", "launch"),
    # a launch waiting out the lease of the previous holder of its executor id (one wait, then
    # a conditional take-over that fails if the holder showed a sign of life meanwhile)
    ("_storage/lease.py", "_take_over"),
    # sleep(0), a yield and no wait: the task a local hand-over woke runs before the waker goes
    # on (issue 23)
    ("_core/wait.py", "hand_over"),
}


def _own_nodes(func):
    """The nodes of a function's body, not descending into nested functions."""
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def test_sleep_is_only_called_where_allowed():
    found = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in _own_nodes(func):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "sleep"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in {"asyncio", "anyio", "time", "trio"}
                ):
                    found.add((path.relative_to(PACKAGE).as_posix(), func.name))
    assert found <= ALLOWED_SLEEPS, found - ALLOWED_SLEEPS


SQL_DIR = PACKAGE / "_storage" / "sql"


def sql_statements() -> dict[str, str]:
    """Every statement constant of the SQL modules (``asyncflow/_storage/sql/``), by name."""
    found: dict[str, str] = {}
    for path in sorted(SQL_DIR.glob("*.py")):
        module = importlib.import_module(f"asyncflow._storage.sql.{path.stem}"
                                         if path.stem != "__init__" else "asyncflow._storage.sql")
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str):
                found[f"{path.stem}.{name}"] = value
    return found


def test_sql_never_formats_values():
    # No f-strings, %-formatting or .format() in the SQL modules: the schema identifier is the
    # only substitution (render()), values are always $n parameters.
    sources = sorted(SQL_DIR.glob("*.py"))
    assert len(sources) > 10
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            assert not isinstance(node, ast.JoinedStr), f"f-string in {source.name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr != "format", f".format() in {source.name}"
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
                raise AssertionError(f"%-formatting in {source.name}")
    for name, value in sql_statements().items():
        if "SELECT" in value.upper():
            placeholders = set(re.findall(r"\{(\w*)\}", value))
            assert placeholders <= {"s"}, (name, placeholders)
    # Other modules never build SQL from strings at run time.
    for path in PACKAGE.rglob("*.py"):
        if SQL_DIR in path.parents:
            continue
        text = path.read_text()
        assert not re.search(r"f\"\s*(SELECT|INSERT|UPDATE|DELETE)\b", text, re.I), path.name


def test_no_pickle_anywhere():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert all("pickle" not in a.name for a in node.names), path.name
            elif isinstance(node, ast.ImportFrom):
                assert "pickle" not in (node.module or ""), path.name


def test_notify_payloads_are_kind_plus_id():
    payloads = re.findall(r"pg_notify\(\$\d+, ([^)]*)\)", "\n".join(sql_statements().values()))
    assert payloads
    for payload in payloads:
        if payload.startswith("'*'"):  # a batch: items built below, ids only
            assert payload == "'*' || string_agg(item, ''", payload
            continue
        if payload == "'d'":  # a deadline was set: the kind alone (the enforcers re-read)
            continue
        if payload == "'c'":  # the runtime schedules changed: the schedulers re-read them
            continue
        assert re.fullmatch(
            r"'[a-z]' \|\| (\$\d+|workflow_id|destination_id|queue_name)", payload), payload
    items = re.findall(r"SELECT (.*) AS item FROM", "\n".join(sql_statements().values()))
    assert items
    for item in items:
        assert re.fullmatch(r"'[a-z]' \|\| char_length\((\w+)\) \|\| ':' \|\| \1", item), item
        assert re.fullmatch(r".*\((workflow_id|destination_id|queue_name)\).*", item), item
