"""Working with recorded histories: export and import (JSON lines), fork from a step, and the
loading side of history replay. Shared by the app and the Client (:class:`HistoryOps`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, TypeAlias

import orjson
from anyio import to_thread

from .. import _codec
from .._core.wait import QUEUE
from .._errors import InvalidArgumentError, WorkflowConflictError, WorkflowNotFoundError
from .._filters import ALL_STATUSES, Cursor, WorkflowFilter, make_filter
from .._operations.archive import WorkflowHistory, from_rows, header, lines, parse
from .._operations.replay import ReplayResult, replay_workflow
from .._primitives.handle import WorkflowHandle
from .._specs import WorkflowSpec
from .._status import DELAYED, ENQUEUED, PENDING
from .._storage.database import SCHEMA_VERSION
from .._storage.store import Outcome, Store, not_found
from .lifecycle import Connected, check_count

#: A path, or a text file object open for writing (export) or reading (import, replay).
FileArg: TypeAlias = "str | os.PathLike[str] | IO[str]"
BATCH = 100  # workflows read per round of statements
PAGE = 1000  # ids per page of a filtered selection
FRONTIER = 1000  # parents per lookup of children


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :meth:`import_workflows` did: the ids it ``imported`` and the ids it ``skipped``
    because a workflow with that id already exists (an import is idempotent)."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which workflows an export or a replay takes: the filters of ``list_workflows`` and an
    optional ``limit`` (newest first)."""

    filters: WorkflowFilter
    limit: int | None = None

    @property
    def everything(self) -> bool:
        return (not self.filters.narrowed and self.filters.statuses == ALL_STATUSES
                and self.limit is None)

    def matches(self, history: WorkflowHistory) -> bool:
        """The filters, applied to an exported workflow (a file replay)."""
        selected, row = self.filters, history.row
        if history.status not in selected.statuses:
            return False
        for value, key in ((selected.name, "name"), (selected.app_version, "app_version"),
                           (selected.parent_workflow_id, "parent_workflow_id"),
                           (selected.queue_name, "queue_name")):
            if value is not None and row.get(key) != value:
                return False
        prefix = selected.workflow_id_prefix
        if prefix is not None and not history.workflow_id.startswith(prefix):
            return False
        if selected.created_after is not None or selected.created_before is not None:
            created = datetime.fromisoformat(row["created_at"])
            if selected.created_after is not None and created < selected.created_after:
                return False
            if selected.created_before is not None and created >= selected.created_before:
                return False
        return True


def check_ids(workflow_ids: Iterable[str] | None) -> list[str] | None:
    """Validated ids without repeats (in their order), or ``None``."""
    if workflow_ids is None:
        return None
    if isinstance(workflow_ids, str):
        raise InvalidArgumentError(
            f"workflow_ids must be a list of ids, not the str {workflow_ids!r}")
    return list(dict.fromkeys(_codec.check_id(w) for w in workflow_ids))


def selection(limit: int | None, **filters: Any) -> Selection:
    """Validate the filters (as ``list_workflows`` takes them) and the limit."""
    return Selection(make_filter(**filters), None if limit is None else check_count(
        limit, "limit"))


async def _matching_ids(store: Store, chosen: Selection) -> list[str]:
    """The ids of the matching workflows, newest first, a keyset page at a time."""
    found: list[str] = []
    after: Cursor | None = None
    while chosen.limit is None or len(found) < chosen.limit:
        size = PAGE if chosen.limit is None else min(PAGE, chosen.limit - len(found))
        page = await store.list_page(chosen.filters, after, size)
        found += [w.workflow_id for w in page]
        if len(page) < size:
            break
        after = page[-1].created_at, page[-1].workflow_id
    return found


async def select_ids(store: Store, ids: list[str] | None, chosen: Selection,
                     children: bool) -> list[str]:
    """The workflows to take: the given ids (all must exist) or those matching, and, with
    ``children``, their descendants."""
    if ids is None:
        found = await _matching_ids(store, chosen)
        if chosen.everything:
            return found  # children included
    else:
        existing = await store.existing_workflow_ids(ids)
        missing = [w for w in ids if w not in existing]
        if missing:
            raise not_found(missing[0])
        found = ids
    if not children:
        return found
    seen = set(found)
    frontier = found
    while frontier:
        born: list[str] = []
        for start in range(0, len(frontier), FRONTIER):
            born += [c for c in await store.child_workflow_ids(frontier[start:start + FRONTIER])
                     if c not in seen]
        seen.update(born)
        found = found + born
        frontier = born
    return found


@contextmanager
def _writer(file: Any) -> Iterator[Any]:
    if hasattr(file, "write"):
        yield file.write
        return
    with open(os.fspath(file), "w", encoding="utf-8", newline="\n") as opened:
        yield opened.write


@contextmanager
def _reader(file: Any) -> Iterator[Iterable[str]]:
    if hasattr(file, "read"):
        yield file
        return
    with open(os.fspath(file), encoding="utf-8") as opened:
        yield opened


def read_histories(file: Any) -> list[WorkflowHistory]:
    """Every workflow of an export file."""
    with _reader(file) as text_lines:
        return list(parse(text_lines))


# -- replay ---------------------------------------------------------------------------------------


async def replay_from_store(
    store: Store, specs: Mapping[str, WorkflowSpec], ids: list[str] | None, chosen: Selection,
    timeout_seconds: float,
) -> list[ReplayResult]:
    """Replay workflows read from the database (a batch at a time; nothing is written)."""
    taken = await select_ids(store, ids, chosen, children=False)
    results: list[ReplayResult] = []
    for start in range(0, len(taken), BATCH):
        async with store.snapshot():
            batch = taken[start:start + BATCH]
            histories = from_rows(await store.export_rows(batch), batch)
            loaded = {h.workflow_id for h in histories}
            children = sorted({c for h in histories for c in h.child_ids()} - loaded)
            others = from_rows(await store.export_rows(children, ("workflow",))) \
                if children else []
        outcomes = {h.workflow_id: h.outcome() for h in histories + others}
        for history in histories:
            results.append(await replay_workflow(specs, history, outcomes, timeout_seconds))
    return results


async def replay_from_file(
    file: Any, specs: Mapping[str, WorkflowSpec], ids: list[str] | None, chosen: Selection,
    timeout_seconds: float,
) -> list[ReplayResult]:
    """Replay workflows of an export file (no database needed), in the file's order."""
    histories = read_histories(file)
    outcomes: dict[str, Outcome] = {h.workflow_id: h.outcome() for h in histories}
    taken: list[WorkflowHistory]
    if ids is not None:
        by_id = {h.workflow_id: h for h in histories}
        missing = [w for w in ids if w not in by_id]
        if missing:
            raise WorkflowNotFoundError(f"workflow {missing[0]!r} is not in the export file")
        taken = [by_id[w] for w in ids]
    else:
        taken = [h for h in histories if chosen.matches(h)][:chosen.limit]
    return [await replay_workflow(specs, h, outcomes, timeout_seconds) for h in taken]


# -- the methods ----------------------------------------------------------------------------------


class HistoryOps(Connected):
    """Export, import and fork: the same from an app and from a Client."""

    async def export_workflows(
        self,
        workflow_ids: Iterable[str] | None,
        file: FileArg,
        *,
        status: str | Iterable[str] | None = None,
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        workflow_id_prefix: str | None = None,
        app_version: str | None = None,
        parent_workflow_id: str | None = None,
        queue_name: str | None = None,
        limit: int | None = None,
        include_children: bool = True,
    ) -> list[str]:
        """Write workflows with their journals, events, streams and pending messages to
        ``file`` (a path, or a text file open for writing) as JSON lines; returns their ids.

        ``workflow_ids`` names them (each must exist); ``None`` takes those matching the
        filters, which are those of :meth:`list_workflows` (newest first, at most ``limit``; no
        filter: every workflow). With ``include_children`` their child workflows (and theirs)
        are exported too. One snapshot of the database is read, so a workflow running meanwhile
        is exported consistently.
        """
        ids = check_ids(workflow_ids)
        chosen = selection(
            limit, status=status, name=name, created_after=created_after,
            created_before=created_before, workflow_id_prefix=workflow_id_prefix,
            app_version=app_version, parent_workflow_id=parent_workflow_id,
            queue_name=queue_name)
        if not isinstance(include_children, bool):
            raise InvalidArgumentError(
                f"include_children must be True or False, not {include_children!r}")
        store = self.runtime.store
        async with store.snapshot():
            taken = await select_ids(store, ids, chosen, include_children)
            with _writer(file) as write:
                await to_thread.run_sync(write, header(SCHEMA_VERSION))
                for start in range(0, len(taken), BATCH):
                    batch = taken[start:start + BATCH]
                    text = "".join(line for history in from_rows(
                        await store.export_rows(batch), batch) for line in lines(history))
                    await to_thread.run_sync(write, text)  # the event loop keeps running
        return taken

    async def import_workflows(self, file: FileArg) -> ImportResult:
        """Insert the workflows of an export file (a path, or a text file open for reading)
        with everything exported with them; one transaction per workflow.

        A workflow whose id exists here is skipped (and reported), so importing twice is
        harmless. PENDING workflows arrive unassigned: a live app that registers them (with the
        same ``app_version``) recovers and finishes them. Queued ones (ENQUEUED, DELAYED, and
        PENDING ones of a queue, which go back to it) wait in their queue for its dispatchers,
        who are woken: they start within the queue's limits.
        """
        runtime = self.runtime
        result = ImportResult()
        unassigned = False
        with _reader(file) as text_lines:
            for history in parse(text_lines):
                pending = history.status == PENDING
                row = dict(history.row)
                if pending:
                    row["executor_id"] = None
                queued = row.get("queue_name") if history.status in (ENQUEUED, DELAYED) else None
                if pending and row.get("queue_name") is not None:
                    # A queued workflow that was running goes back to its queue, as a recovered
                    # one does: it starts again within the queue's limits.
                    row["status"] = ENQUEUED
                    queued, pending = row["queue_name"], False
                rows = {kind: orjson.dumps(found).decode()
                        for kind, found in history.rows.items() if found}
                if await runtime.store.import_workflow(
                        history.workflow_id, orjson.dumps(row).decode(), rows, pending, queued):
                    result.imported.append(history.workflow_id)
                    unassigned = unassigned or pending
                    if queued is not None:
                        runtime.waits.wake(QUEUE, queued)  # our own NOTIFY is an echo here
                else:
                    result.skipped.append(history.workflow_id)
        if unassigned:
            self._after_resume()
        return result

    async def fork_workflow(
        self,
        source_id: str,
        /,
        from_operation: int | None = None,
        *,
        workflow_id: str | None = None,
        app_version: str | None = None,
        from_step: int | None = None,
    ) -> WorkflowHandle[Any]:
        """Start a new workflow with the inputs of ``source_id`` and its history up to (not
        including) operation #``from_operation``, so it runs again from that operation on the
        current code; returns its handle. (``from_step=`` is its older name.)

        Copied: the journal entries numbered below ``from_operation`` (child workflows
        started there are shared, not run again), the events whose latest value one of those
        operations wrote, and the stream entries those operations wrote (renumbered from 0).
        The fork's mailbox starts empty. The fork of an earlier run kept by
        ``continue_as_new`` starts at most at that run's ``continue_as_new``, which it then
        performs (handing over to its own next run). ``workflow_id`` chooses its id; an
        existing workflow of the same name under that id is returned as is (a repeated fork
        does nothing).

        It runs here if this app registers the workflow; otherwise it is left unassigned for
        a live app that does, with ``app_version`` (default: the source's). The fork of a
        queued workflow goes through the source's queue instead, as a resumed one does: it
        waits there (ENQUEUED, with the source's priority and partition key, without its
        deduplication id) and runs within the queue's limits.
        """
        _codec.check_id(source_id)
        if (from_operation is None) == (from_step is None):
            raise InvalidArgumentError(
                "give the operation number to run again from: from_operation=N (from_step=N "
                "is its older name), exactly once")
        start = from_operation if from_operation is not None else from_step
        assert start is not None
        check_count(start, "from_operation")
        new_id = secrets.token_hex(16) if workflow_id is None else _codec.check_id(workflow_id)
        if app_version is not None:
            _codec.check_id(app_version, "app_version")
        store = self.runtime.store
        source = await store.workflow_status(source_id)
        here = self._fork_target(source.name, app_version)
        executor_id, version = here if here is not None else (None, app_version)
        forked = await store.fork_workflow(source_id, new_id, start, executor_id, version)
        if not forked.created:
            if forked.name != source.name:
                raise WorkflowConflictError(
                    f"workflow id {new_id!r} is already used by workflow {forked.name!r}, not "
                    f"{source.name!r}; choose another id for the fork")
            return self._handle(new_id)
        if forked.queue_name is not None:  # waits in its queue: wake this process's dispatcher
            self.runtime.waits.wake(QUEUE, forked.queue_name)
        elif here is not None:
            self._run_forked(new_id, source.name, forked.inputs)  # (a fork starts at epoch 1)
        else:
            self._after_resume()
        return self._handle(new_id)

    # -- hooks for the app ------------------------------------------------------------------------

    def _fork_target(self, name: str, app_version: str | None) -> tuple[str, str] | None:
        """``(executor id, app version)`` if a fork of workflow ``name`` runs here."""
        return None

    def _run_forked(self, workflow_id: str, name: str, inputs: str) -> None:
        """Execute a fork created for this executor."""
