"""DBOS's system tables are set up without importing ``dbos`` where a user's code runs.

- `dbosify._store.dbos_migrate` gives the same schema as ``DBOS.migrate`` (tables, columns, indexes,
  functions, triggers, the version row), on Postgres and SQLite;
- a client's first start on a fresh store does not import ``dbos``;
- the first start from a thread of gevent's threadpool in a gevent-patched process (Temporal's
  ``gevent_async`` sample runs its client so) works: importing ``dbos`` there failed, as its cron
  library runs a subprocess at import.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from dbosify._store import get_store


@workflow.defn(name="Greeting")
class Greeting:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"Hello, {name}!"


# -- the same schema as DBOS.migrate ----------------------------------------------------------


def _pg_schema(conn: Any, schema: str) -> dict[str, Any]:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        out = conn.execute(sql, (schema,)).fetchall()
        return sorted(tuple(str(v).replace(f'"{schema}"', "S").replace(schema, "S") for v in r)
                      for r in out)

    return {
        "columns": rows(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = %s"
        ),
        "indexes": rows("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s"),
        "constraints": rows(
            "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s"
        ),
        "functions": rows(
            "SELECT p.proname, pg_get_function_arguments(p.oid), p.prosrc FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s"
        ),
        "triggers": rows(
            "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c"
            " ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND NOT t.tgisinternal"
        ),
        "version": conn.execute(f'SELECT version FROM "{schema}".dbos_migrations').fetchall(),
    }


def _sqlite_schema(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        return {
            "objects": sorted(conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            ).fetchall()),
            "version": conn.execute("SELECT version FROM dbos_migrations").fetchall(),
        }


def _dbos_migrate(url: str, schema: str | None) -> None:
    """``DBOS.migrate``, in a process of its own (importing dbos here would hide the test below)."""
    args = f"{url!r}" + (f", schema={schema!r}" if schema else "")
    subprocess.run(
        [sys.executable, "-c", f"from dbos import DBOS; DBOS.migrate({args})"],
        check=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "DBOSIFY_ACTIVATE"},
    )


def test_the_schema_is_dbos_migrates(db_url: str, tmp_path: Path) -> None:
    from dbosify._store import dbos_migrate as migrate

    if db_url.startswith("sqlite"):
        theirs, ours = tmp_path / "theirs.sqlite", tmp_path / "ours.sqlite"
        _dbos_migrate(f"sqlite:///{theirs}", None)
        migrate.migrate(f"sqlite:///{ours}")
        migrate.migrate(f"sqlite:///{ours}")  # current: nothing to do
        expected = _sqlite_schema(theirs)
        assert expected["objects"] and expected["version"][0][0] > 100
        assert _sqlite_schema(ours) == expected
        return
    tag = uuid.uuid4().hex[:10]
    theirs, ours = f"dbosmig_{tag}_a", f"dbosmig_{tag}_b"
    try:
        _dbos_migrate(db_url, theirs)
        migrate.migrate(db_url, ours)
        migrate.migrate(db_url, ours)
        with psycopg.connect(db_url) as conn:
            expected = _pg_schema(conn, theirs)
            assert expected["functions"] and expected["version"][0][0] > 100
            assert _pg_schema(conn, ours) == expected
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for schema in (theirs, ours):
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- no dbos import on a user's call path ------------------------------------------------------


def _fresh_store(db_url: str, tmp_path: Path) -> str:
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'fresh'}"
    return db_url + ("&" if "?" in db_url else "?") + f"dbosify_server=m{uuid.uuid4().hex[:12]}"


_START = """
async def start(url):
    from temporalio.client import Client
    client = await Client.connect(url)
    handle = await client.start_workflow("Greeting", "gevent", id="greeting", task_queue="greet")
    return handle.result_run_id
"""


def _run(script: str, url: str) -> str:
    env = dict(os.environ, DBOSIFY_ACTIVATE="1")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), url], capture_output=True, text=True,
        timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


async def _finish(url: str, run_id: str) -> None:
    client = await Client.connect(url)
    async with Worker(client, task_queue="greet", workflows=[Greeting]):
        handle = client.get_workflow_handle("greeting", run_id=run_id)
        assert await handle.result() == "Hello, gevent!"


async def test_a_first_start_does_not_import_dbos(db_url: str, tmp_path: Path) -> None:
    url = _fresh_store(db_url, tmp_path)
    try:
        out = _run(_START + """
import asyncio, sys
run_id = asyncio.run(start(sys.argv[1]))
print(run_id, "dbos" in sys.modules, any(m.startswith("dbos.") for m in sys.modules))
""", url)
        run_id, imported, submodules = out.split()
        assert (imported, submodules) == ("False", "False")
        await _finish(url, run_id)
    finally:
        get_store(url).drop_server()


async def test_a_first_start_from_a_gevent_threadpool_thread(db_url: str, tmp_path: Path) -> None:
    pytest.importorskip("gevent")
    url = _fresh_store(db_url, tmp_path)
    try:
        run_id = _run("""
from gevent import monkey
monkey.patch_all()
""" + _START + """
import asyncio, sys
from gevent import threadpool

# As Temporal's gevent_async sample runs its client: asyncio.run in a gevent threadpool thread.
def call():
    return asyncio.run(start(sys.argv[1]))
pool = threadpool.ThreadPoolExecutor(max_workers=1)
# gevent's own future: waiting on it yields to the hub (a plain Future's wait would sleep out its
# whole timeout, as the thread's wake-up cannot reach a monkey-patched lock's waiter).
print(pool.submit(call).result(timeout=90))
pool.shutdown()
""", url)
        await _finish(url, run_id)
    finally:
        get_store(url).drop_server()
