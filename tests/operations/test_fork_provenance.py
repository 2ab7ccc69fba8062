"""A fork of a fork (a known defect, found by the torture test on 2026-12-07, seed 742495332).

``FORK_COPY`` copies a stream's closed flag, and the events, that operations before the fork's
step wrote, and tells them by the row's ``xmin``: the transaction of one of the copied journal
entries. In a workflow that is itself a fork, every row the first fork copied shares that fork's
one transaction, so a second fork from an earlier step takes the closed flag and every event of
the first, also those written by operations after its step. These tests fail until the rows say
which operation wrote them (a closing function id on the stream head, a writer on the event)."""

from __future__ import annotations

import pytest

import asyncflow

DEFECT = ("a fork of a fork copies every closed flag and event of the first fork: provenance "
          "by xmin cannot tell rows one fork copied together apart (issue 23's closing note)")


@pytest.mark.xfail(strict=True, raises=asyncflow.StreamClosedError, reason=DEFECT)
async def test_a_fork_of_a_fork_copies_a_close_only_from_before_its_step(make_app):
    app = make_app()

    @app.workflow()
    async def writer():
        await asyncflow.write_stream("s", "a")
        await asyncflow.write_stream("s", "b")
        await asyncflow.close_stream("s")
        return "done"

    async with app:
        source = await app.start_workflow(writer, workflow_id="src")
        assert await source.get_result(timeout_seconds=30) == "done"
        whole = await app.fork_workflow("src", 3, workflow_id="whole")  # everything copied
        assert await whole.get_result(timeout_seconds=30) == "done"
        # Only the first write is before operation 1: the close is not, so "b" is written.
        early = await app.fork_workflow("whole", 1, workflow_id="early")
        assert await early.get_result(timeout_seconds=30) == "done"
        assert [v async for v in app.read_stream("early", "s")] == ["a", "b"]


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=DEFECT)
async def test_a_fork_of_a_fork_copies_an_event_only_from_before_its_step(make_app):
    app = make_app()

    @app.workflow()
    async def setter():
        await asyncflow.set_event("first", 1)
        await asyncflow.recv("go", timeout_seconds=30)
        await asyncflow.set_event("later", 2)
        return "done"

    async with app:
        source = await app.start_workflow(setter, workflow_id="src")
        await app.send("src", None, "go")
        assert await source.get_result(timeout_seconds=30) == "done"
        whole = await app.fork_workflow("src", 3, workflow_id="whole")  # everything copied
        assert await whole.get_result(timeout_seconds=30) == "done"
        # From operation 1 on: "first" was set before it, "later" after it (not yet, here:
        # the fork waits in its recv).
        early = await app.fork_workflow("whole", 1, workflow_id="early")
        assert await app.get_event("early", "first") == 1
        assert await app.get_event("early", "later") is None
        await app.send("early", None, "go")
        assert await early.get_result(timeout_seconds=30) == "done"
