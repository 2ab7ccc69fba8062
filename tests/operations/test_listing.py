"""list_workflows: filters, and keyset pages that never skip or repeat a workflow."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

import asyncflow

STATUSES = ["SUCCESS", "ERROR", "CANCELLED", "PENDING", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]
BASE = datetime(2025, 1, 1, tzinfo=UTC)

INSERT = """
INSERT INTO asyncflow.workflows (workflow_id, name, status, inputs, app_version,
                                 parent_workflow_id, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[])"""


async def insert(conn, rows: list[tuple]) -> None:
    """Rows (id, name, status, app_version, parent, created_at) inserted directly: listing
    only reads them."""
    columns = list(zip(*rows, strict=True))
    await conn.execute(INSERT, columns[0], columns[1], columns[2], ["{}"] * len(rows),
                       columns[3], columns[4], columns[5])


def row(n: int, **overrides) -> tuple:
    """A row; every third shares its created_at with the next two (ties in the order)."""
    values = {
        "id": f"w-{n:05d}", "name": f"name-{n % 3}", "status": STATUSES[n % 5],
        "version": f"v{n % 2}", "parent": f"w-{n - 1:05d}" if n % 7 == 0 else None,
        "created": BASE + timedelta(seconds=n // 3),
    }
    values.update(overrides)
    return (values["id"], values["name"], values["status"], values["version"],
            values["parent"], values["created"])


def expected_order(rows: list[tuple]) -> list[str]:
    """created_at descending, then id ascending (ids here compare alike in any collation)."""
    return [r[0] for r in sorted(rows, key=lambda r: (-r[5].timestamp(), r[0]))]


async def walk(core, page_size: int, **filters) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await core.list_workflows(limit=page_size, after=after, **filters)
        seen.extend(w.workflow_id for w in page)
        if len(page) < page_size:
            return seen
        after = page[-1]


async def test_filters_select_exactly_their_rows(make_app, conn):
    rows = [row(n) for n in range(300)]
    await insert(conn, rows)
    app = make_app()
    async with app:
        cases = [
            ({}, lambda r: True),
            ({"status": "ERROR"}, lambda r: r[2] == "ERROR"),
            ({"status": ["ERROR", asyncflow.CANCELLED]}, lambda r: r[2] in ("ERROR", "CANCELLED")),
            ({"status": {"PENDING"}}, lambda r: r[2] == "PENDING"),
            ({"name": "name-1"}, lambda r: r[1] == "name-1"),
            ({"app_version": "v0"}, lambda r: r[3] == "v0"),
            ({"workflow_id_prefix": "w-001"}, lambda r: r[0].startswith("w-001")),
            ({"parent_workflow_id": "w-00006"}, lambda r: r[4] == "w-00006"),
            ({"created_after": BASE + timedelta(seconds=10)},
             lambda r: r[5] >= BASE + timedelta(seconds=10)),
            ({"created_before": BASE + timedelta(seconds=10)},
             lambda r: r[5] < BASE + timedelta(seconds=10)),
            ({"created_after": BASE + timedelta(seconds=20),
              "created_before": BASE + timedelta(seconds=40), "status": ["SUCCESS", "PENDING"],
              "name": "name-2", "app_version": "v1"},
             lambda r: (BASE + timedelta(seconds=20) <= r[5] < BASE + timedelta(seconds=40)
                        and r[2] in ("SUCCESS", "PENDING") and r[1] == "name-2"
                        and r[3] == "v1")),
        ]
        for filters, keep in cases:
            wanted = expected_order([r for r in rows if keep(r)])
            assert wanted or filters == {"parent_workflow_id": "w-00006"}, filters
            listed = [w.workflow_id for w in await app.list_workflows(limit=1000, **filters)]
            assert listed == wanted, filters
            assert await walk(app, 7, **filters) == wanted, filters
        assert await app.list_workflows(limit=0) == []
        # The original positional signature still works.
        wanted = expected_order([r for r in rows if r[2] == "ERROR" and r[1] == "name-0"])
        assert [w.workflow_id for w in await app.list_workflows("ERROR", "name-0", 2)] == (
            wanted[:2])


async def test_every_form_of_cursor_continues_the_same_place(make_app, conn, db_url):
    rows = [row(n) for n in range(30)]
    await insert(conn, rows)
    order = expected_order(rows)
    app = make_app()
    async with app, asyncflow.Client(db_url) as client:
        first = await app.list_workflows(limit=10)
        last = first[-1]
        for after in (last, last.cursor, (last.created_at, last.workflow_id)):
            page = await client.list_workflows(limit=10, after=after)
            assert [w.workflow_id for w in page] == order[10:20]
        # A cursor of another time zone names the same instant.
        moved = (last.created_at.astimezone(timezone_plus(5)), last.workflow_id)
        assert [w.workflow_id for w in await app.list_workflows(limit=3, after=moved)] == (
            order[10:13])
        for bad in ("nonsense", "eyJ4IjoxfQ", 42, ("x", "y"), (last.created_at, ""),
                    (last.created_at.replace(tzinfo=None), "w"), (None, "w")):
            with pytest.raises(asyncflow.InvalidArgumentError):
                await app.list_workflows(after=bad)
        for bad_filters in ({"status": "BOGUS"}, {"status": []}, {"status": 3},
                            {"created_after": "2025-01-01"},
                            {"created_before": datetime(2025, 1, 1)}, {"limit": -1},
                            {"parent_workflow_id": ""}, {"name": "a\x00b"}):
            with pytest.raises(asyncflow.InvalidArgumentError):
                await app.list_workflows(**bad_filters)


def timezone_plus(hours: int):
    from datetime import timezone

    return timezone(timedelta(hours=hours))


async def test_pages_never_skip_or_repeat_while_rows_are_inserted(make_app, conn, db_url):
    """Rows inserted while paging land anywhere in the order (also at the very timestamps of
    the page boundaries): every row that existed before the walk is listed exactly once, the
    order never goes back, and no row appears twice."""
    rows = [row(n) for n in range(1200)]
    await insert(conn, rows)
    rng = random.Random(14)
    app = make_app()
    stop = asyncio.Event()

    async def insert_meanwhile() -> int:
        count = 0
        while not stop.is_set():
            batch = [row(10_000 + count + i, created=BASE + timedelta(
                seconds=rng.randrange(0, 400))) for i in range(5)]
            await insert(conn, batch)
            count += 5
        return count

    async with app:
        writer = asyncio.ensure_future(insert_meanwhile())
        for filters in ({}, {"status": ["SUCCESS", "ERROR"]}, {"name": "name-2"}):
            seen: list = []
            after = None
            while True:
                page = await app.list_workflows(limit=13, after=after, **filters)
                seen.extend((w.created_at, w.workflow_id) for w in page)
                if len(page) < 13:
                    break
                after = page[-1]
            ids = [workflow_id for _, workflow_id in seen]
            assert len(ids) == len(set(ids)), filters  # nothing twice
            keys = [(-created.timestamp(), workflow_id) for created, workflow_id in seen]
            assert keys == sorted(keys), filters  # the order never goes back
            existing = {r[0] for r in rows if (
                ("status" not in filters or r[2] in filters["status"])
                and ("name" not in filters or r[1] == filters["name"]))}
            assert existing <= set(ids), filters  # nothing that was there is skipped
        stop.set()
        assert await writer > 0


async def test_children_and_real_workflows_list_newest_first(make_app):
    app = make_app()

    @app.workflow(name="kid")
    async def kid(n: int) -> int:
        return n

    @app.workflow(name="parent")
    async def parent() -> int:
        handles = [await asyncflow.start_workflow(kid, n) for n in range(12)]
        return sum([await h.get_result() for h in handles])

    async with app:
        assert await (await app.start_workflow(parent, workflow_id="p")).get_result(10) == 66
        kids = await walk(app, 5, parent_workflow_id="p")
        assert kids == [f"p-{n}" for n in reversed(range(12))]
        assert await walk(app, 5, parent_workflow_id="p", status="ERROR") == []
        started = await app.list_workflows(limit=100)
        assert [w.workflow_id for w in started][-1] == "p"
        assert all(w.app_version == app.app_version for w in started)
        assert [w.workflow_id for w in await app.list_workflows(
            app_version=app.app_version, name="parent")] == ["p"]
