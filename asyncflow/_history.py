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

from . import _codec
from ._archive import WorkflowHistory, from_rows, header, lines, parse
from ._errors import InvalidArgumentError, WorkflowConflictError, WorkflowNotFoundError
from ._handle import WorkflowHandle
from ._lifecycle import Connected, check_count
from ._replay import ReplayResult, replay_workflow
from ._specs import WorkflowSpec
from ._status import PENDING, TERMINAL_STATUSES, Status
from ._storage import SCHEMA_VERSION
from ._store import Outcome, Store, not_found

#: A path, or a text file object open for writing (export) or reading (import, replay).
FileArg: TypeAlias = "str | os.PathLike[str] | IO[str]"
BATCH = 100  # workflows read per round of statements
FRONTIER = 1000  # parents per lookup of children


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :meth:`import_workflows` did: the ids it ``imported`` and the ids it ``skipped``
    because a workflow with that id already exists (an import is idempotent)."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Filters:
    """Which workflows an export or replay takes (every filter optional)."""

    statuses: list[str] | None = None
    name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int | None = None

    def matches(self, history: WorkflowHistory) -> bool:
        if self.statuses is not None and history.status not in self.statuses:
            return False
        if self.name is not None and history.name != self.name:
            return False
        if self.created_after is not None or self.created_before is not None:
            created = datetime.fromisoformat(history.row["created_at"])
            if self.created_after is not None and created < self.created_after:
                return False
            if self.created_before is not None and created >= self.created_before:
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


def _check_time(value: object, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidArgumentError(
            f"{what} must be a timezone-aware datetime (say datetime.now(UTC)), not {value!r}")
    return value


def check_filters(
    status: str | Iterable[str] | None, name: str | None, created_after: datetime | None,
    created_before: datetime | None, limit: int | None,
) -> Filters:
    """Validate the filters of an export or a replay."""
    statuses: list[str] | None = None
    if status is not None:
        given = [status] if isinstance(status, str) else list(status)
        for one in given:
            if one not in Status.__members__:
                raise InvalidArgumentError(
                    f"unknown status {one!r}; choose from {', '.join(Status.__members__)}")
        statuses = given
    _codec.check_name(name, "name", optional=True)
    return Filters(statuses, name, _check_time(created_after, "created_after"),
                   _check_time(created_before, "created_before"),
                   None if limit is None else check_count(limit, "limit"))


async def select_ids(store: Store, ids: list[str] | None, filters: Filters,
                     children: bool) -> list[str]:
    """The workflows to take: the given ids (all must exist) or those matching the filters,
    and, with ``children``, their descendants."""
    if ids is None:
        found = await store.select_workflow_ids(
            filters.statuses, filters.name, filters.created_after, filters.created_before,
            filters.limit)
        unfiltered = filters == Filters()
    else:
        existing = await store.existing_workflow_ids(ids)
        missing = [w for w in ids if w not in existing]
        if missing:
            raise not_found(missing[0])
        found, unfiltered = ids, False
    if not children or unfiltered:  # every workflow is taken already
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


def _default_statuses(ids: list[str] | None, filters: Filters) -> Filters:
    if ids is None and filters.statuses is None:  # finished workflows, unless asked otherwise
        return Filters(sorted(TERMINAL_STATUSES), filters.name, filters.created_after,
                       filters.created_before, filters.limit)
    return filters


async def replay_from_store(
    store: Store, specs: Mapping[str, WorkflowSpec], ids: list[str] | None, filters: Filters,
    timeout_seconds: float,
) -> list[ReplayResult]:
    """Replay workflows read from the database (a batch at a time; nothing is written)."""
    chosen = await select_ids(store, ids, _default_statuses(ids, filters), children=False)
    results: list[ReplayResult] = []
    for start in range(0, len(chosen), BATCH):
        async with store.snapshot():
            batch = chosen[start:start + BATCH]
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
    file: Any, specs: Mapping[str, WorkflowSpec], ids: list[str] | None, filters: Filters,
    timeout_seconds: float,
) -> list[ReplayResult]:
    """Replay workflows of an export file (no database needed)."""
    histories = read_histories(file)
    outcomes: dict[str, Outcome] = {h.workflow_id: h.outcome() for h in histories}
    filters = _default_statuses(ids, filters)
    if ids is not None:
        by_id = {h.workflow_id: h for h in histories}
        missing = [w for w in ids if w not in by_id]
        if missing:
            raise WorkflowNotFoundError(f"workflow {missing[0]!r} is not in the export file")
        chosen = [by_id[w] for w in ids]
    else:
        chosen = [h for h in histories if filters.matches(h)][:filters.limit]
    return [await replay_workflow(specs, h, outcomes, timeout_seconds) for h in chosen]


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
        limit: int | None = None,
        include_children: bool = True,
    ) -> list[str]:
        """Write workflows with their journals, events, streams and pending messages to
        ``file`` (a path, or a text file open for writing) as JSON lines; returns their ids.

        ``workflow_ids`` names them (each must exist); ``None`` takes those matching the
        filters (newest first, at most ``limit``; no filter: every workflow). With
        ``include_children`` their child workflows (and theirs) are exported too. One snapshot
        of the database is read, so a workflow running meanwhile is exported consistently.
        """
        ids = check_ids(workflow_ids)
        filters = check_filters(status, name, created_after, created_before, limit)
        store = self.runtime.store
        async with store.snapshot():
            chosen = await select_ids(store, ids, filters, include_children)
            with _writer(file) as write:
                await to_thread.run_sync(write, header(SCHEMA_VERSION))
                for start in range(0, len(chosen), BATCH):
                    batch = chosen[start:start + BATCH]
                    text = "".join(line for history in from_rows(
                        await store.export_rows(batch), batch) for line in lines(history))
                    await to_thread.run_sync(write, text)  # the event loop keeps running
        return chosen

    async def import_workflows(self, file: FileArg) -> ImportResult:
        """Insert the workflows of an export file (a path, or a text file open for reading)
        with everything exported with them; one transaction per workflow.

        A workflow whose id exists here is skipped (and reported), so importing twice is
        harmless. PENDING workflows arrive unassigned: a live app that registers them (with the
        same ``app_version``) recovers and finishes them.
        """
        store = self.runtime.store
        result = ImportResult()
        unassigned = False
        with _reader(file) as text_lines:
            for history in parse(text_lines):
                pending = history.status == PENDING
                row = dict(history.row)
                if pending:
                    row["executor_id"] = None
                rows = {kind: orjson.dumps(found).decode()
                        for kind, found in history.rows.items() if found}
                if await store.import_workflow(history.workflow_id, orjson.dumps(row).decode(),
                                               rows, pending):
                    result.imported.append(history.workflow_id)
                    unassigned = unassigned or pending
                else:
                    result.skipped.append(history.workflow_id)
        if unassigned:
            self._unassigned_arrived()
        return result

    async def fork_workflow(
        self,
        source_id: str,
        /,
        from_step: int,
        *,
        workflow_id: str | None = None,
        app_version: str | None = None,
    ) -> WorkflowHandle[Any]:
        """Start a new workflow with the inputs of ``source_id`` and its history up to (not
        including) operation ``from_step``, so it runs again from that operation on the
        current code; returns its handle.

        Copied: the journal entries with function ids below ``from_step`` (child workflows
        started there are shared, not run again), the events whose latest value one of those
        operations wrote, and the stream entries those operations wrote (renumbered from 0).
        The fork's mailbox starts empty. ``workflow_id`` chooses its id; an existing workflow
        of the same name under that id is returned as is (a repeated fork does nothing).

        It runs here if this app registers the workflow; otherwise it is left unassigned for
        a live app that does, with ``app_version`` (default: the source's).
        """
        _codec.check_id(source_id)
        check_count(from_step, "from_step")
        new_id = secrets.token_hex(16) if workflow_id is None else _codec.check_id(workflow_id)
        if app_version is not None:
            _codec.check_id(app_version, "app_version")
        store = self.runtime.store
        source = await store.workflow_status(source_id)
        here = self._fork_target(source.name, app_version)
        executor_id, version = here if here is not None else (None, app_version)
        forked = await store.fork_workflow(source_id, new_id, from_step, executor_id, version)
        if not forked.created:
            if forked.name != source.name:
                raise WorkflowConflictError(
                    f"workflow id {new_id!r} is already used by workflow {forked.name!r}, not "
                    f"{source.name!r}; choose another id for the fork")
            return self._handle(new_id)
        if here is not None:
            self._run_forked(new_id, source.name, forked.inputs)
        else:
            self._unassigned_arrived()
        return self._handle(new_id)

    # -- hooks for the app ------------------------------------------------------------------------

    def _fork_target(self, name: str, app_version: str | None) -> tuple[str, str] | None:
        """``(executor id, app version)`` if a fork of workflow ``name`` runs here."""
        return None

    def _run_forked(self, workflow_id: str, name: str, inputs: str) -> None:
        """Execute a fork created for this executor."""

    def _unassigned_arrived(self) -> None:
        """Unassigned PENDING workflows were written: let recovery look now."""
