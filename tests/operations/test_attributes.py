"""Workflow attributes: set in a workflow (journaled), from outside, at start; listing by them
(issue 26)."""

from __future__ import annotations

import orjson
import pytest

import asyncflow


async def test_attributes_set_listed_and_journaled(make_app, conn):
    app = make_app()
    order_seen: list[str] = []

    @app.step()
    async def charge(order: str) -> str:
        order_seen.append(order)
        return order

    @app.workflow()
    async def order(order_id: str, customer: str) -> str:
        await asyncflow.set_attributes({"customer": customer, "stage": "charging"})
        await charge(order_id)
        await asyncflow.set_attributes({"stage": "done"})
        return order_id

    async with app:
        for n in range(5):
            await (await app.start_workflow(order, f"o{n}", f"c-{n % 2}", workflow_id=f"o{n}",
                                            attributes={"region": "eu"})).get_result()
        found = await app.list_workflows(attributes={"customer": "c-1"})
        assert [w.workflow_id for w in found] == ["o3", "o1"]
        assert found[0].attributes == {"region": "eu", "customer": "c-1", "stage": "done"}
        # Paging by the keyset, and the other filters with it.
        page = await app.list_workflows(attributes={"customer": "c-0"}, limit=2)
        assert [w.workflow_id for w in page] == ["o4", "o2"]
        rest = await app.list_workflows(attributes={"customer": "c-0"}, limit=2, after=page[-1])
        assert [w.workflow_id for w in rest] == ["o0"]
        assert await app.list_workflows(attributes={"customer": "c-0"},
                                        status=asyncflow.ERROR) == []
        assert [w.workflow_id for w in await app.list_workflows(
            attributes={"customer": "c-0", "stage": "done"}, workflow_id_prefix="o2")] == ["o2"]
        # The writes are journaled: entries in the journal, and replay does not set them again.
        steps = await app.list_workflow_operations("o0")
        assert steps[0].name == "asyncflow.set_attributes"
        assert steps[0].output == {"customer": "c-0", "stage": "charging"}
        (replayed,) = await app.replay(workflow_ids=["o0"])
        assert replayed.outcome == "ok", replayed
        # From outside: merged, or replaced.
        assert await app.set_workflow_attributes("o0", {"vip": True}) == {
            "region": "eu", "customer": "c-0", "stage": "done", "vip": True}
        assert await app.set_workflow_attributes("o0", {"x": [1, {"y": None}]},
                                                 merge=False) == {"x": [1, {"y": None}]}
        assert [w.workflow_id for w in await app.list_workflows(attributes={"x": [1]})] == [
            "o0"]
        # Replaced: the walk of the attribute index no longer finds it by what it had.
        assert [w.workflow_id for w in await app.list_workflows(
            attributes={"customer": "c-0"})] == ["o4", "o2"]
        assert await conn.fetchval(
            "select count(*) from asyncflow.workflow_attributes where workflow_id = 'o0'") == 0
        with pytest.raises(asyncflow.WorkflowNotFoundError):
            await app.set_workflow_attributes("nope", {"a": 1})


async def test_bad_attributes_fail_at_the_call_and_write_nothing(make_app, conn):
    app = make_app()

    @app.workflow()
    async def wf() -> str:
        try:
            asyncflow.set_attributes({"when": object()})
        except asyncflow.InvalidArgumentError as exc:
            return str(exc)
        return "accepted"

    with pytest.raises(asyncflow.NotInWorkflowError):
        asyncflow.set_attributes({"a": 1})
    async with app:
        assert "not a JSON value" in await wf()
        with pytest.raises(asyncflow.InvalidArgumentError, match="dict"):
            await app.start_workflow(wf, workflow_id="w", attributes=["a"])  # type: ignore
        with pytest.raises(asyncflow.InvalidArgumentError, match="keys"):
            await app.start_workflow(wf, workflow_id="w", attributes={1: "a"})
        with pytest.raises(asyncflow.InvalidArgumentError, match="JSON"):
            await app.start_workflow(wf, workflow_id="w", attributes={"f": float("nan")})
        with pytest.raises(asyncflow.InvalidArgumentError):
            await app.set_workflow_attributes("w", {"a": {1, 2}})
        with pytest.raises(asyncflow.InvalidArgumentError):
            await app.set_workflow_attributes("w", {"a": 1}, merge="yes")  # type: ignore
        with pytest.raises(asyncflow.InvalidArgumentError, match="at least one"):
            await app.list_workflows(attributes={})
        assert await conn.fetchval(
            "select count(*) from asyncflow.workflows where workflow_id = 'w'") == 0


async def test_cli_lists_by_attributes_and_shows_them(make_app, db_url):
    from clilib import cli, cli_json

    app = make_app()

    @app.workflow(name="job")
    async def job(n: int) -> int:
        await asyncflow.set_attributes({"n": n})
        return n

    async with app:
        for n in range(3):
            await (await app.start_workflow(job, n, workflow_id=f"job-{n}",
                                            attributes={"customer": f"c-{n % 2}"})).get_result()
        listed = await cli_json(db_url, "workflow", "list", "--attr", "customer=c-0")
        assert [w["workflow_id"] for w in listed] == ["job-2", "job-0"]
        assert listed[0]["attributes"] == {"customer": "c-0", "n": 2}
        listed = await cli_json(db_url, "workflow", "list", "--attr", "customer=c-0",
                                "--attr", "n:=0")
        assert [w["workflow_id"] for w in listed] == ["job-0"]
        assert await cli_json(db_url, "workflow", "list", "--attr", "n=0") == []  # a string
        code, out, err = await cli(db_url, "workflow", "get", "job-1")
        assert code == 0, err
        shown = next(line for line in out.splitlines() if line.startswith("attributes"))
        assert orjson.loads(shown.split(None, 1)[1]) == {"customer": "c-1", "n": 1}
        for bad in ("customer", "n:=nope", "=x"):
            code, out, err = await cli(db_url, "workflow", "list", "--attr", bad)
            assert code == 2 and out == "" and "attr" in err, (bad, err)


async def test_dashboard_filters_by_attributes_and_shows_runs(make_app):
    import re

    import httpx

    from asyncflow._dashboard import dashboard

    app = make_app()

    @app.workflow(name="sub")
    async def sub(month: int) -> int:
        await asyncflow.set_attributes({"month": month})
        if month < 2:
            await asyncflow.continue_as_new(month + 1)
        return month

    async with app:
        for n in range(2):
            await (await app.start_workflow(sub, 0, workflow_id=f"sub-{n}",
                                            attributes={"customer": f"c-{n}"})).get_result()
        transport = httpx.ASGITransport(app=dashboard(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://d.test") as http:
            page = (await http.get("/", params={"attr": "customer=c-1, month:=2"})).text
            assert re.findall(r'<tr data-workflow-id="([^"]*)"', page) == ["sub-1"]
            assert 'name="attr" value="customer=c-1, month:=2"' in page
            # The earlier runs kept have the attributes they had then.
            page = (await http.get("/", params={"attr": "month:=1"})).text
            assert re.findall(r'<tr data-workflow-id="([^"]*)"', page) == ["sub-1~3", "sub-0~3"]
            bad = (await http.get("/", params={"attr": "customer"})).text
            assert "not an attribute" in bad
            page = (await http.get("/workflow", params={"id": "sub-1"})).text
            assert "<dt>Run</dt><dd>3</dd>" in page
            assert 'href="/?attr=customer%3Dc-1"' in page and "month:=2" in page
            page = (await http.get("/workflow", params={"id": "sub-1~1"})).text
            assert 'data-status="CONTINUED_AS_NEW"' in page
            kinds = re.findall(r'<tr class="op op-(\w+) state-(\w+)"', page)
            assert kinds == [("set_attributes", "done"), ("continue_as_new", "done")]
            op = page[page.index('<tr class="op op-continue_as_new'):]
            op = op[:op.index("</tr>")]
            assert "continue as new" in op and "args" in op, op
            assert 'continued as new: <a class="wid" href="/workflow?id=sub-1"' in page
