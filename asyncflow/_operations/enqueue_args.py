"""Queues: a queue's settings and an enqueue's arguments, validated and encoded before anything
is written (:mod:`.queues` picks where the enqueue goes)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _codec
from .._errors import InvalidArgumentError, InvalidSettingError
from .._signature import Signature
from .._specs import QueueSpec

ON_DUPLICATE = ("raise", "return_existing")
#: The app version stored with a workflow enqueued by a Client (which has none). A queued
#: workflow that never ran has no journal, so any worker registering its name may run it; it
#: is stamped with that worker's version when dispatched.
NO_VERSION = ""
_INT4 = 2**31


def _limit(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < _INT4:
        raise InvalidSettingError(f"{what} must be None or an int from 1 to 2**31-1, not "
                                  f"{value!r}")
    return value


def queue_spec(
    name: object,
    concurrency: object = None,
    worker_concurrency: object = None,
    rate_limit: object = None,
    partition_concurrency: object = None,
) -> QueueSpec:
    """Validate a queue's name and limits (:class:`InvalidSettingError` when one is bad)."""
    try:
        checked = _codec.check_id(name, "queue name")
    except InvalidArgumentError as exc:
        raise InvalidSettingError(str(exc)) from None
    rate: tuple[int, float] | None = None
    if rate_limit is not None:
        if not isinstance(rate_limit, tuple | list) or len(rate_limit) != 2:
            raise InvalidSettingError(
                f"rate_limit must be None or (starts, per_seconds), e.g. (10, 1.0), not "
                f"{rate_limit!r}")
        count, per = rate_limit
        count = _limit(count, "rate_limit's count of starts")
        if (isinstance(per, bool) or not isinstance(per, int | float) or not math.isfinite(per)
                or not 0 < per <= 365 * 24 * 3600):
            raise InvalidSettingError(
                f"rate_limit's period must be a number of seconds > 0 (at most a year), not "
                f"{per!r}")
        assert count is not None
        rate = (count, float(per))
    return QueueSpec(checked, _limit(concurrency, "concurrency"),
                     _limit(worker_concurrency, "worker_concurrency"), rate,
                     _limit(partition_concurrency, "partition_concurrency"))


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """A validated enqueue: which workflow, where, and how."""

    queue_name: str
    name: str
    inputs: str
    workflow_id: str | None
    priority: int
    deduplication_id: str | None
    delay_seconds: float
    partition_key: str | None
    on_duplicate: str
    #: Its timeout (``None``: none); the clock starts when a dispatcher starts it.
    timeout_seconds: float | None = None
    #: The workflow function's decoders (``None``: enqueued by name), for its handle.
    types: Signature | None = None


def enqueue_request(
    queue_name: str,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    workflow_id: object,
    priority: object,
    deduplication_id: object,
    delay_seconds: object,
    partition_key: object,
    on_duplicate: object,
    timeout_seconds: object = None,
    types: Signature | None = None,
) -> EnqueueRequest:
    """Validate and encode an enqueue's arguments (raises before anything is written)."""
    wid = None if workflow_id is None else _codec.check_id(workflow_id)
    if isinstance(priority, bool) or not isinstance(priority, int) or not (
            -_INT4 <= priority < _INT4):
        raise InvalidArgumentError(f"priority must be an int from -2**31 to 2**31-1 (lower runs "
                                   f"first), not {priority!r}")
    dedup = (None if deduplication_id is None
             else _codec.check_id(deduplication_id, "deduplication_id"))
    partition = None if partition_key is None else _codec.check_id(partition_key,
                                                                     "partition_key")
    delay = _codec.check_timeout(delay_seconds, "delay_seconds")
    timeout = _codec.check_workflow_timeout(timeout_seconds)
    if on_duplicate not in ON_DUPLICATE:
        raise InvalidArgumentError(
            f"on_duplicate must be 'raise' or 'return_existing', not {on_duplicate!r}")
    inputs = (types.encode_inputs(args, kwargs) if types is not None
              else _codec.dumps({"args": list(args), "kwargs": kwargs},
                                f"the arguments of workflow {name!r}"))
    return EnqueueRequest(queue_name, name, inputs, wid, priority, dedup, delay, partition,
                          str(on_duplicate), timeout, types)


def many_requests(
    queue_name: str,
    name: str,
    calls: Iterable[tuple[Any, ...]],
    *,
    workflow_ids: Sequence[str] | None,
    priority: object,
    delay_seconds: object,
    partition_key: object,
    timeout_seconds: object,
    types: Signature | None = None,
) -> list[EnqueueRequest]:
    """Validate and encode an ``enqueue_many``'s calls (tuples of positional arguments) with
    their shared options and optional ids, one request per call (raises before anything is
    written)."""
    calls = list(calls)
    for call in calls:
        if not isinstance(call, tuple):
            raise InvalidArgumentError(
                f"each call of enqueue_many must be a tuple of positional arguments, not "
                f"{call!r}")
    if workflow_ids is None:
        ids: list[str | None] = [None] * len(calls)
    elif isinstance(workflow_ids, str) or len(workflow_ids) != len(calls):
        raise InvalidArgumentError(
            "workflow_ids must be a sequence of one workflow id per call "
            f"({len(calls)}), not {workflow_ids!r}")
    else:
        ids = list(workflow_ids)
    return [enqueue_request(
        queue_name, name, call, {}, workflow_id=workflow_id, priority=priority,
        deduplication_id=None, delay_seconds=delay_seconds, partition_key=partition_key,
        on_duplicate="raise", timeout_seconds=timeout_seconds, types=types)
        for call, workflow_id in zip(calls, ids, strict=True)]


def step_child_id(parent_id: str, function_id: int, seq: int) -> str:
    """The id of a workflow enqueued by a step or transaction: keyed by the step's position and
    the enqueue's order within it, so a retried attempt enqueues the same workflow."""
    return _codec.derived_id(parent_id, f"-{function_id}.{seq}")
