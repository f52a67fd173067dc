"""Shared fixtures: the hook is active in this test process, and each test gets a fresh store.

Tests run against real databases only: Postgres (``DBOSIFY_TEST_DATABASE_URL``, by default the
local server at 127.0.0.1:5432 when it answers) and an embedded SQLite directory.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

import dbosify

dbosify.activate()  # before anything imports temporalio

from temporalio.client import Client  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def _database_per_xdist_worker() -> None:
    """Under pytest-xdist (``scripts/test`` runs ``-n``), each worker process gets a database of
    its own, ``<database>_gwN``, dropped and created afresh at the start of each run, so tests that
    count rows or transactions of a whole database see only their own worker's, and nothing an
    earlier run left behind is in the way. Subprocesses inherit it through the environment."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    base = os.environ.get("DBOSIFY_TEST_DATABASE_URL") or DEFAULT_PG
    try:
        import psycopg
        from psycopg import sql

        parts = urllib.parse.urlsplit(base)
        name = f"{parts.path.lstrip('/') or 'postgres'}_{worker}"
        url = urllib.parse.urlunsplit(parts._replace(path="/" + name))
        with psycopg.connect(base, connect_timeout=3, autocommit=True) as conn:
            # A fresh one each run: nothing left by an earlier run (its schemas, a frozen
            # process's session) can slow or block this one.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except Exception:
        if os.environ.get("DBOSIFY_TEST_DATABASE_URL"):
            raise
        return  # no local server: the throwaway cluster below is per process anyway
    os.environ["DBOSIFY_TEST_DATABASE_URL"] = url


_database_per_xdist_worker()


def postgres_url() -> str | None:
    url = os.environ.get("DBOSIFY_TEST_DATABASE_URL") or DEFAULT_PG
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception:
        if os.environ.get("DBOSIFY_TEST_DATABASE_URL"):
            raise
        return None  # no local server: `_pg_session_url` falls back to a throwaway cluster
    return url


_PG = postgres_url()


@pytest.fixture(scope="session")
def _pg_session_url() -> Iterator[str]:
    """`_PG`; or, with no DBOSIFY_TEST_DATABASE_URL and no local server, a throwaway cluster.

    The cluster (tests/pg_throwaway.py) needs the PostgreSQL server binaries; without them the
    Postgres tests are skipped with the reason, or fail on CI, as before this fallback existed.
    """
    if _PG is not None:
        yield _PG
        return
    from pg_throwaway import ThrowawayPostgres, Unavailable

    try:
        cluster = ThrowawayPostgres.create()
    except Unavailable as why:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Postgres reachable (set DBOSIFY_TEST_DATABASE_URL); {why}")
    with cluster:
        yield cluster.url


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("_pg_session_url"))  # started only when needed
    return "sqlite:///" + str(tmp_path_factory.mktemp("store"))


def register_namespace(url: str, name: str) -> str:
    """Register ``name`` in the store at ``url`` (as `dbosify namespace create` does): a namespace
    other than ``default`` must be registered before it is used. Returns ``name``."""
    from dbosify._store import get_store, resolve_url

    get_store(resolve_url(url)).register_namespace(name)
    return name


def new_namespace(url: str, prefix: str = "t") -> str:
    """A fresh namespace name, registered in the store at ``url``."""
    return register_namespace(url, f"{prefix}{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    yield await Client.connect(db_url, namespace=new_namespace(db_url))
