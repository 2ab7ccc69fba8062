"""Where this process runs, as executor rows record it: the host (kernel boot and pid namespace)
and the process (pid and start time). A supervisor on the same host can then tell for certain
that a silent executor's process is gone, instead of waiting out its lease.

Linux only (``/proc``); elsewhere nothing is recorded and leases decide alone.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def host_identity() -> str | None:
    """The kernel's boot id and this process's pid namespace (``None``: not on Linux)."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}"


def _start_time(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks since boot)`` of a process (``None``: no such pid)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[0], fields[19]


def process_identity(pid: int | None = None) -> str | None:
    """``pid:start time`` of this (or another) process (``None``: not on Linux)."""
    pid = os.getpid() if pid is None else pid
    found = _start_time(pid)
    return None if found is None else f"{pid}:{found[1]}"


def process_gone(identity: str | None) -> bool:
    """Whether the process recorded as ``identity`` (on this host) has certainly ended: its pid
    is free, a zombie, or another process's. Unknown (``None`` or malformed): not certain."""
    if not identity:
        return False
    pid_text, _, started = identity.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    found = _start_time(pid)
    if found is None:
        return True
    state, start = found
    return state in ("Z", "X") or start != started
