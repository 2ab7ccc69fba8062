"""The pytest fixtures of asyncflow.testing (registered by the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager

import pytest

from .._front.app import AsyncFlow
from .._storage.embedded import ENV_URL
from ._control import reset
from ._launch import launched
from ._server import TestDatabases


class AppLauncher:
    """What the ``asyncflow_app`` fixture gives: call it with your app to run that app on this
    test's database, ``async with asyncflow_app(app) as app: ...``."""

    __test__ = False

    def __init__(self, database_url: str) -> None:
        #: This test's database (the same as the ``asyncflow_database_url`` fixture).
        self.database_url = database_url

    def __call__(self, app: AsyncFlow) -> AbstractAsyncContextManager[AsyncFlow]:
        """Launch ``app`` on this test's database for the ``async with`` block (in a task of its
        own: the block may span a fixture's set-up and tear-down); ``relaunch`` and
        ``crash_and_recover`` restart it there. Afterwards the app has its own URL back."""
        return launched(app, self.database_url)


AppLauncher.__module__ = "asyncflow.testing"


@pytest.fixture(scope="session")
def asyncflow_databases() -> Iterator[TestDatabases]:
    """The session's test server and template database (see :class:`TestDatabases`): the
    server of ``ASYNCFLOW_TEST_DATABASE_URL`` or a private embedded Postgres, started once.
    Override it in your conftest.py to choose another server or schema."""
    with TestDatabases() as databases:
        yield databases


@pytest.fixture
def asyncflow_database_url(
    asyncflow_databases: TestDatabases, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The URL of a fresh database for this test, with the asyncflow schema in it; dropped
    after the test. ``ASYNCFLOW_DATABASE_URL`` is set to it meanwhile, so an ``AsyncFlow()`` or
    ``Client()`` made without a URL (and a subprocess the test starts) uses it."""
    url = asyncflow_databases.create()
    monkeypatch.setenv(ENV_URL, url)
    yield url
    asyncflow_databases.drop(url)


@pytest.fixture
def asyncflow_app(asyncflow_database_url: str) -> AppLauncher:
    """Run your app on this test's own database: ``async with asyncflow_app(app) as app:``."""
    return AppLauncher(asyncflow_database_url)


@pytest.fixture(autouse=True)
def _asyncflow_reset() -> Iterator[None]:
    """After each test: forget the test clocks, armed crashes and counters of every app."""
    yield
    reset()
