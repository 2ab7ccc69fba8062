"""Step options: ``timeout_seconds`` and ``should_retry``; and ``send_many``."""

from __future__ import annotations

import asyncio

import pytest

import asyncflow


async def test_a_step_attempt_past_its_timeout_is_cancelled_and_fails(make_app):
    app = make_app()
    cancelled = []

    @app.step(timeout_seconds=0.2)
    async def hangs() -> None:
        try:
            await asyncio.Event().wait()  # never set: only the timeout ends it
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    @app.workflow()
    async def wf() -> str:
        try:
            await hangs()
        except asyncflow.StepTimeoutError as exc:
            return f"caught: {exc}"
        return "not reached"

    @app.workflow()
    async def uncaught() -> None:
        await hangs()

    async with app:
        result = await (await app.start_workflow(wf, workflow_id="t")).get_result(10)
        assert result.startswith("caught: an attempt of step") and "timeout_seconds=0.2" in result
        assert cancelled == [True]
        steps = await app.list_workflow_steps("t")
        assert steps[0].error is not None and "StepTimeoutError" in steps[0].error
        # The recorded failure is rebuilt with its type (a TimeoutError, an AsyncFlowError).
        with pytest.raises(asyncflow.StepTimeoutError) as info:
            await (await app.start_workflow(uncaught, workflow_id="u")).get_result(10)
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, asyncflow.AsyncFlowTimeoutError)


async def test_a_timed_out_attempt_is_retried_like_any_failure(make_app):
    app = make_app()
    attempts = []

    @app.step(timeout_seconds=0.2, retries=2, retry_interval_seconds=0.01)
    async def slow_then_fast() -> int:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            await asyncio.Event().wait()
        return len(attempts)

    @app.step(timeout_seconds=5, retries=1, retry_interval_seconds=0.01)
    async def own_timeout() -> None:
        raise TimeoutError("the service timed out")  # the body's own: not a step timeout

    @app.workflow()
    async def wf() -> list:
        first = await slow_then_fast()
        try:
            await own_timeout()
        except asyncflow.StepTimeoutError:
            return ["wrong type"]
        except TimeoutError as exc:
            return [first, str(exc)]
        return ["not reached"]

    async with app:
        assert await wf() == [2, "the service timed out"]
        assert attempts == [0, 1]


async def test_should_retry_decides_which_failures_are_retried(make_app):
    app = make_app()
    calls: dict[str, int] = {"transient": 0, "permanent": 0, "predicate": 0}

    def retry_transient(exc: Exception) -> bool:
        return isinstance(exc, ConnectionError)

    @app.step(retries=3, retry_interval_seconds=0.01, should_retry=retry_transient)
    async def transient() -> str:
        calls["transient"] += 1
        if calls["transient"] < 3:
            raise ConnectionError("try again")
        return "ok"

    @app.step(retries=3, retry_interval_seconds=0.01, should_retry=retry_transient)
    async def permanent() -> None:
        calls["permanent"] += 1
        raise ValueError("bad input: retrying will not help")

    def broken_predicate(exc: Exception) -> bool:
        raise RuntimeError(f"predicate failed on {type(exc).__name__}")

    @app.step(retries=3, retry_interval_seconds=0.01, should_retry=broken_predicate)
    async def judged() -> None:
        calls["predicate"] += 1
        raise KeyError("k")

    @app.workflow()
    async def wf() -> list:
        out: list = [await transient()]
        for step in (permanent, judged):
            try:
                await step()
            except Exception as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        return out

    async with app:
        assert await (await app.start_workflow(wf, workflow_id="w")).get_result(10) == [
            "ok", "ValueError: bad input: retrying will not help",
            "RuntimeError: predicate failed on KeyError"]
        assert calls == {"transient": 3, "permanent": 1, "predicate": 1}
        errors = [s.error for s in await app.list_workflow_steps("w")]
        assert errors[1].endswith("ValueError: bad input: retrying will not help")
        assert errors[2].endswith("RuntimeError: predicate failed on KeyError")


async def test_step_options_are_checked_at_decoration(make_app):
    app = make_app()
    for bad in ({"timeout_seconds": 0}, {"timeout_seconds": -1},
                {"timeout_seconds": float("nan")}, {"timeout_seconds": "1"},
                {"should_retry": True}, {"should_retry": "yes"}):
        with pytest.raises(asyncflow.InvalidArgumentError):
            app.step(**bad)


async def test_send_many_reports_each_destination(make_app, conn):
    app = make_app()

    @app.workflow()
    async def inbox() -> list:
        return [await asyncflow.recv(topic, timeout_seconds=60) for topic in (None, "t")]

    @app.workflow()
    async def broadcaster(targets: list[str]) -> list[bool]:
        return await app.send_many([(target, "from a workflow", "t") for target in targets])

    @app.step()
    async def in_a_step() -> None:
        await app.send_many([("a", 1)])

    @app.workflow()
    async def misuse() -> None:
        await in_a_step()

    async with app:
        a = await app.start_workflow(inbox, workflow_id="a")
        b = await app.start_workflow(inbox, workflow_id="b")
        sent = await app.send_many([("a", 1), ("nobody", 2), ("b", {"n": 2}, None),
                                    ["a", 3, "unused-topic", "key-1"],
                                    ("a", 4, "unused-topic", "key-1")])  # same key: once
        assert sent == [True, False, True, True, True]
        assert await app.send_many([]) == []
        outcome = await (await app.start_workflow(broadcaster, ["a", "ghost", "b"],
                                                  workflow_id="bc")).get_result(10)
        assert outcome == [True, False, True]
        assert await a.get_result(10) == [1, "from a workflow"]
        assert await b.get_result(10) == [{"n": 2}, "from a workflow"]
        assert await conn.fetchval("SELECT count(*) FROM asyncflow.messages WHERE "
                                   "topic = 'unused-topic'") == 1
        steps = await app.list_workflow_steps("bc")
        assert [(s.name, s.output) for s in steps] == [
            ("asyncflow.send_many", [True, False, True])]
        with pytest.raises(asyncflow.NotInWorkflowError, match="inside a step"):
            await (await app.start_workflow(misuse, workflow_id="m")).get_result(10)
        for bad in ("a", [("a",)], [(1, "x")], [("a", object())], [("a", 1, 2)], 5):
            with pytest.raises(asyncflow.AsyncFlowError):
                await app.send_many(bad)
        assert await conn.fetchval(
            "SELECT count(*) FROM asyncflow.messages WHERE destination_id = 'a'") == 1
