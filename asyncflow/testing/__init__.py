"""asyncflow.testing: test your own workflows (docs/testing.md is the manual).

A pytest plugin, loaded by its entry point once asyncflow-pg is installed (or with
``-p asyncflow.testing``). Its fixtures:

* ``asyncflow_app`` -- ``async with asyncflow_app(app) as app:`` runs your app on a fresh
  database of its own, made for each test by cloning a template database migrated once per
  session;
* ``asyncflow_database_url`` -- that database's URL (also set as ``ASYNCFLOW_DATABASE_URL``);
* ``asyncflow_databases`` -- the session's server: ``ASYNCFLOW_TEST_DATABASE_URL``, else a
  private embedded Postgres.

Its helpers (plain functions: importing this module needs no pytest, only the fixtures do):

* :func:`crash_and_recover`, :func:`crash_at`, :func:`relaunch` -- crash a workflow at a chosen
  step and recover it; :func:`step_runs` -- which step bodies ran, and how often;
* :func:`skip_timers`, :func:`until_waiting` -- run durable timers without waiting;
* :func:`launched`, :class:`TestDatabases`, :func:`reset` -- the same without pytest.
"""

from ._control import Crash, SimulatedCrash, reset
from ._crash import crash_and_recover, crash_at, step_runs
from ._launch import launched, relaunch
from ._server import TestDatabases
from ._waiting import skip_timers, until_waiting

try:
    import pytest as _pytest  # noqa: F401  (only to know whether the fixtures can exist)
except ImportError:  # the helpers work without pytest; the fixtures need it
    pass
else:
    from ._plugin import AppLauncher as AppLauncher
    from ._plugin import _asyncflow_reset as _asyncflow_reset
    from ._plugin import asyncflow_app as asyncflow_app
    from ._plugin import asyncflow_database_url as asyncflow_database_url
    from ._plugin import asyncflow_databases as asyncflow_databases

__all__ = [
    "Crash",
    "SimulatedCrash",
    "TestDatabases",
    "crash_and_recover",
    "crash_at",
    "launched",
    "relaunch",
    "reset",
    "skip_timers",
    "step_runs",
    "until_waiting",
]
