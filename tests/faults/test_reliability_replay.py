"""Issue 9, items 1 and 6 and their siblings: a replay sees what the first run saw.

A workflow that catches a step's exception must take the same branch when it is replayed after a
restart (item 1); an exception that is awkward to encode (a lone surrogate, a ``__str__`` that
raises) still ends its workflow in ERROR with a readable message (item 6). Siblings: other
exception shapes (OSError with a filename, tuple or bytes args, an ``__init__`` whose signature
differs from its args), a step whose result cannot be encoded, and a failure recorded by a second
statement that a crash can separate from the first.

Restarts are in-process: the app is shut down (its workflows stay PENDING) and an app with the
same executor id is launched, which recovers them from the journal.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ROOT
from faultlib import FaultProxy

import asyncflow


class PaymentDeclined(Exception):
    """The issue's example: ``__init__`` takes a required keyword argument."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class Coded(Exception):
    """``__init__``'s parameter is not what ends up in ``args``."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


SURROGATE_NAME = os.fsdecode(b"r-\xff.csv")  # a lone surrogate, as os.listdir() can return


async def first_of(event: asyncio.Event, handle: asyncflow.WorkflowHandle[Any],
                   within: float = 30) -> None:
    """Wait until ``event`` is set; fail at once (with the workflow's own error) if the workflow
    ends first, and after ``within`` seconds if neither happens."""
    result = asyncio.ensure_future(handle.get_result())
    waiting = asyncio.ensure_future(event.wait())
    try:
        async with asyncio.timeout(within):
            await asyncio.wait({result, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not event.is_set():
            outcome = result.result()  # raises the workflow's error, if it failed
            pytest.fail(f"workflow {handle.workflow_id} ended first, with {outcome!r}")
    finally:
        result.cancel()
        waiting.cancel()


def observe(exc: BaseException) -> tuple[Any, ...]:
    """What a workflow can see of an exception (except its notes and traceback)."""
    attrs = {k: v for k, v in vars(exc).items() if k != "__notes__"}
    slots = {name: getattr(exc, name, None) for name in ("errno", "filename", "name")}
    return type(exc), exc.args, attrs, slots, str(exc)


# ---------------------------------------------------------------------------------------------
# Item 1: the first run and every replay raise the same exception.
# ---------------------------------------------------------------------------------------------


def _raise_payment_declined() -> None:
    raise PaymentDeclined("card declined", code="insufficient_funds")


def _raise_coded() -> None:
    raise Coded(402)


def _raise_file_not_found() -> None:
    Path("/nonexistent/asyncflow/rates.csv").read_text()


def _raise_tuple_key() -> None:
    raise KeyError(("sku", 7))


def _raise_unicode_decode() -> None:
    b"\xffabc".decode()


def _raise_surrogate() -> None:
    raise ValueError(f"cannot read {SURROGATE_NAME}")


RAISERS: dict[str, tuple[Callable[[], None], type[Exception]]] = {
    "kw-only-init": (_raise_payment_declined, PaymentDeclined),
    "init-differs-from-args": (_raise_coded, Coded),
    "os-error-with-filename": (_raise_file_not_found, FileNotFoundError),
    "tuple-arg": (_raise_tuple_key, KeyError),
    "bytes-arg": (_raise_unicode_decode, UnicodeDecodeError),
    "lone-surrogate-arg": (_raise_surrogate, ValueError),
}


def build_checkout(db_url: str, raiser: Callable[[], None], seen: list[tuple[Any, ...]],
                   caught: asyncio.Event) -> tuple[asyncflow.AsyncFlow, Any]:
    """An app whose workflow catches its step's failure and then waits for a message."""
    app = asyncflow.AsyncFlow(db_url, executor_id="rel-replay", app_version="rel-replay",
                              recovery_interval_seconds=0.2)

    @app.step(name="charge")
    async def charge() -> str:
        raiser()
        return "charged"

    @app.workflow(name="checkout")
    async def checkout() -> list[str]:
        try:
            branch = await charge()
        except PaymentDeclined as exc:
            seen.append(observe(exc))
            branch = f"declined:{exc.code}"
        except Exception as exc:
            seen.append(observe(exc))
            branch = type(exc).__name__
        caught.set()
        answer = await asyncflow.recv("retry", timeout_seconds=3600)
        return [branch, answer]

    return app, checkout


@pytest.mark.parametrize("case", list(RAISERS))
async def test_item1_replay_raises_the_same_exception_as_the_first_run(db_url, case):
    raiser, raised = RAISERS[case]
    seen: list[tuple[Any, ...]] = []
    first_caught = asyncio.Event()
    app, checkout = build_checkout(db_url, raiser, seen, first_caught)
    async with asyncio.timeout(60):
        async with app:
            handle = await app.start_workflow(checkout, workflow_id="order-1")
            await first_of(first_caught, handle)
        # Shut down while parked in recv: the relaunch replays the step's recorded failure.
        replay_caught = asyncio.Event()
        app2, _ = build_checkout(db_url, raiser, seen, replay_caught)
        async with app2:
            handle = await app2.retrieve_workflow("order-1")
            await first_of(replay_caught, handle)
            await app2.send("order-1", "ok", topic="retry")
            result = await handle.get_result(timeout_seconds=30)
    assert len(seen) == 2
    assert seen[1] == seen[0], "the replay saw another exception than the first run"
    assert seen[0][0] is raised
    expected_branch = "declined:insufficient_funds" if case == "kw-only-init" else raised.__name__
    assert result == [expected_branch, "ok"]


async def test_item1_non_json_args_keep_their_type_on_replay(db_url):
    """Args that cannot be recorded (an arbitrary object): the type and message still are."""
    seen: list[tuple[Any, ...]] = []

    def raiser() -> None:
        raise LookupError(Path("/no/such/key"))

    first = asyncio.Event()
    app, checkout = build_checkout(db_url, raiser, seen, first)
    async with asyncio.timeout(60):
        async with app:
            handle = await app.start_workflow(checkout, workflow_id="order-2")
            await first_of(first, handle)
        again = asyncio.Event()
        app2, _ = build_checkout(db_url, raiser, seen, again)
        async with app2:
            handle = await app2.retrieve_workflow("order-2")
            await first_of(again, handle)
            await app2.send("order-2", "ok", topic="retry")
            assert await handle.get_result(timeout_seconds=30) == ["LookupError", "ok"]
    (first_type, _, _, _, first_message), (replay_type, _, _, _, replay_message) = seen
    assert (replay_type, replay_message) == (first_type, first_message) == (
        LookupError, "/no/such/key")


async def test_item1_sibling_unencodable_step_result_is_journaled_as_a_failure(db_url):
    runs: list[int] = []
    branches: list[str] = []

    def build(caught: asyncio.Event) -> tuple[asyncflow.AsyncFlow, Any]:
        app = asyncflow.AsyncFlow(db_url, executor_id="rel-ser", app_version="rel-ser",
                                  recovery_interval_seconds=0.2)

        @app.step(name="fetch")
        async def fetch() -> Any:
            runs.append(1)
            return {1, object()} if len(runs) == 1 else [1, 2]  # not JSON the first time only

        @app.workflow(name="wf")
        async def wf() -> list[Any]:
            try:
                branch = f"ok:{await fetch()}"
            except asyncflow.SerializationError:
                branch = "not-json"
            branches.append(branch)
            caught.set()
            return [branch, await asyncflow.recv(timeout_seconds=3600)]

        return app, wf

    async with asyncio.timeout(60):
        first = asyncio.Event()
        app, wf = build(first)
        async with app:
            handle = await app.start_workflow(wf, workflow_id="ser")
            await first_of(first, handle)
        again = asyncio.Event()
        app2, _ = build(again)
        async with app2:
            handle = await app2.retrieve_workflow("ser")
            await first_of(again, handle)
            await app2.send("ser", "go")
            assert await handle.get_result(timeout_seconds=30) == ["not-json", "go"]
    assert branches == ["not-json", "not-json"]
    assert len(runs) == 1, "the step ran again although the workflow saw its outcome"


async def test_item1_sibling_stream_closed_failure_survives_a_lost_connection(server_url,
                                                                             db_url):
    """A write to a closed stream is journaled, then its failure is recorded by a second
    statement. Losing the connection between the two must not turn the failure into a success
    on replay. (The cut only happens while the failure takes two statements.)"""
    proxy = FaultProxy(db_url)
    url = await proxy.start()
    try:
        app = asyncflow.AsyncFlow(url, recovery_interval_seconds=0.2)

        @app.workflow()
        async def writer() -> str:
            await asyncflow.close_stream("s")
            try:
                await asyncflow.write_stream("s", 1)
            except asyncflow.StreamClosedError:
                return "closed"
            return "wrote"

        async with asyncio.timeout(60), app:
            proxy.arm(b"SET error = $3", after=False)
            handle = await app.start_workflow(writer, workflow_id="w")
            assert await handle.get_result(timeout_seconds=30) == "closed"
    finally:
        await proxy.close()


# ---------------------------------------------------------------------------------------------
# Item 6: encoding an error never fails.
# ---------------------------------------------------------------------------------------------


def _surrogate_error() -> Exception:
    return ValueError(f"cannot read {SURROGATE_NAME}")


def _unprintable_error() -> Exception:
    return Unprintable("details")


@pytest.mark.parametrize("make_error", [_surrogate_error, _unprintable_error],
                         ids=["lone-surrogate", "str-raises"])
@pytest.mark.parametrize("where", ["workflow", "step", "transaction"])
async def test_item6_unencodable_error_ends_the_workflow_in_error(make_app, make_error, where):
    app = make_app()

    @app.step()
    async def step() -> None:
        raise make_error()

    @app.transaction()
    async def transaction() -> None:
        raise make_error()

    @app.workflow()
    async def wf() -> None:
        if where == "step":
            await step()
        elif where == "transaction":
            await transaction()
        else:
            raise make_error()

    expected_type = type(make_error())
    async with asyncio.timeout(60), app:
        handle = await app.start_workflow(wf, workflow_id="bad-error")
        with pytest.raises(Exception) as info:
            await handle.get_result(timeout_seconds=20)
        assert not isinstance(info.value, asyncflow.AsyncFlowTimeoutError), "left PENDING"
        status = await handle.get_status()
    assert status.status == "ERROR"
    assert status.error is not None and expected_type.__name__ in status.error
    status.error.encode()  # valid Unicode: shown by any UI or log
    if expected_type is ValueError:
        # The original exception, message and all.
        assert type(info.value) is ValueError and str(info.value) == f"cannot read {SURROGATE_NAME}"
        assert "cannot read r-\\udcff.csv" in status.error
    else:
        # No message can be computed: a readable placeholder naming the type.
        assert isinstance(info.value, asyncflow.WorkflowFailedError)
        assert "Unprintable" in str(info.value) and "failed" in str(info.value)


def _decode_recorded(text: str) -> Exception:
    """Internal, isolated here: decode a journal's error record (asyncflow._codec)."""
    from asyncflow._recorded import decode_error

    return decode_error(text, asyncflow.StepFailedError)


def test_item1_records_written_before_the_fix_still_decode():
    """Journals written by the previous record format (no "v", plain JSON args) replay as they
    did: rebuilt from their args when that reproduces the message, else StepFailedError."""
    old = ('{"module":"builtins","type":"KeyError","message":"\'sku\'","args":["sku"],'
           '"traceback":"Traceback ...\\nKeyError: \'sku\'\\n"}')
    rebuilt = _decode_recorded(old)
    assert type(rebuilt) is KeyError and rebuilt.args == ("sku",)
    unbuildable = ('{"module":"test_reliability_replay","type":"PaymentDeclined",'
                   '"message":"card declined","args":null,"traceback":""}')
    assert isinstance(_decode_recorded(unbuildable), asyncflow.StepFailedError)
    assert isinstance(_decode_recorded("not json"), asyncflow.StepFailedError)


async def test_item6_oversized_error_is_recorded_with_its_type(make_app):
    """An exception whose record would pass MAX_VALUE_BYTES keeps its type and the head of its
    message instead of failing the terminal write."""
    app = make_app()

    @app.workflow()
    async def huge() -> None:
        raise ValueError("x" * (asyncflow.MAX_VALUE_BYTES + 10))

    async with asyncio.timeout(60), app:
        handle = await app.start_workflow(huge)
        with pytest.raises(ValueError) as info:
            await handle.get_result(timeout_seconds=30)
        assert (await handle.get_status()).status == "ERROR"
    assert 0 < len(str(info.value)) < asyncflow.MAX_VALUE_BYTES


# ---------------------------------------------------------------------------------------------
# The property: random workflows, killed at random points, end as their first run would.
# ---------------------------------------------------------------------------------------------


def _program_module() -> Any:
    """The worker script (tests/procs/rel_random_program.py) also defines the programs and
    their expected outcomes; import it from its path (tests/procs is not a package)."""
    path = ROOT / "tests" / "procs" / "rel_random_program.py"
    spec = importlib.util.spec_from_file_location("rel_random_program", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _run_until(proc: Any, kill_after_ops: int | None, within: float = 60) -> Any:
    """Read the worker's lines: its RESULT (decoded), or None once ``kill_after_ops`` step
    bodies have started (the caller kills it there)."""
    stdout = proc.process.stdout
    ops = 0
    async with asyncio.timeout(within):
        while True:
            raw = await stdout.readline()
            if not raw:
                raise AssertionError("worker exited early:\n" + "\n".join(proc.lines))
            line = raw.decode().rstrip("\n")
            proc.lines.append(line)
            if line.startswith("RESULT "):
                return orjson.loads(line[len("RESULT "):])
            if line.startswith("OP "):
                ops += 1
                if kill_after_ops is not None and ops >= kill_after_ops:
                    return None


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_property_random_programs_killed_at_random_points_end_as_the_first_run(
        db_url, procs, seed):
    """Random mixes of steps that succeed, fail (caught), retry after writing, write streams
    and set events; the worker is SIGKILLed at random points (up to three times) and relaunched
    with the same executor id. Every workflow must end with the outcome, stream and events its
    first run defines (derived from the program, never from a run)."""
    module = _program_module()
    count = 8
    rng = random.Random(seed)
    outcome = None
    for kill in range(4):
        proc = await procs("rel_random_program.py", db_url, "prop-exec", str(seed), str(count))
        outcome = await _run_until(proc, None if kill == 3 else rng.randint(1, 40))
        proc.kill()
        await proc.wait()
        if outcome is not None:
            break
    assert outcome == module.expected(seed, count)
