"""History replay: recorded workflows run against the code registered now, without effects.

Each test records histories with one app (the "deployed" code), then replays them with another
app object that registers the same workflow names with changed code, as a deploy would.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest
from clilib import run_cli
from conftest import ROOT, python_env

import asyncflow

TABLES = ("workflows", "operations", "events", "streams", "stream_heads", "messages",
          "message_keys")


async def snapshot(conn) -> dict[str, list]:
    """Every row of every asyncflow table (to check that a replay wrote nothing)."""
    found = {}
    for table in TABLES:
        rows = await conn.fetch(f"select * from asyncflow.{table}")
        found[table] = sorted(tuple(r.values()) for r in rows)
    return found


def define_order_app(db_url, *, reordered=False, changed_result=False, extra_step=False,
                     dropped_step=False):
    """An app with the workflows the tests record; the flags change the code like a deploy."""
    app = asyncflow.AsyncFlow(db_url, app_version="v-" + "".join(
        str(int(f)) for f in (reordered, changed_result, extra_step, dropped_step)))
    calls: list[str] = []

    @app.step(name="reserve")
    async def reserve(item: str) -> str:
        calls.append("reserve")
        return f"reserved {item}"

    @app.step(name="charge")
    async def charge(amount: int) -> int:
        calls.append("charge")
        return amount * 100

    @app.step(name="notify")
    async def notify(text: str) -> str:
        calls.append("notify")
        return text

    @app.step(name="fail")
    async def fail(text: str) -> None:
        calls.append("fail")
        raise ValueError(text)

    @app.transaction(name="ledger")
    async def ledger(amount: int) -> int:
        calls.append("ledger")
        await asyncflow.connection().execute("select 1")
        return amount

    @app.workflow(name="child")
    async def child(n: int) -> int:
        return (await charge(n)) + 1

    @app.workflow(name="order")
    async def order(item: str, amount: int) -> dict:
        if reordered:
            cents = await charge(amount)
            reserved = await reserve(item)
        else:
            reserved = await reserve(item)
            cents = await charge(amount)
        await asyncflow.set_event("stage", "charged")
        await asyncflow.write_stream("log", reserved)
        await asyncflow.close_stream("log")
        await asyncflow.sleep(0.01)
        kid = await child(amount)
        booked = await ledger(amount)
        message = await asyncflow.recv("go", timeout_seconds=30)
        if not dropped_step:
            await notify("done")
        if extra_step:
            await notify("again")
        total = cents + kid + booked + (1 if changed_result else 0)
        return {"reserved": reserved, "total": total, "message": message}

    @app.workflow(name="broken")
    async def broken(text: str) -> None:
        await reserve(text)
        try:
            await fail(text)
        except ValueError:
            pass
        await fail(text + "!")

    app.calls = calls  # type: ignore[attr-defined]
    app.flows = {"order": order, "broken": broken}  # type: ignore[attr-defined]
    return app


async def record_histories(db_url) -> tuple[str, str]:
    """Run one `order` (with a child) and one failing `broken` workflow to the end."""
    app = define_order_app(db_url)
    async with app:
        handle = await app.start_workflow(app.flows["order"], "book", 3, workflow_id="order-1")
        await app.send("order-1", {"ok": True}, topic="go")
        assert (await handle.get_result())["total"] == 300 + 301 + 3
        broken = await app.start_workflow(app.flows["broken"], "x", workflow_id="broken-1")
        with pytest.raises(ValueError, match="x!"):
            await broken.get_result()
    return "order-1", "broken-1"


async def replay_with(db_url, app, **kwargs):
    async with asyncflow.Client(db_url) as client:
        return {r.workflow_id: r for r in await app.replay(client=client, **kwargs)}


async def test_unchanged_code_replays_ok_and_writes_nothing(db_url, conn):
    await record_histories(db_url)
    before = await snapshot(conn)
    app = define_order_app(db_url)
    results = await replay_with(db_url, app)
    assert set(results) == {"order-1", "order-1-6", "broken-1"}  # the child too
    for result in results.values():
        assert result.outcome == "ok", result
        assert result.ok and result.error is None
        assert "same result" in result.detail
    assert results["order-1"].operations == 10
    assert app.calls == []  # no step, transaction or child ran
    assert await snapshot(conn) == before


async def test_a_reordered_step_diverges_at_its_operation(db_url, conn):
    await record_histories(db_url)
    before = await snapshot(conn)
    app = define_order_app(db_url, reordered=True)
    results = await replay_with(db_url, app, workflow_ids=["order-1", "broken-1"])
    assert list(results) == ["order-1", "broken-1"]
    diverged = results["order-1"]
    assert diverged.outcome == "diverged" and not diverged.ok
    error = diverged.error
    assert isinstance(error, asyncflow.NonDeterministicWorkflowError)
    assert (error.function_id, error.recorded_name, error.called_name) == (0, "reserve",
                                                                             "charge")
    assert "order-1" in diverged.detail and "'charge'" in diverged.detail
    assert results["broken-1"].outcome == "ok"
    assert app.calls == []
    assert await snapshot(conn) == before


async def test_a_changed_result_an_added_and_a_dropped_step_diverge(db_url):
    await record_histories(db_url)
    changed = (await replay_with(db_url, define_order_app(db_url, changed_result=True),
                                 workflow_ids=["order-1"]))["order-1"]
    assert changed.outcome == "diverged"
    assert changed.error.function_id is None
    assert "took the recorded path but returned" in changed.detail
    added = (await replay_with(db_url, define_order_app(db_url, extra_step=True),
                               workflow_ids=["order-1"]))["order-1"]
    assert added.outcome == "diverged"
    assert (added.error.function_id, added.error.recorded_name, added.error.called_name) == (
        10, None, "notify")
    assert "past the end of its recorded history" in added.detail
    dropped = (await replay_with(db_url, define_order_app(db_url, dropped_step=True),
                                 workflow_ids=["order-1"]))["order-1"]
    assert dropped.outcome == "diverged"
    assert (dropped.error.function_id, dropped.error.recorded_name,
            dropped.error.called_name) == (9, "notify", None)


async def test_replay_of_an_exported_file_needs_no_database(db_url, tmp_path):
    await record_histories(db_url)
    exporter = asyncflow.Client(db_url)
    async with exporter:
        exported = await exporter.export_workflows(["order-1"], tmp_path / "h.jsonl")
    assert exported == ["order-1", "order-1-6"]  # the child came along
    # Never launched, and pointed at a database that does not exist: nothing is connected.
    unchanged = define_order_app("postgresql://127.0.0.1:1/nothing")
    results = await unchanged.replay(file=tmp_path / "h.jsonl")
    assert [(r.workflow_id, r.outcome) for r in results] == [("order-1", "ok"),
                                                             ("order-1-6", "ok")]
    results = await unchanged.replay(file=tmp_path / "h.jsonl", workflow_id_prefix="order-1-")
    assert [r.workflow_id for r in results] == ["order-1-6"]
    reordered = define_order_app("postgresql://127.0.0.1:1/nothing", reordered=True)
    text = io.StringIO((tmp_path / "h.jsonl").read_text())  # a file object works too
    results = await reordered.replay(["order-1"], file=text)
    assert [(r.workflow_id, r.outcome) for r in results] == [("order-1", "diverged")]


async def test_replay_refuses_the_database_and_stops_where_the_history_stops(make_app, conn):
    app = make_app(app_version="v1")
    touched = []

    @app.step()
    async def one() -> int:
        return 1

    @app.workflow(name="peeks")
    async def peeks() -> int:
        await one()
        # Not journaled: in a replay this would reach the database, and is refused.
        touched.append(len(await app.list_workflows()))
        return 1

    @app.workflow(name="waits")
    async def waits() -> object:
        await one()
        return await asyncflow.recv(timeout_seconds=600)

    async with app:
        assert await (await app.start_workflow(peeks, workflow_id="p")).get_result() == 1
        waiting = await app.start_workflow(waits, workflow_id="w")
        await app.runtime.waits.wait_for_count(1)
        await app.cancel_workflow("w")
        with pytest.raises(asyncflow.WorkflowCancelledError):
            await waiting.get_result()
        before = await snapshot(conn)
        results = {r.workflow_id: r for r in await app.replay(["p", "w"])}
        assert await snapshot(conn) == before
    assert touched == [1]  # the replay's call never got through
    assert results["p"].outcome == "failed"
    assert isinstance(results["p"].error, asyncflow.ReplayError)
    assert "connection" in results["p"].detail
    # A cancelled run's history ends in its open recv: the replay stops there, and is ok.
    assert results["w"].outcome == "ok"
    assert "still waiting in operation #1" in results["w"].detail


async def test_replay_filters_and_unknown_workflows(db_url):
    await record_histories(db_url)
    app = define_order_app(db_url)
    results = await replay_with(db_url, app, name="broken")
    assert list(results) == ["broken-1"]
    results = await replay_with(db_url, app, status=["SUCCESS"], limit=1)
    assert len(results) == 1
    results = await replay_with(db_url, app, workflow_id_prefix="order-1-")
    assert list(results) == ["order-1-6"]
    results = await replay_with(db_url, app, parent_workflow_id="order-1")
    assert list(results) == ["order-1-6"]
    with pytest.raises(asyncflow.WorkflowNotFoundError):
        await replay_with(db_url, app, workflow_ids=["nope"])
    with pytest.raises(asyncflow.InvalidArgumentError):
        await replay_with(db_url, app, status="DONE")
    other = asyncflow.AsyncFlow(db_url)  # registers none of them
    results = await replay_with(db_url, other)
    assert {r.outcome for r in results.values()} == {"skipped"}
    assert all(r.ok for r in results.values())


async def test_a_replay_that_never_finishes_times_out(make_app):
    app = make_app(app_version="v1")
    block = [False]

    @app.workflow(name="stuck")
    async def stuck() -> int:
        if block[0]:
            await asyncio.Event().wait()  # waits on something no journal holds
        return 1

    async with app:
        assert await (await app.start_workflow(stuck, workflow_id="s")).get_result() == 1
        block[0] = True
        [result] = await app.replay(["s"], timeout_seconds=0.2)
    assert result.outcome == "failed"
    assert "did not finish replaying within 0.2 seconds" in result.detail


def write_app_module(directory: Path, reordered: bool) -> None:
    first, second = ("charge", "reserve") if reordered else ("reserve", "charge")
    (directory / "shop.py").write_text(f"""
import asyncflow

app = asyncflow.AsyncFlow()


@app.step()
async def reserve(item):
    return "reserved " + item


@app.step()
async def charge(amount):
    return amount * 100


@app.workflow(name="shop")
async def shop(item, amount):
    a = await {first}({'item' if first == 'reserve' else 'amount'})
    b = await {second}({'amount' if first == 'reserve' else 'item'})
    return [a, b] if {not reordered} else [b, a]


async def record():
    async with app:
        handle = await app.start_workflow(shop, "hat", 2, workflow_id="shop-1")
        return await handle.get_result()
""")


async def test_cli_replay_against_a_database_and_a_file(db_url, tmp_path):
    write_app_module(tmp_path, reordered=False)
    env = python_env()
    env["ASYNCFLOW_DATABASE_URL"] = db_url
    recorder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import asyncio, shop; print(asyncio.run(shop.record()))",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(recorder.communicate(), 60)
    assert recorder.returncode == 0 and "['reserved hat', 200]" in out.decode(), out.decode()

    code, out, err = await run_cli("replay", "--app", "shop:app", cwd=tmp_path, db_url=db_url)
    assert code == 0, err
    assert "replayed 1 workflows: 1 ok, 0 diverged, 0 failed, 0 skipped" in out
    code, out, err = await run_cli("workflow", "export", "shop-1", "-o", "h.jsonl",
                                   cwd=tmp_path, db_url=db_url)
    assert code == 0, err
    assert "exported 1 workflows to h.jsonl" in out

    write_app_module(tmp_path, reordered=True)  # the change under review
    code, out, err = await run_cli("--json", "replay", "--app", "shop", "--file", "h.jsonl",
                                   cwd=tmp_path)
    assert code == 1, err
    [result] = json.loads(out)
    assert result["outcome"] == "diverged"
    assert result["error"]["function_id"] == 0
    assert (result["error"]["recorded_name"], result["error"]["called_name"]) == (
        "reserve", "charge")
    code, out, err = await run_cli("replay", "--app", "shop", cwd=tmp_path, db_url=db_url)
    assert code == 1 and "1 diverged" in out
    code, out, err = await run_cli("replay", "--app", "nothing_here", "--file", "h.jsonl",
                                   cwd=tmp_path)
    assert code == 2 and "cannot import 'nothing_here'" in err


async def test_a_bad_export_file_is_refused_by_line(tmp_path):
    app = asyncflow.AsyncFlow("postgresql://127.0.0.1:1/nothing")
    with pytest.raises(asyncflow.ExportFormatError, match="line 1: not an asyncflow export"):
        await app.replay(file=io.StringIO('{"type": "workflow"}\n'))
    header = '{"type":"header","format":"asyncflow-export","version":1}\n'
    with pytest.raises(asyncflow.ExportFormatError, match="line 2: not JSON"):
        await app.replay(file=io.StringIO(header + "{oops\n"))
    with pytest.raises(asyncflow.ExportFormatError, match="line 2: a operation row must"):
        await app.replay(file=io.StringIO(header + json.dumps({"type": "operation", "row": {
            "workflow_id": "a", "function_id": 0, "name": "x", "completed": True,
            "created_at": "2024-01-01T00:00:00+00:00"}}) + "\n"))
    with pytest.raises(asyncflow.ExportFormatError, match="version 2 is newer"):
        await app.replay(file=io.StringIO(header.replace('"version":1', '"version":2')))
    assert ROOT.exists()


async def test_waits_events_messages_and_patches_replay(make_app, conn):
    app = make_app(app_version="v1")

    @app.workflow(name="peer")
    async def peer() -> object:
        await asyncflow.set_event("ready", {"n": 1})
        return await asyncflow.recv("ping", timeout_seconds=30)

    @app.workflow(name="talker")
    async def talker() -> list:
        first = await asyncflow.wait_first(asyncflow.message("a"), asyncflow.timer(30))
        ready = await asyncflow.get_event("peer", "ready", timeout_seconds=30)
        await asyncflow.send("peer", "ping!", topic="ping")
        await app.send("peer", "again", topic="ping", idempotency_key="k")
        nothing = await asyncflow.recv("never", timeout_seconds=0)
        timer = await asyncflow.wait_first(asyncflow.message("b"), asyncflow.timer(0))
        new = await asyncflow.patched("p")
        done = await asyncflow.wait_first(asyncflow.result("peer"))
        return [first.index, first.value, ready, nothing, timer.index, new, done.value]

    async with app:
        await app.start_workflow(peer, workflow_id="peer")
        handle = await app.start_workflow(talker, workflow_id="talker")
        await app.send("talker", "hello", topic="a")
        assert await handle.get_result() == [0, "hello", {"n": 1}, None, 1, True, "ping!"]
        before = await snapshot(conn)
        results = {r.workflow_id: r for r in await app.replay()}
        assert await snapshot(conn) == before
    assert {w: r.outcome for w, r in results.items()} == {"peer": "ok", "talker": "ok"}
    assert results["talker"].operations == 8


async def test_a_workflow_awaiting_a_child_it_enqueued_replays(db_url, conn):
    """A queued child enqueued from a workflow replays from the journal: the enqueue returns the
    recorded child and its result is the recorded outcome (found by the torture test: the
    enqueue went outside the replay, to the app's database, and the replay failed)."""
    app = asyncflow.AsyncFlow(db_url, app_version="q-replay")
    queue = app.queue("replay-q", concurrency=1)

    @app.workflow(name="queued-child")
    async def queued_child(n: int) -> int:
        return n * 2

    @app.workflow(name="enqueuer")
    async def enqueuer(n: int) -> int:
        handle = await queue.enqueue(queued_child, n)
        return await handle.get_result() + 1

    async with app:
        handle = await app.start_workflow(enqueuer, 20, workflow_id="enq")
        assert await handle.get_result(timeout_seconds=30) == 41
        before = await snapshot(conn)
        reports = await app.replay(["enq"])
        assert [(r.workflow_id, r.outcome) for r in reports] == [("enq", "ok")], reports
        assert await snapshot(conn) == before
        buffer = io.StringIO()
        await app.export_workflows(["enq"], buffer)
    buffer.seek(0)
    offline = await app.replay(file=buffer)  # from an export: no database at all
    assert {r.workflow_id: r.outcome for r in offline} == {"enq": "ok", "enq-0": "ok"}, offline


async def test_sends_and_event_reads_of_missing_workflows_replay_their_error(db_url, conn):
    """A workflow's send to, and get_event of, a workflow that does not exist raise
    WorkflowNotFoundError, and the journal records it: a recovery (after the workflow was
    created meanwhile) and app.replay raise it again. (Found by the torture test: the send was
    not journaled and the get_event's entry stayed open, so a recovery sent the message or
    waited for the event this time, and app.replay reported a divergence.)"""

    def build() -> tuple[asyncflow.AsyncFlow, object]:
        app = asyncflow.AsyncFlow(db_url, executor_id="missing-ids", app_version="m")

        @app.workflow(name="target")
        async def target() -> None:
            await asyncflow.recv("never", timeout_seconds=3600)

        @app.workflow(name="asker")
        async def asker() -> list:
            seen = []
            try:
                seen.append(await asyncflow.get_event("late", "k", timeout_seconds=5))
            except asyncflow.WorkflowNotFoundError:
                seen.append("no event source")
            try:
                await asyncflow.send("late", "hello", "t")
                seen.append("sent")
            except asyncflow.WorkflowNotFoundError:
                seen.append("no destination")
            await asyncflow.set_event("asked", True)
            seen.append(await asyncflow.recv("go", timeout_seconds=60))
            return seen

        return app, (target, asker)

    first, (target, asker) = build()
    async with first:
        await first.start_workflow(asker, workflow_id="asker")
        assert await first.get_event("asker", "asked", timeout_seconds=30)
        await first.start_workflow(target, workflow_id="late")
    # Relaunched now that 'late' exists: the recovery replays both errors from the journal.
    second, _workflows = build()
    async with second:
        await second.send("asker", "go", "go")
        handle = await second.retrieve_workflow("asker")
        assert await handle.get_result(timeout_seconds=30) == [
            "no event source", "no destination", "go"]
        assert await conn.fetchval("select count(*) from asyncflow.messages "
                                   "where destination_id = 'late'") == 0
        reports = await second.replay(["asker"])
        assert [(r.workflow_id, r.outcome) for r in reports] == [("asker", "ok")], reports
