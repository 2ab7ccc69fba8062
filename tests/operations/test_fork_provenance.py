"""A fork copies the events and closed flags that operations before its step wrote, also from a
workflow whose rows one transaction wrote (a fork's copy, an import): each row names the
operation that wrote it (``events.writer_fid``, ``stream_heads.closed_by``). An event set again
after the fork's step gets the value the workflow body set before it, from the journal.

Found by the torture test on 2026-12-07 (seed 742495332): provenance by ``xmin`` alone let a
fork of a fork take every closed flag and event the first fork had copied. Rows written before
migration 19 name no writer and are still told by their transaction."""

from __future__ import annotations

import asyncflow


def define_writer(app: asyncflow.AsyncFlow, *, in_steps: bool) -> object:
    """Writes "a", "b" and closes stream "s"; sets event "first" to 1 (operation 0), then after
    a recv "later" to 2 and "first" again, to 10: from the workflow itself, or from steps
    (staged with their checkpoints)."""

    @app.step()
    async def set_in_step(key: str, value: int) -> None:
        await asyncflow.set_event(key, value)

    @app.step()
    async def close_in_step() -> None:
        await asyncflow.close_stream("s")

    @app.workflow()
    async def writer() -> str:
        if in_steps:
            await set_in_step("first", 1)                   # 0
        else:
            await asyncflow.set_event("first", 1)           # 0
        await asyncflow.write_stream("s", "a")              # 1
        await asyncflow.recv("go", timeout_seconds=300)     # 2
        await asyncflow.write_stream("s", "b")              # 3
        if in_steps:
            await set_in_step("later", 2)                   # 4
            await set_in_step("first", 10)                  # 5
            await close_in_step()                           # 6
        else:
            await asyncflow.set_event("later", 2)           # 4
            await asyncflow.set_event("first", 10)          # 5
            await asyncflow.close_stream("s")               # 6
        return "done"

    return writer


async def run_source(app: asyncflow.AsyncFlow, writer: object) -> None:
    """Workflow "src" runs ``writer`` to its end."""
    source = await app.start_workflow(writer, workflow_id="src")
    await app.send("src", None, "go")
    assert await source.get_result(timeout_seconds=30) == "done"


async def fork_of_a_fork(app: asyncflow.AsyncFlow, writer: object) -> None:
    await run_source(app, writer)
    whole = await app.fork_workflow("src", 7, workflow_id="whole")  # everything copied
    assert await whole.get_result(timeout_seconds=30) == "done"
    assert await app.get_all_events("whole") == {"first": 10, "later": 2}


async def check_early_fork(app: asyncflow.AsyncFlow, source_id: str,
                           first: int | None = 1) -> None:
    """A fork of ``source_id`` from the recv (operation 2): "first" = 1 and "a" come before it;
    "b", "later", "first" = 10 and the close come after it, so the fork does them again once
    sent "go". ``first``: what the fork has of "first" before that."""
    early = await app.fork_workflow(source_id, 2, workflow_id="early")
    assert await app.get_all_events("early") == ({} if first is None else {"first": first})
    assert await app.get_event("early", "later", timeout_seconds=0) is None
    await app.send("early", None, "go")
    assert await early.get_result(timeout_seconds=30) == "done"
    assert [v async for v in app.read_stream("early", "s")] == ["a", "b"]
    assert await app.get_all_events("early") == {"first": 10, "later": 2}


async def test_a_fork_of_a_fork_copies_only_what_came_before_its_step(make_app):
    app = make_app()
    writer = define_writer(app, in_steps=False)
    async with app:
        await fork_of_a_fork(app, writer)
        await check_early_fork(app, "whole")


async def test_events_and_closes_staged_by_steps_name_their_step(make_app, conn):
    app = make_app()
    writer = define_writer(app, in_steps=True)
    async with app:
        await fork_of_a_fork(app, writer)
        rows = await conn.fetch("SELECT workflow_id, key, writer_fid FROM asyncflow.events "
                                "ORDER BY workflow_id, key")
        assert [tuple(r) for r in rows] == [("src", "first", 5), ("src", "later", 4),
                                             ("whole", "first", 5), ("whole", "later", 4)]
        heads = await conn.fetch("SELECT workflow_id, closed, closed_by "
                                 "FROM asyncflow.stream_heads ORDER BY workflow_id")
        assert [tuple(r) for r in heads] == [("src", True, 6), ("whole", True, 6)]
        # "first" = 1 was set by a step (not journaled), then set again after the fork's
        # step: that value is kept nowhere, so the fork starts without "first".
        await check_early_fork(app, "whole", first=None)


async def test_an_imported_workflow_forks_by_its_rows_writers(make_app, other_db_url,
                                                                tmp_path):
    source = make_app()
    writer = define_writer(source, in_steps=False)
    async with source:
        await run_source(source, writer)
        await source.export_workflows(["src"], tmp_path / "src.jsonl")
    target = asyncflow.AsyncFlow(database_url=other_db_url)
    define_writer(target, in_steps=False)
    async with target:
        # One transaction writes every row of an imported workflow.
        assert (await target.import_workflows(tmp_path / "src.jsonl")).imported == ["src"]
        await check_early_fork(target, "src")


async def test_rows_from_before_the_migration_are_told_by_their_transaction(make_app, conn):
    """Rows that name no writer (written before migration 19) are copied when the transaction
    that last wrote them also wrote a journal entry before the fork's step."""
    app = make_app()
    writer = define_writer(app, in_steps=False)
    async with app:
        await run_source(app, writer)
        # As schema version 18 left them: no writer named, and each row last written by the
        # transaction of its operation's journal entry (rewritten here together).
        for table, match, function_id in (
                ("events", "writer_fid = NULL WHERE key = 'first'", 5),
                ("events", "writer_fid = NULL WHERE key = 'later'", 4),
                ("stream_heads", "closed_by = NULL WHERE key = 's'", 6)):
            async with conn.transaction():
                await conn.execute(f"UPDATE asyncflow.{table} SET {match}")
                await conn.execute("UPDATE asyncflow.operations SET completed = completed "
                                   "WHERE workflow_id = 'src' AND function_id = $1",
                                   function_id)
        assert await conn.fetchval(
            "SELECT count(*) FROM asyncflow.events WHERE writer_fid IS NOT NULL") == 0
        late = await app.fork_workflow("src", 7, workflow_id="late")  # all of it
        assert await late.get_result(timeout_seconds=30) == "done"
        assert await app.get_all_events("late") == {"first": 10, "later": 2}
        assert [v async for v in app.read_stream("late", "s")] == ["a", "b"]
        await check_early_fork(app, "src")


async def test_an_event_set_again_later_is_copied_as_its_text_was_written(make_app, conn):
    """The value from the journal is the text the set_event wrote (never re-encoded: the order
    of a dict's keys, a float's digits and every character stay), also under a key that needs
    escaping in JSON."""
    app = make_app()
    value = {"zeta": 1.0, "alpha": ["é", 'q"uote\\', 1e-7], "mid": None}
    key = 'k"é\\y'

    @app.workflow()
    async def setter() -> None:
        await asyncflow.set_event(key, value)           # 0
        await asyncflow.recv("go", timeout_seconds=300)  # 1
        await asyncflow.set_event(key, "later")         # 2

    async with app:
        source = await app.start_workflow(setter, workflow_id="src")
        assert await app.get_event("src", key, timeout_seconds=30) == value
        written = await conn.fetchval(
            "SELECT value FROM asyncflow.events WHERE workflow_id = 'src'")
        await app.send("src", None, "go")
        await source.get_result(timeout_seconds=30)
        await app.fork_workflow("src", 1, workflow_id="early")
        copied = await app.get_event("early", key, timeout_seconds=0)
        assert copied == value and list(copied) == ["zeta", "alpha", "mid"]
        assert await conn.fetchval(
            "SELECT value FROM asyncflow.events WHERE workflow_id = 'early'") == written
