"""Namespaces kept apart: DBOS IDs that name one run whatever the namespace's name, DBOS rows per
namespace or none, no adoption of a schema or file dbosify did not create, private files.

Each test uses a store no other test has used (`Fresh`: an isolated server's schemas, or a new
SQLite directory), so that namespace names such as ``nsb`` and ``nsb/x`` are its own.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import TerminatedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from test_namespaces import Fresh

import dbosify
from dbosify._store import forget_store, get_store


@workflow.defn
class Waits:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def release(self) -> None:
        self.go = True

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "released"


def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def fresh(db_url: str, tmp_path: Path) -> Iterator[Fresh]:
    f = Fresh(db_url, tmp_path)
    try:
        yield f
    finally:
        f.close()


def _dbos_client(store: Any, namespace: str) -> Any:
    from dbos import DBOSClient

    if store.is_sqlite:
        return DBOSClient(system_database_url=f"sqlite:///{store.sqlite_path(namespace)}")
    return DBOSClient(
        system_database_url=store.pg_url, dbos_system_schema=store.dbos_schema_of(namespace)
    )


def _dbos_row(dbos: Any, wid: str) -> Any:
    got = [w for w in dbos.list_workflows(workflow_ids=[wid]) if w.workflow_id == wid]
    return got[0] if got else None


async def _wait_dbos(dbos: Any, wid: str, status: str) -> Any:
    deadline = time.monotonic() + 10
    while True:
        w = await asyncio.to_thread(_dbos_row, dbos, wid)
        if w is not None and w.status == status:
            return w
        assert time.monotonic() < deadline, f"DBOS status of {wid}: {w.status if w else None}"
        await asyncio.sleep(0.05)


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=[Waits], workflow_runner=UnsandboxedWorkflowRunner())


def test_the_dbos_id_quotes_slash_and_percent_in_each_part() -> None:
    assert dbosify.dbos_workflow_id("default", "order-1", "r") == "default/order-1/r"
    assert dbosify.dbos_workflow_id("nsb/x", "a", "r") == "nsb%2Fx/a/r"
    assert dbosify.dbos_workflow_id("nsb", "x/a", "r") == "nsb/x%2Fa/r"  # not the run above
    assert dbosify.dbos_workflow_id("n%2F", "a%/b", "r") == "n%252F/a%25%2Fb/r"


# --------------------------------------------------------------------------- exact namespaces


async def test_a_dbos_cancel_reaches_a_run_whose_namespace_prefixes_another(fresh: Fresh) -> None:
    """``nsb`` and ``nsb/x`` both exist: a DBOS cancel of a run in ``nsb`` (workflow id with
    ``/`` and ``%``) terminates that run at once, and the one in ``nsb/x`` runs on."""
    store = get_store(fresh.url)
    store.register_namespace("nsb")
    store.register_namespace("nsb/x")
    tq = f"tq-{uid()}"
    outer = await Client.connect(fresh.url, namespace="nsb")
    inner = await Client.connect(fresh.url, namespace="nsb/x")
    dbos = _dbos_client(store, "nsb")
    try:
        async with _worker(outer, tq), _worker(inner, tq):
            h = await outer.start_workflow(Waits.run, id=f"x/a%2F{uid()}", task_queue=tq)
            other = await inner.start_workflow(Waits.run, id=f"a-{uid()}", task_queue=tq)
            wid = dbosify.dbos_workflow_id("nsb", h.id, h.result_run_id or "")
            await _wait_dbos(dbos, wid, "PENDING")
            await asyncio.to_thread(dbos.cancel_workflow, wid)
            with pytest.raises(WorkflowFailureError) as err:
                await asyncio.wait_for(h.result(), 5)
            assert isinstance(err.value.cause, TerminatedError)
            assert (await other.describe()).status == WorkflowExecutionStatus.RUNNING
            await other.signal(Waits.release)
            assert await other.result() == "released"
    finally:
        dbos.destroy()


async def test_drop_namespace_leaves_the_dbos_rows_of_a_namespace_it_prefixes(fresh: Fresh) -> None:
    store = get_store(fresh.url)
    store.register_namespace("nsb")
    store.register_namespace("nsb/x")
    inner = await Client.connect(fresh.url, namespace="nsb/x")
    outer = await Client.connect(fresh.url, namespace="nsb")
    tq = f"tq-{uid()}"
    kept = await inner.start_workflow(Waits.run, id=f"k-{uid()}", task_queue=tq)
    gone = await outer.start_workflow(Waits.run, id=f"x/g-{uid()}", task_queue=tq)
    dbos = _dbos_client(store, "nsb/x")
    try:
        kept_id = dbosify.dbos_workflow_id("nsb/x", kept.id, kept.result_run_id or "")
        assert _dbos_row(dbos, kept_id) is not None
        store.drop_namespace("nsb")
        assert _dbos_row(dbos, kept_id) is not None
        if not store.is_sqlite:  # the dropped namespace's rows went (SQLite: with its file)
            gone_id = dbosify.dbos_workflow_id("nsb", gone.id, gone.result_run_id or "")
            assert _dbos_row(dbos, gone_id) is None
    finally:
        dbos.destroy()


async def test_rows_written_with_unquoted_ids_are_renamed_at_upgrade(fresh: Fresh) -> None:
    """A run written by the release before quoting (its DBOS ID ``nsb/x/<wid>/<run>``) gets the
    quoted ID when a process of this release first sets DBOS up, and DBOS's cancel reaches it."""
    store = get_store(fresh.url)
    store.register_namespace("nsb/x")
    client = await Client.connect(fresh.url, namespace="nsb/x")
    tq = f"tq-{uid()}"
    h = await client.start_workflow(Waits.run, id=f"a/b-{uid()}", task_queue=tq)
    run_id = h.result_run_id or ""
    new = dbosify.dbos_workflow_id("nsb/x", h.id, run_id)
    old = f"nsb/x/{h.id}/{run_id}"
    # As the release before wrote it: the unquoted ID, and its envelope marker.
    if store.is_sqlite:
        conn = sqlite3.connect(store.sqlite_path("nsb/x"))
        with conn:
            conn.execute("UPDATE workflow_status SET workflow_uuid = ? WHERE workflow_uuid = ?", (old, new))
            conn.execute("UPDATE workflow_input SET workflow_uuid = ? WHERE workflow_uuid = ?", (old, new))
            conn.execute("UPDATE dbosify_meta SET value = value || '-old/1' WHERE key = 'dbos'")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(store.pg_url, autocommit=True) as pg:
            pg.execute(
                f'UPDATE "{store.dbos_schema}".workflow_status SET workflow_uuid = %s'
                " WHERE workflow_uuid = %s", (old, new),
            )
            pg.execute(
                f"UPDATE \"dbosify_{fresh.server}_catalog\".meta SET value = value || '-old/1'"
                " WHERE key = 'dbos'"
            )
    forget_store(fresh.url)
    store = get_store(fresh.url)
    client = await Client.connect(fresh.url, namespace="nsb/x")
    dbos = _dbos_client(store, "nsb/x")
    try:
        async with _worker(client, tq):
            await _wait_dbos(dbos, new, "PENDING")
            assert _dbos_row(dbos, old) is None
            await asyncio.to_thread(dbos.cancel_workflow, new)
            with pytest.raises(WorkflowFailureError):
                await asyncio.wait_for(client.get_workflow_handle(h.id, run_id=run_id).result(), 5)
    finally:
        dbos.destroy()


# --------------------------------------------------------------------------- DBOS rows apart


async def test_dbos_rows_off_for_a_namespace(fresh: Fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOSIFY_DBOS_OFF", "quiet")
    store = get_store(fresh.url)
    store.register_namespace("quiet")
    store.register_namespace("loud")
    tq = f"tq-{uid()}"
    quiet = await Client.connect(fresh.url, namespace="quiet")
    loud = await Client.connect(fresh.url, namespace="loud")
    async with _worker(quiet, tq), _worker(loud, tq):
        q = await quiet.start_workflow(Waits.run, id=f"q-{uid()}", task_queue=tq)
        n = await loud.start_workflow(Waits.run, id=f"n-{uid()}", task_queue=tq)
        for h in (q, n):
            await h.signal(Waits.release)
            assert await h.result() == "released"
    dbos = _dbos_client(store, "loud")
    try:
        assert _dbos_row(dbos, dbosify.dbos_workflow_id("loud", n.id, n.result_run_id or ""))
        if not store.is_sqlite:  # the shared schema holds the loud namespace's rows only
            assert _dbos_row(dbos, dbosify.dbos_workflow_id("quiet", q.id, q.result_run_id or "")) is None
    finally:
        dbos.destroy()
    if store.is_sqlite:  # the quiet namespace's file has no DBOS tables at all
        conn = sqlite3.connect(store.sqlite_path("quiet"))
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
        assert "workflow_status" not in tables and "executions" in tables


async def test_a_dbos_schema_per_namespace(fresh: Fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    """DBOSIFY_DBOS=namespace (Postgres): each namespace's DBOS rows are in its own schema, which
    ``dbos workflow list --schema`` lists, and DBOS's cancel works there as in the shared one."""
    if not fresh.pg:
        pytest.skip("SQLite keeps each namespace's DBOS rows in its own file already")
    monkeypatch.setenv("DBOSIFY_DBOS", "namespace")
    store = get_store(fresh.url)
    store.register_namespace("left")
    store.register_namespace("right")
    tq = f"tq-{uid()}"
    left = await Client.connect(fresh.url, namespace="left")
    right = await Client.connect(fresh.url, namespace="right")
    schema = store.dbos_schema_of("left")
    assert schema == store.ident("left") and schema != store.dbos_schema_of("right")
    dbos = _dbos_client(store, "left")
    try:
        async with _worker(left, tq), _worker(right, tq):
            a = await left.start_workflow(Waits.run, id=f"a-{uid()}", task_queue=tq)
            b = await right.start_workflow(Waits.run, id=f"b-{uid()}", task_queue=tq)
            a_id = dbosify.dbos_workflow_id("left", a.id, a.result_run_id or "")
            b_id = dbosify.dbos_workflow_id("right", b.id, b.result_run_id or "")
            await _wait_dbos(dbos, a_id, "PENDING")
            assert _dbos_row(dbos, b_id) is None
            env = {k: v for k, v in os.environ.items() if k != "DBOSIFY_ACTIVATE"}
            listed = subprocess.run(
                [str(Path(sys.executable).with_name("dbos")), "workflow", "list",
                 "-s", store.pg_url, "--schema", schema],
                capture_output=True, text=True, timeout=60, env=env,
            )
            assert listed.returncode == 0, listed.stderr
            assert a_id in listed.stdout and b_id not in listed.stdout
            await asyncio.to_thread(dbos.cancel_workflow, a_id)
            with pytest.raises(WorkflowFailureError):
                await asyncio.wait_for(a.result(), 5)
            await b.signal(Waits.release)
            assert await b.result() == "released"
        import psycopg

        with psycopg.connect(store.pg_url, autocommit=True) as pg:
            shared = pg.execute("SELECT to_regclass(%s)", (f'"{store.dbos_schema}".workflow_status',)).fetchone()
        assert shared == (None,)  # no shared schema was set up
    finally:
        dbos.destroy()


# --------------------------------------------------------------------------- never adopted


async def test_a_namespace_schema_or_file_dbosify_did_not_create_is_refused(fresh: Fresh) -> None:
    if fresh.pg:
        import psycopg

        foreign = f"dbosify_{fresh.server}_ns_default"
        with psycopg.connect(fresh.base, autocommit=True) as pg:
            pg.execute(f'CREATE SCHEMA "{foreign}"')
            pg.execute(f'CREATE TABLE "{foreign}".accounts (id INT)')
    else:
        foreign = str(fresh.dir / "dbosify_ns_default.sqlite")
        fresh.dir.mkdir(parents=True)
        conn = sqlite3.connect(foreign)
        conn.execute("CREATE TABLE accounts (id INT)")
        conn.close()
    client = await Client.connect(fresh.url)
    with pytest.raises(RPCError) as err:
        await client.start_workflow(Waits.run, id=f"f-{uid()}", task_queue="tq")
    assert repr(foreign) in err.value.message and "not created by dbosify" in err.value.message
    assert "\n" not in err.value.message
    assert err.value.status == RPCStatusCode.FAILED_PRECONDITION  # not retried as an outage
    if fresh.pg:
        with psycopg.connect(fresh.base, autocommit=True) as pg:
            tables = pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (foreign,)).fetchall()
        assert tables == [("accounts",)]  # untouched
    else:
        conn = sqlite3.connect(foreign)
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["accounts"]
        conn.close()


async def test_a_catalog_dbosify_did_not_create_is_refused(fresh: Fresh) -> None:
    if fresh.pg:
        import psycopg

        foreign = f"dbosify_{fresh.server}_catalog"
        with psycopg.connect(fresh.base, autocommit=True) as pg:
            pg.execute(f'CREATE SCHEMA "{foreign}"')
            pg.execute(f'CREATE TABLE "{foreign}".items (id INT)')
    else:
        fresh.dir.mkdir(parents=True)
        foreign = str(fresh.dir / "catalog.sqlite")
        Path(foreign).write_bytes(b"not a database, but someone's file" * 100)
    client = await Client.connect(fresh.url)
    with pytest.raises(RPCError) as err:
        await client.start_workflow(Waits.run, id=f"f-{uid()}", task_queue="tq")
    assert repr(foreign) in err.value.message and "not created by dbosify" in err.value.message


async def test_a_store_dbosify_created_keeps_working(fresh: Fresh) -> None:
    """Its schemas and files carry the marker: a new process uses them as before."""
    tq = f"tq-{uid()}"
    client = await Client.connect(fresh.url)
    async with _worker(client, tq):
        h = await client.start_workflow(Waits.run, id=f"w-{uid()}", task_queue=tq)
        await h.signal(Waits.release)
        assert await h.result() == "released"
    forget_store(fresh.url)
    client = await Client.connect(fresh.url)
    assert (await client.get_workflow_handle(h.id).describe()).status == WorkflowExecutionStatus.COMPLETED


# --------------------------------------------------------------------------- private files


async def test_embedded_files_and_directories_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "store"  # neither exists yet
    url = f"sqlite:///{directory}"
    old = os.umask(0o022)  # a common umask, which leaves files readable by everyone
    try:
        client = await Client.connect(url)
        tq = f"tq-{uid()}"
        async with _worker(client, tq):
            h = await client.start_workflow(Waits.run, id=f"p-{uid()}", task_queue=tq)
            await h.signal(Waits.release)
            assert await h.result() == "released"
        store = get_store(url)
        ns_file = store.sqlite_path("default")
        names = {p.name for p in directory.iterdir()}
        assert {ns_file.name, f"{ns_file.name}-wal", f"{ns_file.name}-shm", "catalog.sqlite"} <= names
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
        assert all(m == 0o600 for m in modes.values()), {k: oct(v) for k, v in modes.items()}
        for d in (directory, directory.parent):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    finally:
        os.umask(old)
        forget_store(url)
