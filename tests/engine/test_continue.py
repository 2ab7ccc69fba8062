"""Endless workflows: ``asyncflow.continue_as_new`` (issue 26)."""

from __future__ import annotations

import time

import pytest

import asyncflow


async def test_continue_as_new_bounded_journal_and_kept_runs(make_app, conn):
    app = make_app()
    ran: list[int] = []

    @app.step()
    async def work(i: int) -> int:
        ran.append(i)
        return i

    @app.workflow()
    async def loop(i: int, total: int) -> int:
        for _ in range(3):
            if i == 9:
                return total
            total += await work(i)
            i += 1
        await asyncflow.continue_as_new(i, total)
        raise AssertionError("continue_as_new returned")

    async with app:
        handle = await app.start_workflow(loop, 0, 0, workflow_id="endless")
        assert await handle.get_result(timeout_seconds=20) == sum(range(9))
        assert ran == list(range(9))  # every step exactly once
        status = await handle.get_status()
        assert status.status == asyncflow.SUCCESS and status.run == 4
        runs = await app.list_workflow_runs("endless")
        assert [r.run for r in runs] == [3, 2, 1]
        assert all(r.status == asyncflow.CONTINUED_AS_NEW and r.run_of == "endless"
                   for r in runs)
        # Each kept run holds its own journal (3 steps and the continue); function ids go on.
        first = await app.list_workflow_operations(runs[-1].workflow_id)
        assert [s.name for s in first][-1] == "asyncflow.continue_as_new"
        assert [s.function_id for s in first] == [0, 1, 2, 3]
        assert first[-1].output == {"args": [3, 3], "kwargs": {}}
        second = await app.list_workflow_operations(runs[-2].workflow_id)
        assert [s.function_id for s in second] == [4, 5, 6, 7]
        # The current run's journal is bounded: nothing of the earlier runs is left on it (the
        # last run returned at once).
        assert await app.list_workflow_operations("endless") == []
        assert await conn.fetchval(
            "select count(*) from asyncflow.operations where workflow_id = 'endless'") == 0
        # The kept runs replay to the same end (history replay).
        results = await app.replay(workflow_ids=[r.workflow_id for r in runs] + ["endless"])
        assert [r.outcome for r in results] == ["ok"] * 4, results
        # Listed, and deleted by retention like any finished workflow.
        listed = await app.list_workflows(status=asyncflow.CONTINUED_AS_NEW)
        assert {r.workflow_id for r in listed} == {r.workflow_id for r in runs}
        deleted = await app.apply_retention(asyncflow.Retention(max_age_seconds=0))
        assert deleted >= 3
        assert await app.list_workflow_runs("endless") == []


async def test_dropped_runs_and_messages_carried_over(make_app, conn):
    app = make_app()

    @app.workflow(keep_runs=False)
    async def inbox(seen: list[str]) -> list[str]:
        message = await asyncflow.recv("in", timeout_seconds=10)
        seen = [*seen, message]
        if len(seen) == 3:
            return seen
        await asyncflow.continue_as_new(seen)
        raise AssertionError("unreachable")

    async with app:
        handle = await app.start_workflow(inbox, [], workflow_id="inbox")
        for text in ("a", "b", "c"):  # sent at once: two wait in the mailbox across continues
            await app.send("inbox", text, "in")
        assert await handle.get_result(timeout_seconds=20) == ["a", "b", "c"]
        assert await app.list_workflow_runs("inbox") == []
        assert await conn.fetchval(
            "select count(*) from asyncflow.workflows where run_of = 'inbox'") == 0
        assert (await handle.get_status()).run == 3


async def test_continue_as_new_outside_a_workflow_or_in_a_step_raises(make_app):
    app = make_app()
    with pytest.raises(asyncflow.NotInWorkflowError):
        asyncflow.continue_as_new(1)
    with pytest.raises(asyncflow.InvalidSettingError, match="keep_runs"):
        app.workflow(keep_runs="no")  # type: ignore[arg-type]

    @app.step()
    async def inner() -> str:
        try:
            asyncflow.continue_as_new(1)
        except asyncflow.NotInWorkflowError:
            return "refused"
        return "allowed"

    @app.workflow()
    async def outer(x: object) -> str:
        if x == "bad":
            try:
                asyncflow.continue_as_new(object())
            except asyncflow.SerializationError:
                pass
            else:
                return "unstorable arguments accepted"
            for args, kwargs in (((), {"y": 1}), ((1, 2), {}), ((), {})):
                try:
                    asyncflow.continue_as_new(*args, **kwargs)
                except asyncflow.InvalidArgumentError:
                    continue
                return f"{args} {kwargs} accepted"
            return "bad arguments refused"
        return await inner()

    async with app:
        assert await outer(1) == "refused"
        assert await outer("bad") == "bad arguments refused"


async def test_replay_time_stays_flat(make_app):
    """10,000 iterations continuing as new every 100: the journal of every run is bounded, and
    replaying (recovering) the last run costs what an early run's did."""
    app = make_app()

    @app.step()
    async def tick(i: int) -> int:
        return i

    @app.workflow(keep_runs=True)
    async def counter(i: int) -> int:
        stop = i + 100
        while i < stop:
            if i == 10_000:
                return i
            i = await tick(i) + 1
        await asyncflow.continue_as_new(i)
        raise AssertionError("unreachable")

    async with app:
        handle = await app.start_workflow(counter, 0, workflow_id="counter")
        assert await handle.get_result(timeout_seconds=300) == 10_000
        runs = await app.list_workflow_runs("counter")
        assert len(runs) == 100
        sizes = {len(await app.list_workflow_operations(r.workflow_id)) for r in runs[::10]}
        assert sizes == {101}  # 100 steps and the continue, in every run

        async def replay_seconds(workflow_id: str) -> float:
            began = time.perf_counter()
            (result,) = await app.replay(workflow_ids=[workflow_id])
            assert result.outcome == "ok", result
            return time.perf_counter() - began

        early = min([await replay_seconds(runs[-2].workflow_id) for _ in range(3)])
        late = min([await replay_seconds(runs[0].workflow_id) for _ in range(3)])
        assert late < early * 3 + 0.05, (early, late)


async def test_sigkill_at_the_hand_over_loses_nothing_and_runs_nothing_twice(
        db_url, conn, procs):
    """A worker killed just before a continue_as_new commits, then (relaunched) just after one
    committed, then relaunched to the end: every step body ran exactly once (side table), the
    result is whole, and every run is kept once."""
    await conn.execute("create table cont_runs (workflow_id text, i int)")
    first = await procs("continue_worker.py", db_url, "before", "2")
    await first.expect("KILL before 2")
    assert await first.wait() == -9
    second = await procs("continue_worker.py", db_url, "after", "2")
    await second.expect("KILL after 2")
    assert await second.wait() == -9
    # The first process died before its second hand-over: the relaunch replayed run 2 and
    # made that hand-over, then died right after the commit of run 3's.
    assert await conn.fetchval(
        "select run from asyncflow.workflows where workflow_id = 'endless'") == 4
    third = await procs("continue_worker.py", db_url, "none", "0")
    assert await third.expect("DONE") == f"DONE {sum(range(30))}"
    counts = await conn.fetch("select i, count(*) as n from cont_runs group by i order by i")
    assert [(row["i"], row["n"]) for row in counts] == [(i, 1) for i in range(30)]
    runs = await conn.fetch(
        "select run, (select count(*) from asyncflow.operations o "
        "where o.workflow_id = w.workflow_id) as ops from asyncflow.workflows w "
        "where run_of = 'endless' order by run")
    assert [(row["run"], row["ops"]) for row in runs] == [(run, 6) for run in range(1, 7)]
    assert await conn.fetchval(
        "select run from asyncflow.workflows where workflow_id = 'endless'") == 7


async def test_fork_of_a_later_run_replays_its_journal(make_app):
    app = make_app()
    ran: list[int] = []

    @app.step()
    async def work(i: int) -> int:
        ran.append(i)
        return i

    @app.workflow()
    async def loop(i: int) -> int:
        if i == 0:
            await asyncflow.set_attributes({"kind": "loop"})
            await asyncflow.continue_as_new(1)
        first = await work(i)
        second = await work(i + 1)
        return first + second

    async with app:
        handle = await app.start_workflow(loop, 0, workflow_id="looped")
        assert await handle.get_result(timeout_seconds=20) == 3
        steps = await app.list_workflow_operations("looped")
        assert [s.function_id for s in steps] == [2, 3]
        forked = await app.fork_workflow("looped", from_step=3, workflow_id="looped-fork")
        assert await forked.get_result(timeout_seconds=20) == 3
        assert ran == [1, 2, 2]  # the fork replayed step #2 and ran step #3 again
        assert (await forked.get_status()).attributes == {"kind": "loop"}


async def test_kept_runs_export_and_import_with_their_journals(make_app, tmp_path):
    app = make_app()

    @app.workflow()
    async def two_runs(n: int) -> int:
        await asyncflow.set_attributes({"n": n})
        if n == 0:
            await asyncflow.continue_as_new(1)
        return n

    async with app:
        handle = await app.start_workflow(two_runs, 0, workflow_id="two")
        assert await handle.get_result(timeout_seconds=20) == 1
        (kept,) = await app.list_workflow_runs("two")
        path = tmp_path / "runs.jsonl"
        await app.export_workflows(["two", kept.workflow_id], path)
        assert await app.delete_workflow("two") == ["two"]
        assert await app.delete_workflow(kept.workflow_id) == [kept.workflow_id]
        result = await app.import_workflows(path)
        assert sorted(result.imported) == sorted(["two", kept.workflow_id])
        (back,) = await app.list_workflow_runs("two")
        assert (back.run, back.attributes) == (1, {"n": 0})
        assert [s.name for s in await app.list_workflow_operations(back.workflow_id)] == [
            "asyncflow.set_attributes", "asyncflow.continue_as_new"]
        status = await app.get_workflow_status("two")
        assert (status.run, status.attributes) == (2, {"n": 1})
        # The imported attributes are indexed too.
        found = await app.list_workflows(attributes={"n": 0})
        assert [w.workflow_id for w in found] == [kept.workflow_id]


async def test_a_lost_reply_to_a_committed_hand_over_replays_nothing_stale(
        make_app, monkeypatch):
    """The hand-over commits but its reply is lost (the connection drops): the execution's retry
    finds the epoch moved on and stops, instead of replaying the old run's inputs on the new
    run's empty journal (which would run its steps again); the new run is then claimed again
    and finishes, every step body once."""
    from asyncflow._storage.runs import RunStatements

    original = RunStatements.continue_as_new
    lost = []

    async def commit_then_lose_the_reply(self, *args):
        done = await original(self, *args)
        if not lost:
            lost.append(done)
            raise asyncflow.DatabaseUnavailableError("connection lost after the commit")
        return done

    monkeypatch.setattr(RunStatements, "continue_as_new", commit_then_lose_the_reply)
    app = make_app()
    ran: list[int] = []

    @app.step()
    async def work(i: int) -> int:
        ran.append(i)
        return i

    @app.workflow()
    async def loop(i: int) -> int:
        await work(i)
        if i == 0:
            await asyncflow.continue_as_new(1)
        return i

    async with app:
        handle = await app.start_workflow(loop, 0, workflow_id="lost-reply")
        assert await handle.get_result(timeout_seconds=30) == 1
        assert lost and lost[0][0] is not None  # it had committed
        assert ran == [0, 1]


async def test_a_childs_kept_runs_are_not_held_by_its_running_parent(make_app):
    app = make_app()

    @app.workflow()
    async def child(n: int) -> int:
        if n == 0:
            await asyncflow.continue_as_new(1)
        return n

    @app.workflow()
    async def parent() -> int:
        value = await child(0)
        await asyncflow.set_event("child", value)
        await asyncflow.recv("stop", timeout_seconds=60)
        return value

    async with app:
        handle = await app.start_workflow(parent, workflow_id="parent")
        child_id = "parent-0"
        assert await app.get_event("parent", "child", timeout_seconds=20) == 1
        (kept,) = await app.list_workflow_runs(child_id)
        assert kept.parent_workflow_id is None and kept.run_of == child_id
        # Retention deletes the child's kept run while the parent still runs (the child itself
        # is kept: its parent may read its result).
        assert await app.apply_retention(asyncflow.Retention(max_age_seconds=0)) == 1
        assert await app.list_workflow_runs(child_id) == []
        await app.send("parent", "now", "stop")
        assert await handle.get_result(timeout_seconds=20) == 1


async def test_a_fork_of_a_kept_run_hands_over_again(make_app):
    """Met by the torture test: a fork of a kept run from one past its last operation copied
    the run's continue_as_new entry; the fork then ended that run without handing over (its
    row kept the run's arguments while the next run's operations were journaled in it), and
    its replay diverged. The fork may start at most at the continue_as_new, and performs it."""
    app = make_app()

    @app.workflow()
    async def counting(n: int) -> int:
        if n < 2:
            await asyncflow.continue_as_new(n + 1)
        return n

    async with app:
        handle = await app.start_workflow(counting, 0, workflow_id="counted")
        assert await handle.get_result(timeout_seconds=20) == 2
        first = (await app.list_workflow_runs("counted"))[-1].workflow_id
        last = max(s.function_id for s in await app.list_workflow_operations(first))
        with pytest.raises(asyncflow.InvalidArgumentError, match=f"at most {last}"):
            await app.fork_workflow(first, last + 1, workflow_id="counted-past")
        forked = await app.fork_workflow(first, last, workflow_id="counted-fork")
        assert await forked.get_result(timeout_seconds=20) == 2
        assert [r.workflow_id for r in await app.list_workflow_runs("counted-fork")] != []
        reports = await app.replay()
        assert {r.workflow_id: r.outcome for r in reports}["counted-fork"] == "ok"
