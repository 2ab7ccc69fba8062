"""asyncflow.patched / deprecate_patch: a code change under running workflows, across a
SIGKILL and a relaunch on the new code, and the same histories replayed."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest
from conftest import ROOT

import asyncflow

spec = importlib.util.spec_from_file_location("patch_worker",
                                              ROOT / "tests" / "procs" / "patch_worker.py")
assert spec is not None and spec.loader is not None
patch_worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(patch_worker)

MARKER = "asyncflow.patched:fast-path"


async def journal(conn, workflow_id: str) -> list[str]:
    rows = await conn.fetch("select name from asyncflow.operations where workflow_id = $1 "
                            "order by function_id", workflow_id)
    return [r["name"] for r in rows]


async def test_old_runs_keep_their_path_and_new_runs_take_the_patch(db_url, conn, procs):
    await conn.execute("create table patch_effects (workflow_id text, step text)")
    # The old code starts a run, which waits for "go"; the process is killed.
    old = await procs("patch_worker.py", db_url, "exec-p", "old", "start", "wf-old")
    await old.expect("BLOCKED")
    old.kill()
    await old.wait()
    # The new code is deployed: it recovers the old run and starts a new one; killed again.
    new = await procs("patch_worker.py", db_url, "exec-p", "new", "start", "wf-new")
    await new.expect("BLOCKED")
    new.kill()
    await new.wait()
    assert await journal(conn, "wf-old") == ["step_a", "asyncflow.recv"]
    assert await journal(conn, "wf-new") == ["step_a", MARKER, "step_new", "asyncflow.recv"]
    # Relaunched on the new code: the marker replays (True), the old run still has none.
    serve = await procs("patch_worker.py", db_url, "exec-p", "new", "serve")
    await serve.expect("READY")
    async with asyncflow.Client(db_url) as client:
        for workflow_id in ("wf-old", "wf-new"):
            await client.send(workflow_id, workflow_id, topic="go")
        results = {w: await (await client.retrieve_workflow(w)).get_result(timeout_seconds=30)
                   for w in ("wf-old", "wf-new")}
    assert results == {
        "wf-old": {"path": "old", "a": "a", "go": "wf-old", "b": "b"},
        "wf-new": {"path": "new", "a": "a", "go": "wf-new", "b": "b"},
    }
    effects = Counter((r["workflow_id"], r["step"]) for r in await conn.fetch(
        "select workflow_id, step from patch_effects"))
    assert effects == Counter({("wf-old", "a"): 1, ("wf-old", "b"): 1, ("wf-new", "a"): 1,
                               ("wf-new", "new"): 1, ("wf-new", "b"): 1})
    assert await journal(conn, "wf-old") == ["step_a", "asyncflow.recv", "step_b"]

    # The finished histories, replayed against each version of the code.
    async def replay(variant: str) -> dict[str, asyncflow.ReplayResult]:
        app = patch_worker.build(db_url, variant)
        async with asyncflow.Client(db_url) as client:
            return {r.workflow_id: r for r in await app.replay(client=client)}

    now = await replay("new")
    assert {w: r.outcome for w, r in now.items()} == {"wf-old": "ok", "wf-new": "ok"}
    before = await replay("old")  # rolling back would break the runs that took the patch
    assert before["wf-old"].outcome == "ok"
    error = before["wf-new"].error
    assert before["wf-new"].outcome == "diverged"
    assert (error.function_id, error.recorded_name, error.called_name) == (
        1, MARKER, "asyncflow.recv")
    retired = await replay("deprecated")  # only once no old run is left
    assert retired["wf-new"].outcome == "ok"
    assert retired["wf-old"].outcome == "diverged"
    assert retired["wf-old"].error.function_id == 1


async def test_patched_is_recorded_once_and_checked(make_app, conn):
    app = make_app(app_version="v1")
    seen = []

    @app.step(name="one")
    async def one() -> int:
        return 1

    @app.workflow(name="twice")
    async def twice() -> list:
        first = await asyncflow.patched("x")
        again = await asyncflow.patched("x")  # a second point of the same change: recorded too
        await one()
        seen.append((first, again))
        return [first, again]

    async with app:
        assert await (await app.start_workflow(twice, workflow_id="t")).get_result() == [
            True, True]
        with pytest.raises(asyncflow.NotInWorkflowError):
            await asyncflow.patched("x")
        with pytest.raises(asyncflow.NotInWorkflowError):
            asyncflow.deprecate_patch("x")
        [result] = await app.replay(["t"])
    assert result.outcome == "ok"
    assert await journal(conn, "t") == ["asyncflow.patched:x", "asyncflow.patched:x", "one"]

    bad = make_app(app_version="v2")

    @bad.workflow(name="bad")
    async def bad_flow() -> None:
        await asyncflow.patched("")

    async with bad:
        with pytest.raises(asyncflow.InvalidArgumentError, match="change_id"):
            await (await bad.start_workflow(bad_flow)).get_result()
