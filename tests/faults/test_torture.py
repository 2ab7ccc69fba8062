"""The invariant torture test's CI profile (tests/torture.py; docs/operations.md, "Torture
test"): one fixed seed of random operations with faults, in three real worker processes and a
Client, every invariant checked. Also: the checks catch planted violations, and the shrinker
finds the operations a failure needs."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import torture_checks
import torture_features
from torture import CI_OPS, CI_SEED, run_ops, shrink
from torture_harness import Harness
from torture_ops import generate


@pytest.mark.slow  # about 20 s: three worker processes, 160 operations with faults
async def test_torture_fixed_seed(server_url):
    """The CI profile: seed CI_SEED, CI_OPS operations (at most about 90 s)."""
    ops = generate(CI_SEED, CI_OPS)
    violations, output = await run_ops(server_url, ops)
    assert not violations, (
        f"seed {CI_SEED}: " + "\n".join(map(str, violations)) + "\n" + output[-4000:]
        + "\nreproduce and shrink: python tests/torture.py --seed "
        f"{CI_SEED} --ops {CI_OPS}")


async def test_the_checks_catch_planted_violations(server_url):
    """A step body run twice with no kill, fault or cancel to explain it, a transaction body
    committed twice, and a queue limit exceeded are each reported."""
    harness = Harness(server_url)
    try:
        await harness.setup()
        await harness.operation(0, {"op": "start", "worker": 0, "wid": "r0", "timeout": None,
                                    "prog": [["step", "a0"], ["tx", "a1"]]})
        assert harness.client is not None and harness.conn is not None
        handle = await harness.client.retrieve_workflow("r0")
        assert await handle.get_result(timeout_seconds=30) == ["a0", "a1"]
        await torture_checks.final(harness)
        assert harness.violations == []
        for kind, tag in (("step", "a0"), ("tx", "a1")):
            await harness.conn.execute(
                "insert into torture_effects (workflow_id, tag, kind, pid, ok) "
                "values ('r0', $1, $2, 1, true)", tag, kind)
        await harness.conn.execute(
            "insert into torture_excess values (clock_timestamp(), 'q-conc', 'concurrency', "
            "3, 'x')")
        await torture_checks.final(harness)
        found = [(v.invariant, v.detail.split(" ")[0]) for v in harness.violations]
        assert ("queue-limit", "q-conc") in found
        assert ("effects", "effect") in found
        assert ("effects", "transaction") in found
    finally:
        await harness.teardown()


async def test_the_feature_checks_catch_planted_violations(server_url):
    """Two calls of a burst 0.2 s apart that got two workflows, a start before a delay's
    time, a color set but not found, a backfilled tick that never ran, and a chain whose run
    ran with other arguments are each reported."""
    harness = Harness(server_url)
    try:
        await harness.setup()
        await harness.operation(0, {"op": "start", "worker": 0, "wid": "r0", "timeout": None,
                                    "prog": [["step", "a0"]]})
        assert harness.client is not None and harness.conn is not None
        handle = await harness.client.retrieve_workflow("r0")
        await handle.get_result(timeout_seconds=30)
        await torture_features.check(harness)
        assert harness.violations == []
        now = await harness.now()
        rec = harness.rec
        rec.bursts["bx"] = [(0, 10.0, 10.1, "r0"), (1, 10.1, 10.2, "other")]
        await harness.conn.execute("insert into torture_starts values ('r0', $1)", now)
        rec.delays.append(("r0", now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)))
        rec.colors["r0"] = "red"
        rec.backfilled.add("rs0@2026-01-01T00:00:00+00:00")
        rec.chains.add("r0")
        await torture_features.check(harness)
        found = {v.invariant for v in harness.violations}
        assert found >= {"debounce", "delay", "attributes", "backfill", "chain"}, found
    finally:
        await harness.teardown()


async def test_the_shrinker_keeps_what_the_failure_needs():
    """Delta debugging over 40 operations where the failure needs two of them."""
    ops = [{"op": "pause", "n": n} for n in range(40)]
    needed = {7, 31}

    async def run(candidate):
        await asyncio.sleep(0)
        if needed <= {op["n"] for op in candidate}:
            return [type("V", (), {"invariant": "effects"})()]
        return []

    shrunk = await shrink("unused", list(ops), {"effects"}, 60, run=run)
    assert sorted(op["n"] for op in shrunk) == sorted(needed)


def test_generation_is_seeded():
    assert generate(5, 30) == generate(5, 30)
    assert generate(5, 30) != generate(6, 30)
    kinds = {op["op"] for seed in range(20) for op in generate(seed, 60)}
    assert kinds >= {"start", "enqueue", "send", "get_event", "read_stream", "cancel",
                     "resume", "fork", "delete", "retention", "export_import", "trigger",
                     "kill", "restart", "terminate", "refuse", "pause", "chain",
                     "send_chain", "attrs", "debounce", "schedule", "delay", "typed"}
