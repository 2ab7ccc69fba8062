"""``list_pages``: ``list_workflows`` pages deep inside a big table (1,000,000 workflows).

The rows are made by one ``INSERT … SELECT generate_series`` (no workflow runs): 90% SUCCESS,
5% ERROR, 3% CANCELLED, 2% PENDING, ten names, a child every 50 rows, created over 30 days with
three workflows per timestamp (ties in the keyset order). Then, after ``VACUUM ANALYZE``, pages
of 100 are timed through the public API with ``after=`` a cursor in the middle of the table:

- ``page``: statuses ERROR and CANCELLED, created in the last 15 days (the target: ≤ 5 ms);
- ``unfiltered``: no filter at all;
- ``name``: one name and one status;
- ``walk``: ten consecutive pages, each after the last of the one before;
- ``attr_rare`` / ``attr_common``: by an attribute 100 workflows have (``customer``, every
  workflow but one in five has one of 10,000) and by one 40% have (``tier``: ``paid``).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import asyncflow

from ..model import Figure, latency_figures
from ..stats import median, to_ms
from ._base import Context, Measured, make_app, observer

FILL = """
INSERT INTO asyncflow.workflows (workflow_id, name, status, inputs, app_version,
                                 parent_workflow_id, created_at, updated_at, completed_at,
                                 attributes)
SELECT 'wf-' || lpad(g::text, 8, '0'),
       'bench.list.' || (g % 10),
       s.status,
       '{"args":[],"kwargs":{}}',
       'bench',
       CASE WHEN g % 50 = 0 THEN 'wf-' || lpad((g - 1)::text, 8, '0') END,
       t.ts, t.ts,
       CASE WHEN s.status <> 'PENDING' THEN t.ts + interval '1 second' END,
       CASE WHEN g % 5 = 0 THEN '{ }'::jsonb
            ELSE jsonb_build_object('customer', 'c-' || (g % 10000),
                                    'tier', CASE WHEN g % 2 = 0 THEN 'paid' ELSE 'free' END)
       END
FROM generate_series(1, $1::int) AS g
CROSS JOIN LATERAL (
    SELECT now() - make_interval(secs => (($1::int - g) / 3) * 7.776 * 1000000 / $1::int) AS ts
) t
CROSS JOIN LATERAL (
    SELECT CASE WHEN g % 100 < 90 THEN 'SUCCESS' WHEN g % 100 < 95 THEN 'ERROR'
                WHEN g % 100 < 98 THEN 'CANCELLED' ELSE 'PENDING' END AS status
) s"""

# A place in the middle of the table (by list order): the cursor the timed pages start after.
MIDDLE = """
SELECT created_at, workflow_id FROM asyncflow.workflows
WHERE workflow_id = 'wf-' || lpad(($1::int / 2)::text, 8, '0')"""

REPEATS = 200


async def _time_pages(app: asyncflow.AsyncFlow, repeats: int, **query: Any) -> list[float]:
    durations: list[float] = []
    for _ in range(repeats):
        before = time.perf_counter()
        page = await app.list_workflows(limit=100, **query)
        durations.append(time.perf_counter() - before)
        assert page, query
    return durations


async def run(ctx: Context) -> Measured:
    rows = ctx.sizes.list_rows
    app = make_app(ctx.url)
    async with app:  # migrates the schema
        pass
    conn = await observer(ctx.url)
    try:
        started = time.perf_counter()
        await conn.execute(FILL, rows)
        filled = time.perf_counter() - started
        ctx.note(f"{rows:,} workflow rows inserted in {filled:.1f} s")
        await conn.execute("VACUUM ANALYZE asyncflow.workflows")
        await conn.execute("VACUUM ANALYZE asyncflow.workflow_attributes")
        middle = await conn.fetchrow(MIDDLE, rows)
        assert middle is not None
    finally:
        await conn.close()
    cursor = (middle["created_at"], middle["workflow_id"])
    since = middle["created_at"] - timedelta(days=15)
    repeats = min(REPEATS, max(20, rows // 100))
    async with app:
        await _time_pages(app, 10, after=cursor)  # warm the statement cache
        page = await _time_pages(app, repeats, status=["ERROR", "CANCELLED"],
                                 created_after=since, after=cursor)
        unfiltered = await _time_pages(app, repeats, after=cursor)
        named = await _time_pages(app, repeats, status="ERROR", name="bench.list.3",
                                  after=cursor)
        rare = await _time_pages(app, repeats, attributes={"customer": "c-42"}, after=cursor)
        common = await _time_pages(app, repeats, attributes={"tier": "paid"}, after=cursor)
        walk: list[float] = []
        after: Any = cursor
        for _ in range(10):
            before = time.perf_counter()
            listed = await app.list_workflows(status=["ERROR", "CANCELLED"], after=after,
                                              limit=100)
            walk.append(time.perf_counter() - before)
            if len(listed) < 100:
                break
            after = listed[-1]
    ctx.note(f"filtered page p50 {median(to_ms(page)):.2f} ms over {repeats} pages")
    figures = latency_figures("page", "filtered page (100) after=", page, None, None)
    figures += [
        Figure("unfiltered_p50_ms", "unfiltered page p50", median(to_ms(unfiltered)), "ms"),
        Figure("name_p50_ms", "name + status page p50", median(to_ms(named)), "ms"),
        Figure("walk_p50_ms", "10 pages walked, p50", median(to_ms(walk)), "ms"),
        Figure("attr_rare_p50_ms", "attribute page (100 have it) p50", median(to_ms(rare)),
               "ms"),
        Figure("attr_common_p50_ms", "attribute page (40% have it) p50",
               median(to_ms(common)), "ms"),
        Figure("fill_s", f"insert {rows:,} rows", filled, "s"),
    ]
    return figures, {"rows": rows, "page_size": 100, "pages_timed": repeats}
