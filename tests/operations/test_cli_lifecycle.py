"""The ``asyncflow`` commands that operate on many workflows: list filters and pages, cancel and
resume by filter, delete, gc."""

from __future__ import annotations

import asyncio

import pytest
from clilib import cli, cli_json

import asyncflow

pytestmark = pytest.mark.slow  # every test runs the command in subprocesses


async def test_list_filters_and_pages(make_app, db_url):
    app = make_app()

    @app.workflow(name="fast")
    async def fast(n: int) -> int:
        return n

    @app.workflow(name="parked")
    async def parked() -> None:
        await asyncflow.recv(timeout_seconds=3600)

    async with app:
        for n in range(5):
            await (await app.start_workflow(fast, n, workflow_id=f"fast-{n}")).get_result(10)
        await app.start_workflow(parked, workflow_id="parked-0")

        listed = await cli_json(db_url, "workflow", "list", "--status", "success,pending",
                                "--name", "fast", "--limit", "2")
        assert [w["workflow_id"] for w in listed] == ["fast-4", "fast-3"]
        rest = await cli_json(db_url, "workflow", "list", "--name", "fast",
                              "--after", listed[-1]["cursor"])
        assert [w["workflow_id"] for w in rest] == ["fast-2", "fast-1", "fast-0"]
        code, out, err = await cli(db_url, "workflow", "list", "--prefix", "fast-", "--limit",
                                   "2")
        assert code == 0, err
        assert out.splitlines()[-1].startswith("(more may follow: --after ")
        cursor = out.splitlines()[-1].split("--after ")[1].rstrip(")")
        code, out, err = await cli(db_url, "workflow", "list", "--prefix", "fast-", "--after",
                                   cursor, "--created-after", "1h", "--created-before",
                                   "2999-01-01")
        assert code == 0, err
        assert [line.split()[0] for line in out.splitlines()[1:]] == [
            "fast-2", "fast-1", "fast-0"]
        assert await cli_json(db_url, "workflow", "list", "--created-before", "1h") == []
        assert [w["workflow_id"] for w in await cli_json(
            db_url, "workflow", "list", "--status", "PENDING", "--app-version",
            app.app_version)] == ["parked-0"]
        for args in (["--created-after", "yesterday"], ["--status", "done"],
                     ["--after", "not-a-cursor"]):
            code, out, err = await cli(db_url, "workflow", "list", *args)
            assert code in (1, 2) and out == "" and "error" in err, args


async def test_cancel_resume_and_delete_by_id_and_by_filter(make_app, db_url):
    app = make_app()

    @app.workflow(name="leaf")
    async def leaf() -> str:
        return await asyncflow.recv(timeout_seconds=3600)

    @app.workflow(name="parent")
    async def parent() -> str:
        return await (await asyncflow.start_workflow(leaf)).get_result()

    async with app:
        for n in range(3):
            await app.start_workflow(parent, workflow_id=f"p{n}")
        await app._waits.wait_for_count(6)

        code, out, err = await cli(db_url, "workflow", "cancel")
        assert code == 2 and "at least one filter" in err
        code, out, err = await cli(db_url, "workflow", "cancel", "p0", "--name", "parent")
        assert code == 2 and "not both" in err
        assert await cli_json(db_url, "workflow", "cancel", "p0", "--no-children") == {
            "workflow_id": "p0", "status": "CANCELLED", "changed": True}
        assert (await app.get_workflow_status("p0-0")).status == "PENDING"
        cancelled = await cli_json(db_url, "workflow", "cancel", "--name", "parent")
        assert sorted(cancelled["cancelled"]) == ["p1", "p1-0", "p2", "p2-0"]
        code, out, err = await cli(db_url, "workflow", "cancel", "--parent", "p0")
        assert code == 0 and out.splitlines() == ["cancelled 1 workflow", "  p0-0"], out

        code, out, err = await cli(db_url, "workflow", "delete", "p1")
        assert code == 0 and out.splitlines() == ["deleted 1 workflow", "  p1"], err
        assert await cli_json(db_url, "workflow", "delete", "p2", "--children") == {
            "deleted": ["p2", "p2-0"]}

        resumed = await cli_json(db_url, "workflow", "resume", "--status", "cancelled",
                                 "--prefix", "p0")
        assert sorted(resumed["resumed"]) == ["p0", "p0-0"]
        await app.send("p0-0", "back")
        assert await (await app.retrieve_workflow("p0")).get_result(30) == "back"
        code, out, err = await cli(db_url, "workflow", "delete", "p0")
        assert code == 0, err
        await app.start_workflow(leaf, workflow_id="lonely")
        code, out, err = await cli(db_url, "workflow", "delete", "lonely")
        assert code == 1 and "PENDING" in err and "cancel it first" in err
        # The command to run, not the Python call.
        assert "`asyncflow workflow cancel lonely`" in err and "cancel_workflow" not in err
        await app.start_workflow(parent, workflow_id="p9")
        await app._waits.wait_for_count(3)  # lonely, p9 and its child
        await app.cancel_workflow("p9", children=False)
        code, out, err = await cli(db_url, "workflow", "delete", "p9", "--children")
        assert code == 1 and "PENDING descendant p9-0" in err, err
        assert "`asyncflow workflow cancel p9`" in err and "cancel_workflow" not in err


async def test_resume_of_a_workflow_that_succeeded_fails(make_app, db_url):
    app = make_app()

    @app.workflow()
    async def done() -> int:
        return 1

    async with app:
        await (await app.start_workflow(done, workflow_id="ok-1")).get_result()
    code, out, err = await cli(db_url, "workflow", "resume", "ok-1")
    assert code == 1 and out == "" and "succeeded" in err and "workflow fork ok-1" in err, err
    code, out, err = await cli(db_url, "--json", "workflow", "resume", "ok-1")
    assert code == 1 and out == "", err


async def test_gc(make_app, db_url):
    app = make_app()

    @app.workflow()
    async def fast(n: int) -> int:
        return n

    async with app:
        for n in range(4):
            await (await app.start_workflow(fast, n, workflow_id=f"g-{n}")).get_result(10)
    code, out, err = await cli(db_url, "gc")
    assert code == 2 and "--older-than" in err
    assert await cli_json(db_url, "gc", "--older-than", "1h") == {
        "deleted": 0, "would_delete": None, "dry_run": False}
    code, out, err = await cli(db_url, "gc", "--keep", "1", "--dry-run")
    assert code == 0 and out.strip() == "would delete 3 finished workflows (dry run: nothing "\
        "deleted)", err
    code, out, err = await cli(db_url, "gc", "--keep", "1", "--batch-size", "2")
    assert (code, out.strip()) == (0, "deleted 3 finished workflows"), err
    assert await cli_json(db_url, "gc", "--older-than", "0s") == {
        "deleted": 1, "would_delete": None, "dry_run": False}
    results = await asyncio.gather(*(cli(db_url, "gc", *args) for args in (
        ["--older-than", "soon"], ["--keep", "-1"], ["--keep", "1", "--batch-size", "0"])))
    for code, out, err in results:
        assert code == 2 and out == "" and "error" in err


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("12h", 43200),
                                          ("7d", 604800), ("2w", 1209600), ("2.5", 2.5)])
def test_durations(text, seconds):
    from asyncflow._cli.lifecycle import duration

    assert duration(text) == seconds
