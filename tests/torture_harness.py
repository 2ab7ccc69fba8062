"""The torture test's driver: a fresh database, three real worker processes, a Client, the
operations of ``torture_ops`` interleaved with faults, then quiescence and the invariants of
``torture_checks``.

Faults are real: SIGKILL of a worker (restarted by a later ``restart``), ``pg_terminate_backend``
of asyncflow's own connections (found by ``application_name``: ``asyncflow:<executor>`` for
pools, ``asyncflow-listener:<executor>`` for listeners, ``asyncflow-client`` for the Client),
and ``ALTER DATABASE … ALLOW_CONNECTIONS false`` for a moment (existing connections stay; new
ones are refused).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import io
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import torture_checks
from faultlib import admin, with_database
from torture_ops import QUEUES, RUNTIME_SCHEDULES, SCHEDULE, STREAM, WORKERS, Op

import asyncflow

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "procs" / "torture_worker.py"
CALL_TIMEOUT = 60.0  # an operation taking longer is a wedge
QUIESCE_TIMEOUT = 120.0


@dataclass
class Violation:
    """One broken invariant: its name and what was seen."""

    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.detail}"


@dataclass
class Record:
    """What the driver did, with database times, for the invariants."""

    roots: list[str] = field(default_factory=list)
    kills: list[tuple[int, Any]] = field(default_factory=list)  # (pid, at)
    faults: list[tuple[str, Any]] = field(default_factory=list)  # (kind, at)
    cancels: list[tuple[str, bool, Any]] = field(default_factory=list)  # (id, children, at)
    resumed: set[str] = field(default_factory=set)
    timeouts: set[str] = field(default_factory=set)  # roots started with a timeout
    deleted: set[str] = field(default_factory=set)  # deleted by a delete operation
    forks: dict[str, tuple[str, int]] = field(default_factory=dict)  # fork -> (source, step)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (op index, error type)
    pids: set[int] = field(default_factory=set)
    chains: set[str] = field(default_factory=set)  # continue_as_new workflows started
    chain_sends: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)  # (value, ok)
    colors: dict[str, str | None] = field(default_factory=dict)  # None: outcome unknown
    # debounce bursts: key -> [(n, start, end, workflow id or None)], driver monotonic times
    bursts: dict[str, list[tuple[int, float, float, str | None]]] = field(default_factory=dict)
    together: set[str] = field(default_factory=set)  # bursts called concurrently
    backfilled: set[str] = field(default_factory=set)  # ids a backfill returned
    delays: list[tuple[str, Any, Any]] = field(default_factory=list)  # (id, called at, until)
    delayed: set[str] = field(default_factory=set)  # every id a delay op named
    typed: dict[str, int] = field(default_factory=dict)
    exported: set[str] = field(default_factory=set)  # re-imported by export_import


class Worker:
    """One worker process (tests/procs/torture_worker.py) and its command channel."""

    def __init__(self, url: str, executor_id: str) -> None:
        self.url = url
        self.executor_id = executor_id
        self.process: asyncio.subprocess.Process | None = None
        self.pid = 0
        self.lines: collections.deque[str] = collections.deque(maxlen=300)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._ready: asyncio.Future[int] | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), self.url, self.executor_id, orjson.dumps(QUEUES).decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env)
        self._ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(self.process, self._ready))
        async with asyncio.timeout(CALL_TIMEOUT):
            self.pid = await self._ready

    async def _read(self, process: asyncio.subprocess.Process,
                    ready: asyncio.Future[int]) -> None:
        assert process.stdout is not None
        while raw := await process.stdout.readline():
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("R "):
                _, n, body = line.split(" ", 2)
                future = self._waiting.pop(int(n), None)
                if future is not None and not future.done():
                    future.set_result(orjson.loads(body))
                continue
            self.lines.append(line)
            if line.startswith("READY ") and not ready.done():
                ready.set_result(int(line.split()[1]))
        if not ready.done():
            ready.set_exception(RuntimeError(
                f"worker {self.executor_id} exited before READY:\n" + "\n".join(self.lines)))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError(f"worker {self.executor_id} died"))
        self._waiting.clear()

    async def call(self, cmd: dict[str, Any], within: float = CALL_TIMEOUT) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        n = self._next = self._next + 1
        future = self._waiting[n] = asyncio.get_running_loop().create_future()
        self.process.stdin.write(f"{n} ".encode() + orjson.dumps(cmd) + b"\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(within):
            return await future

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader


class Harness:
    """One run: ``await Harness(admin_url).run(ops)`` returns the violations found."""

    def __init__(self, admin_url: str, *, log: Any = None) -> None:
        self.admin_url = admin_url
        self.name = f"torture_{uuid.uuid4().hex[:10]}"
        self.url = with_database(admin_url, self.name)
        self.workers: list[Worker] = []
        self.client: asyncflow.Client | None = None
        self.conn: asyncpg.Connection | None = None
        self.rec = Record()
        self.violations: list[Violation] = []
        self.known: list[str] = []  # known (reported) defects met, not failed
        self._refusals: list[asyncio.Task[None]] = []
        self._generation = 0
        self._log = log
        self.current = "setup"  # the operation last run (index and kind), or the phase

    def note(self, text: str) -> None:
        if self._log is not None:
            self._log(text)

    def violate(self, invariant: str, detail: str) -> None:
        detail = f"{detail} (after operation {self.current})"
        self.violations.append(Violation(invariant, detail))
        self.note(f"VIOLATION [{invariant}] {detail}")

    # -- setup and teardown -----------------------------------------------------------------

    async def setup(self) -> None:
        await admin(self.admin_url, f'CREATE DATABASE "{self.name}"')
        self.workers = [Worker(self.url, f"w{i}") for i in range(WORKERS)]
        await self.workers[0].start()  # migrates the schema
        await asyncio.gather(*(w.start() for w in self.workers[1:]))
        self.rec.pids.update(w.pid for w in self.workers)
        self.conn = await asyncpg.connect(
            self.url, server_settings={"application_name": "torture-admin"})
        for statement in torture_checks.side_tables(QUEUES):
            await self.conn.execute(statement)
        self.client = asyncflow.Client(self.url)
        await self.client.launch()

    async def teardown(self) -> None:
        for task in self._refusals:
            task.cancel()
        await asyncio.gather(*self._refusals, return_exceptions=True)
        for worker in self.workers:
            await worker.kill()
        if self.client is not None:
            try:
                await self.client.shutdown()
            except Exception:
                pass
        if self.conn is not None:
            await self.conn.close()
        await admin(self.admin_url, f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true',
                    f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    async def run(self, ops: list[Op]) -> list[Violation]:
        try:
            await self.setup()
            for index, op in enumerate(ops):
                await self.operation(index, op)
                await torture_checks.continuous(self)
                if self.violations:
                    break
            if not self.violations:
                await self.quiesce()
        finally:
            await self.teardown()
        return self.violations

    # -- operations -------------------------------------------------------------------------

    async def now(self) -> Any:
        assert self.conn is not None
        return await self.conn.fetchval("select clock_timestamp()")

    def live_worker(self, preferred: int) -> Worker | None:
        for k in range(WORKERS):
            worker = self.workers[(preferred + k) % WORKERS]
            if worker.alive:
                return worker
        return None

    async def resolve(self, target: list[Any]) -> str | None:
        kind, n = target
        if kind == "root":
            ids = self.rec.roots
        elif kind == "chain":
            ids = sorted(self.rec.chains)
        elif kind == "queued":
            assert self.conn is not None
            ids = [r[0] for r in await self.conn.fetch(
                "select workflow_id from asyncflow.workflows where status in "
                "('ENQUEUED', 'DELAYED') order by workflow_id")]
        else:
            assert self.conn is not None
            ids = [r[0] for r in await self.conn.fetch(
                "select workflow_id from asyncflow.workflows order by workflow_id")]
        return ids[n % len(ids)] if ids else None

    async def operation(self, index: int, op: Op) -> None:
        self.note(f"op {index}: {orjson.dumps(op).decode()[:200]}")
        self.current = f"{index} {op['op']}"
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await self._operation(index, op)
        except TimeoutError:
            self.violate("wedged", f"operation {index} {op['op']} took over {CALL_TIMEOUT}s")
        except asyncflow.AsyncFlowError as exc:
            self.rec.errors.append((index, type(exc).__name__))
        except Exception as exc:
            self.violate("error-type", f"operation {index} {op['op']} raised {exc!r}")

    async def _command(self, worker: Worker, cmd: dict[str, Any], index: int) -> Any:
        try:
            answer = await worker.call(cmd)
        except ConnectionError:
            return None  # the worker was killed meanwhile
        if "error" in answer:
            name, is_af, message = answer["error"]
            if not is_af:
                self.violate("error-type", f"operation {index} {cmd['op']} on "
                             f"{worker.executor_id} raised {name}: {message}")
            self.rec.errors.append((index, name))
            return None
        return answer["ok"]

    async def _operation(self, index: int, op: Op) -> None:
        kind = op["op"]
        client = self.client
        assert client is not None
        if op.get("timeout") is not None:
            self.rec.timeouts.add(op["wid"])
        if kind == "start":
            self.rec.roots.append(op["wid"])
            worker = self.live_worker(op["worker"])
            if worker is not None:
                await self._command(worker, {"op": "start", "wid": op["wid"], "prog": op["prog"],
                                             "timeout": op["timeout"]}, index)
        elif kind == "enqueue":
            self.rec.roots.append(op["wid"])
            worker = self.live_worker(op["worker"])
            if op["via"] == "worker" and worker is not None:
                await self._command(worker, {**op, "op": "enqueue"}, index)
            else:
                await client.enqueue(
                    op["queue"], "prog", op["prog"], workflow_id=op["wid"],
                    priority=op["priority"], deduplication_id=op["dedup"],
                    delay_seconds=op["delay"], partition_key=op["partition"],
                    timeout_seconds=op["timeout"])
        elif kind in ("chain", "typed"):
            self.rec.roots.append(op["wid"])
            if kind == "chain":
                self.rec.chains.add(op["wid"])
            else:
                self.rec.typed[op["wid"]] = op["n"]
            worker = self.live_worker(op["worker"])
            if worker is not None:
                await self._command(worker, op, index)
        elif kind == "debounce":
            await self._debounce(index, op)
        elif kind == "schedule":
            await self._schedule(op)
        elif kind == "fork":
            self.rec.roots.append(op["wid"])
            source = await self.resolve(op["target"])
            if source is not None:
                steps = await client.list_workflow_steps(source)
                last = max((s.function_id for s in steps), default=-1)
                step = op["step"] % (last + 2)
                handle = await client.fork_workflow(source, step, workflow_id=op["wid"])
                self.rec.forks.setdefault(handle.workflow_id, (source, step))
        elif kind in ("restart", "kill", "terminate", "refuse", "pause"):
            await self._fault(index, op)
        else:
            wid = await self.resolve(op["target"]) if "target" in op else None
            if "target" in op and wid is None:
                return
            assert wid is not None or "target" not in op
            await self._admin_op(index, op, wid)

    async def _admin_op(self, index: int, op: Op, wid: Any) -> None:
        kind = op["op"]
        client = self.client
        assert client is not None
        if kind == "send":
            for attempt in range(20):  # documented: retry an outside send with its key
                try:
                    await client.send(wid, op["value"], op["topic"], idempotency_key=op["key"])
                    return
                except asyncflow.DatabaseUnavailableError:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.2)
        elif kind == "send_chain":
            sends = self.rec.chain_sends.setdefault(wid, [])
            try:
                await client.send(wid, op["value"], "tc", idempotency_key=op["key"])
            except BaseException:
                sends.append((op["value"], False))
                raise
            sends.append((op["value"], True))
        elif kind == "attrs":
            self.rec.colors[wid] = None
            await client.set_workflow_attributes(wid, {"color": op["color"]},
                                                 merge=op["merge"])
            self.rec.colors[wid] = op["color"]
        elif kind == "delay":
            self.rec.delayed.add(wid)
            called = await self.now()
            until = await client.set_workflow_delay(wid, seconds=op["seconds"])
            self.rec.delays.append((wid, called, until))
        elif kind == "get_event":
            await client.get_event(wid, op["key"], timeout_seconds=0.2)
        elif kind == "read_stream":
            try:
                async with asyncio.timeout(0.5):
                    async for _value in client.read_stream(wid, STREAM):
                        pass
            except TimeoutError:
                pass
        elif kind == "cancel":
            await client.cancel_workflow(wid, children=op["children"])
            self.rec.cancels.append((wid, op["children"], await self.now()))
            if op["children"]:
                await torture_checks.cancelled_tree(self, wid, index)
        elif kind == "resume":
            self.rec.resumed.add(wid)
            await client.resume_workflow(wid)
        elif kind == "delete":
            self.rec.deleted.update(await client.delete_workflow(wid, children=op["children"]))
        elif kind == "retention":
            await client.apply_retention(asyncflow.Retention(
                max_age_seconds=op["max_age"], max_count=op["max_count"]))
        elif kind == "export_import":
            await self._export_import(index, wid)
        elif kind == "trigger":
            await client.trigger_schedule(SCHEDULE)

    async def _export_import(self, index: int, wid: str) -> None:
        client = self.client
        assert client is not None
        buffer = io.StringIO()
        exported = await client.export_workflows([wid], buffer)
        statuses = [line["row"]["status"] for line in map(orjson.loads, buffer.getvalue().split(
            "\n")[:-1]) if line.get("type") == "workflow"]
        if any(status in ("PENDING", "ENQUEUED", "DELAYED") for status in statuses):
            return  # (one may finish before the delete: the import would bring back the past)
        self.rec.exported.update(exported)
        try:
            deleted = await client.delete_workflow(wid, children=True)
        except asyncflow.WorkflowPendingError:
            return
        buffer.seek(0)
        result = await client.import_workflows(buffer)
        if set(result.imported) != set(exported) or set(deleted) != set(exported):
            self.violate("import-roundtrip", f"operation {index}: exported {sorted(exported)}, "
                         f"deleted {sorted(deleted)}, imported {sorted(result.imported)}, "
                         f"skipped {sorted(result.skipped)}")

    async def _debounce(self, index: int, op: Op) -> None:
        """Calls of one burst, one after another (on the workers named), each recorded with
        the driver's times around it and the workflow id it got."""
        calls = self.rec.bursts.setdefault(op["key"], [])

        async def call(n: int, w: int, gap: float) -> None:
            await asyncio.sleep(gap)
            worker = self.live_worker(w)
            if worker is None:
                return
            start = time.monotonic()
            got = await self._command(worker, {"op": "debounce", "key": op["key"], "n": n},
                                      index)
            calls.append((n, start, time.monotonic(), got))

        if op.get("together"):  # from several processes at once, no gaps: one burst
            self.rec.together.add(op["key"])
            await asyncio.gather(*(call(n, w, 0) for n, (w, _gap) in enumerate(op["calls"])))
            calls.sort()
            return
        for n, (w, gap) in enumerate(op["calls"]):
            await call(n, w, gap)

    async def _schedule(self, op: Op) -> None:
        client = self.client
        assert client is not None
        if op["action"] == "create":
            cron = "* * * * *" if op["name"] == RUNTIME_SCHEDULES[0] else "*/2 * * * *"
            await client.create_schedule(op["name"], SCHEDULE, cron)
        elif op["action"] == "delete":
            await client.delete_schedule(op["name"])
        else:
            base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
            first, last = op["range"]
            ids = await client.backfill_schedule(op["name"], base + dt.timedelta(minutes=first),
                                                 base + dt.timedelta(minutes=last))
            self.rec.backfilled.update(ids)
            for wid in ids:  # a colored tick that retention removed runs again, uncolored
                if wid in self.rec.colors:
                    self.rec.colors[wid] = None

    async def _fault(self, index: int, op: Op) -> None:
        kind = op["op"]
        if kind == "pause":
            await asyncio.sleep(op["seconds"])
        elif kind == "kill":
            worker = self.workers[op["worker"]]
            if worker.alive:
                pid = worker.pid
                await worker.kill()
                self.rec.kills.append((pid, await self.now()))
        elif kind == "restart":
            await self.restart(op["worker"], op["new_id"])
        elif kind == "terminate":
            await self._terminate(index, op)
        elif kind == "refuse":
            self._refusals.append(asyncio.create_task(self._refuse(op["seconds"])))

    async def restart(self, i: int, new_id: bool) -> None:
        old = self.workers[i]
        if old.alive:
            return
        if new_id:
            self._generation += 1
        executor = f"w{i}" if not new_id else f"w{i}-{self._generation}"
        for attempt in range(5):
            worker = Worker(self.url, executor)
            self.workers[i] = worker
            try:
                await worker.start()
                self.rec.pids.add(worker.pid)
                return
            except (RuntimeError, TimeoutError) as exc:
                await worker.kill()
                await asyncio.gather(*self._refusals, return_exceptions=True)
                if attempt == 4:
                    self.violate("restart", f"worker {executor} did not launch: {exc}")

    async def _terminate(self, index: int, op: Op) -> None:
        assert self.conn is not None
        chosen = [self.workers[op["worker"]]] if op["worker"] is not None else self.workers
        names: list[str] = []
        for worker in chosen:
            if op["which"] in ("pool", "any"):
                names.append(f"asyncflow:{worker.executor_id}")
            if op["which"] in ("listener", "any"):
                names.append(f"asyncflow-listener:{worker.executor_id}")
        if op["which"] == "any":
            names += ["asyncflow-client", "asyncflow-client-listener"]
        pids = [r[0] for r in await self.conn.fetch(
            "select pid from pg_stat_activity where datname = current_database() "
            "and application_name = any($1::text[]) order by pid", names)]
        if not pids:
            return
        rng = random.Random(index)
        victims = rng.sample(pids, min(op["count"], len(pids)))
        self.rec.faults.append(("terminate", await self.now()))
        await self.conn.execute("select pg_terminate_backend(p) from unnest($1::int[]) p",
                                victims)

    async def _refuse(self, seconds: float) -> None:
        assert self.conn is not None
        self.rec.faults.append(("refuse", await self.now()))
        await self.conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
            self.rec.faults.append(("refuse-end", await self.now()))

    # -- the end ----------------------------------------------------------------------------

    async def quiesce(self) -> None:
        self.current = "quiescence"
        await asyncio.gather(*self._refusals, return_exceptions=True)
        for i in range(WORKERS):
            await self.restart(i, False)
        if self.violations:
            return
        parked = await torture_checks.wait_quiet(self, QUIESCE_TIMEOUT)
        if self.violations:
            return
        await torture_checks.owners_run_their_workflows(self)
        await torture_checks.release(self, parked)
        if self.violations:
            return
        await torture_checks.final(self)

    def worker_output(self) -> str:
        return "\n".join(f"--- {w.executor_id} (pid {w.pid}) ---\n" + "\n".join(w.lines)
                         for w in self.workers)


def elapsed(start: float) -> float:
    return time.monotonic() - start
