"""Namespaces and the versioned schema of their tables, on Postgres and SQLite.

- Names that differ only in case or punctuation are different, isolated namespaces.
- A database written by the release before versioning is upgraded in place, data intact.
- A database written by a newer dbosify is refused, naming both versions.
- A process that finds its namespace up to date runs no DDL, so it starts even while busy
  writers hold their locks; worker processes joining a busy database all start.
- Invalid names are refused as Temporal refuses them (INVALID_ARGUMENT).
- A ``WorkflowEnvironment.start_local()`` store goes when the environment shuts down.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
import textwrap
import time
import uuid
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import new_namespace, register_namespace
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from dbosify._store import migrations, namespaces
from dbosify._store.store import Store, get_store


@workflow.defn
class Echo:
    @workflow.run
    async def run(self, value: str) -> str:
        return value


def uid() -> str:
    return uuid.uuid4().hex[:10]


def is_pg(url: str) -> bool:
    return url.startswith("postgres")


def sqlite_dir(url: str) -> Path:
    return Path("/" + url.split(":", 1)[1].lstrip("/"))


def another_store_url(url: str) -> str:
    """The same database under another URL: a `Store` of its own in this process, so nothing
    this process already knows about the database (cached namespaces, open files) is reused."""
    if is_pg(url):
        return url + ("&" if "?" in url else "?") + f"application_name=t{uid()}"
    return "sqlite://///" + str(sqlite_dir(url)).lstrip("/")


def legacy_safe(name: str) -> str:
    """How the release before the catalog turned a namespace name into a schema or file name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name).lower()


@asynccontextmanager
async def running_worker(client: Client, tq: str) -> AsyncIterator[Worker]:
    async with Worker(
        client, task_queue=tq, workflows=[Echo], workflow_runner=UnsandboxedWorkflowRunner()
    ) as w:
        yield w


@contextmanager
def pg_conn(url: str, autocommit: bool = True) -> Iterator[Any]:
    import psycopg

    conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def drop_pg(url: str, *names: str) -> None:
    """Tidy the shared test database: the namespaces' schemas and catalog rows."""
    store = Store(url)
    try:
        for name in names:
            store.drop_namespace(name)
    finally:
        store.close()


# --------------------------------------------------------------------------- isolation


async def test_names_differing_in_case_and_punctuation_are_isolated(db_url: str) -> None:
    sfx = uid()
    dotted, underscored = f"team-a.prod-{sfx}", f"Team_A_Prod_{sfx}"
    assert legacy_safe(dotted) == legacy_safe(underscored)  # one schema in the old release
    a = await Client.connect(db_url, namespace=register_namespace(db_url, dotted))
    b = await Client.connect(db_url, namespace=register_namespace(db_url, underscored))
    try:
        handle = await a.start_workflow("Unserved", id="wf", task_queue="nobody")
        assert [w.id async for w in a.list_workflows()] == ["wf"]
        assert [w.id async for w in b.list_workflows()] == []
        assert (await a.count_workflows()).count == 1
        assert (await b.count_workflows()).count == 0
        assert (await a.get_workflow_handle("wf").describe()).run_id == handle.result_run_id
        with pytest.raises(RPCError) as err:
            await b.get_workflow_handle("wf").describe()
        assert err.value.status == RPCStatusCode.NOT_FOUND
        # The same workflow id is free in the other namespace.
        other = await b.start_workflow("Unserved", id="wf", task_queue="nobody")
        assert other.result_run_id != handle.result_run_id
        assert (await a.count_workflows()).count == 1
    finally:
        if is_pg(db_url):
            drop_pg(db_url, dotted, underscored)


async def test_long_colliding_names_in_an_isolated_server_get_usable_schemas(db_url: str) -> None:
    """The longest schema name given to a namespace still fits Postgres' 63-byte identifiers
    (it is also the namespace's NOTIFY channel), with the longest isolated-server id."""
    if not is_pg(db_url):
        pytest.skip("Postgres: identifier length")
    server = uuid.uuid4().hex[:16]  # the longest id an isolated server may have
    url = db_url + ("&" if "?" in db_url else "?") + f"dbosify_server={server}"
    names = ["Team-A.Production-Orders-Europe-West", "team_a_production_orders_europe_west"]
    try:
        for name in names:
            client = await Client.connect(url, namespace=register_namespace(url, name))
            await client.start_workflow("Unserved", id="wf", task_queue="nobody")
            assert (await client.count_workflows()).count == 1
        idents = {get_store(url).ident(n) for n in names}
        assert len(idents) == 2 and all(len(i) <= 63 for i in idents), idents
    finally:
        get_store(url).drop_server()


# --------------------------------------------------------------------------- upgrade in place


def _copy_runs(conn: Any, src: str, dst: str, columns: dict[str, list[str]]) -> None:
    """Copy every run and its history between two namespaces' tables in one database; only
    the columns the destination (the old layout) has."""
    for table in ("executions", "history"):
        cols = ", ".join(columns[table])
        conn.execute(f"INSERT INTO {dst}{table} ({cols}) SELECT {cols} FROM {src}{table}")


def _pg_columns(conn: Any, schema: str) -> dict[str, list[str]]:
    return {
        table: [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            )
        ]
        for table in ("executions", "history")
    }


def _sqlite_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    return {
        table: [r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")]
        for table in ("executions", "history")
    }


async def test_a_database_of_the_release_before_versioning_is_upgraded_in_place(
    db_url: str, tmp_path: Path
) -> None:
    """The old layout is built with the version-1 DDL under the old naming, holding a completed
    and a running run (copied from runs this code made); then the current code opens it."""
    # Two runs, made by this code in a scratch namespace: one completed, one left running.
    scratch_url = db_url if is_pg(db_url) else f"sqlite:///{tmp_path / 'scratch'}"
    scratch_ns = register_namespace(scratch_url, f"scratch-{uid()}")
    scratch = await Client.connect(scratch_url, namespace=scratch_ns)
    tq = f"tq-{uid()}"
    async with running_worker(scratch, tq):
        assert await scratch.execute_workflow(Echo.run, "done", id="finished", task_queue=tq) == (
            "done"
        )
    await scratch.start_workflow(Echo.run, "later", id="running", task_queue=tq)
    scratch_store = get_store(scratch_url)

    name = f"Legacy.App-{uid()}"
    if is_pg(db_url):
        # An isolated server of its own: a database with no catalog at all, as that release left it.
        server = uid()
        url = db_url + ("&" if "?" in db_url else "?") + f"dbosify_server={server}"
        schema = f"dbosify_{server}_ns_{legacy_safe(name)}"
        with pg_conn(db_url, autocommit=False) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.execute(f'SET LOCAL search_path TO "{schema}"')
            for stmt in migrations._V1.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            columns = _pg_columns(conn, schema)
            assert "claim_gen" not in columns["executions"]
            _copy_runs(conn, f'"{scratch_store.ident(scratch_ns)}".', f'"{schema}".', columns)
            conn.commit()
    else:
        url = db_url
        directory = sqlite_dir(db_url)
        directory.mkdir(parents=True, exist_ok=True)
        assert not (directory / "catalog.sqlite").exists()
        path = directory / f"dbosify_ns_{legacy_safe(name)}.sqlite"
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN")
            for stmt in (*migrations._V1.split(";"), migrations._V1_SQLITE_NOTICES):
                if stmt.strip():
                    conn.execute(stmt.replace("BYTEA", "BLOB"))
            columns = _sqlite_columns(conn)
            assert "claim_gen" not in columns["executions"]
            conn.execute("COMMIT")
            conn.execute("ATTACH DATABASE ? AS scratch", (str(scratch_store.sqlite_path(scratch_ns)),))
            _copy_runs(conn, "scratch.", "main.", columns)
            conn.execute("DETACH DATABASE scratch")
            assert conn.execute("PRAGMA user_version").fetchone() == (0,)
        finally:
            conn.close()

    try:
        # Not registered: a schema (file) of the release before the catalog is adopted by its name.
        client = await Client.connect(url, namespace=name)
        finished = await client.get_workflow_handle("finished").describe()
        assert finished.status == WorkflowExecutionStatus.COMPLETED
        assert await client.get_workflow_handle("finished").result() == "done"
        running = await client.get_workflow_handle("running").describe()
        assert running.status == WorkflowExecutionStatus.RUNNING
        assert sorted([w.id async for w in client.list_workflows()]) == ["finished", "running"]
        # The running run goes on where it was, on the upgraded tables.
        async with running_worker(client, tq):
            assert await client.get_workflow_handle("running").result() == "later"

        if is_pg(db_url):
            with pg_conn(db_url) as conn:
                row = conn.execute(
                    f'SELECT ident, schema_version FROM "dbosify_{server}_catalog".namespaces'
                    " WHERE name = %s",
                    (name,),
                ).fetchone()
                assert row == (schema, migrations.CURRENT_VERSION)
                columns = _pg_columns(conn, schema)
        else:
            catalog = sqlite3.connect(directory / "catalog.sqlite")
            try:
                row = catalog.execute(
                    "SELECT ident FROM namespaces WHERE name = ?", (name,)
                ).fetchone()
            finally:
                catalog.close()
            assert row == (path.stem,)
            conn = sqlite3.connect(path)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                columns = _sqlite_columns(conn)
            finally:
                conn.close()
            assert version == migrations.CURRENT_VERSION
        assert "claim_gen" in columns["executions"]
    finally:
        if is_pg(db_url):
            store = get_store(url)
            store.drop_server()
            drop_pg(db_url, scratch_ns)


# --------------------------------------------------------------------------- newer schema


async def test_a_namespace_written_by_a_newer_dbosify_is_refused(db_url: str) -> None:
    name = f"newer-{uid()}"
    setup = Store(db_url)
    try:
        setup.register_namespace(name)
        ident = setup.ident(name)
        setup.transact_sync(name, lambda tx: tx.one("SELECT count(*) FROM executions"))
        newer = migrations.CURRENT_VERSION + 1
        if setup.is_sqlite:
            conn = sqlite3.connect(setup.sqlite_path(name))
            try:
                conn.execute(f"PRAGMA user_version = {newer}")
                conn.commit()
            finally:
                conn.close()
        else:
            with pg_conn(db_url) as conn:
                conn.execute(
                    f'UPDATE "{namespaces.catalog_schema(None)}".namespaces'
                    " SET schema_version = %s WHERE name = %s",
                    (newer, name),
                )
    finally:
        setup.close()
    try:
        client = await Client.connect(another_store_url(db_url), namespace=name)
        with pytest.raises(RPCError) as err:
            await client.start_workflow("Unserved", id="wf", task_queue="nobody")
        message = str(err.value)
        assert f"schema version {newer}" in message, message
        assert f"up to {migrations.CURRENT_VERSION}" in message, message
        assert ident in message or name in message, message
    finally:
        if is_pg(db_url):
            with pg_conn(db_url) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{ident}" CASCADE')
                conn.execute(
                    f'DELETE FROM "{namespaces.catalog_schema(None)}".namespaces WHERE name = %s',
                    (name,),
                )


# --------------------------------------------------------------------------- no DDL at start

WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys

    from temporalio import workflow
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker


    @workflow.defn
    class Echo:
        @workflow.run
        async def run(self, value: str) -> str:
            return value


    async def main() -> None:
        url, namespace, tq = sys.argv[1:4]
        client = await Client.connect(url, namespace=namespace)
        async with Worker(
            client, task_queue=tq, workflows=[Echo], workflow_runner=UnsandboxedWorkflowRunner()
        ):
            result = await client.execute_workflow(Echo.run, tq, id=tq, task_queue=tq)
        assert result == tq, result
        print("ok", result, flush=True)


    asyncio.run(main())
    """
)


async def worker_process(tmp_path: Path, url: str, namespace: str, tq: str) -> Process:
    """A new process: connects, runs a worker, executes one workflow on ``tq``, exits 0."""
    script = tmp_path / "worker_app.py"
    if not script.exists():
        script.write_text(WORKER_SCRIPT)
    env = dict(os.environ)
    env.pop("DBOSIFY_DATABASE_URL", None)
    env.update(DBOSIFY_ACTIVATE="1", DBOSIFY_HOME=str(tmp_path / "home"))
    return await asyncio.create_subprocess_exec(
        sys.executable, str(script), url, namespace, tq,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )


async def wait_process(proc: Process, timeout: float) -> tuple[int, str]:
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace") + f"\n(killed after {timeout} s)"
    return int(proc.returncode or 0), out.decode(errors="replace")


async def test_an_up_to_date_postgres_namespace_starts_while_writers_hold_their_locks(
    db_url: str, tmp_path: Path
) -> None:
    if not is_pg(db_url):
        pytest.skip("Postgres: table locks (SQLite: see the traced test below)")
    name = register_namespace(db_url, f"busy-{uid()}")
    client = await Client.connect(db_url, namespace=name)
    await client.count_workflows()  # registered, at the current version
    ident = get_store(db_url).ident(name)
    try:
        with pg_conn(db_url, autocommit=False) as writer:
            # What a busy writer holds; any DDL on these tables would wait for it to commit.
            writer.execute(
                f'LOCK TABLE "{ident}".executions, "{ident}".history IN ROW EXCLUSIVE MODE'
            )
            started = time.monotonic()
            proc = await worker_process(tmp_path, db_url, name, f"tq-{uid()}")
            code, out = await wait_process(proc, 15)
            elapsed = time.monotonic() - started
            writer.rollback()
        assert code == 0, f"worker process failed or hung ({elapsed:.1f} s):\n{out}"
    finally:
        drop_pg(db_url, name)


async def test_an_up_to_date_sqlite_namespace_runs_no_ddl_at_start(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if is_pg(db_url):
        pytest.skip("SQLite: statements traced (Postgres: see the table-lock test above)")
    name = f"quiet-{uid()}"
    tq = f"tq-{uid()}"
    setup_url = another_store_url(db_url)
    setup = await Client.connect(setup_url, namespace=register_namespace(setup_url, name))
    async with running_worker(setup, tq):
        assert await setup.execute_workflow(Echo.run, "first", id="first", task_queue=tq) == (
            "first"
        )

    statements: list[str] = []
    real_connect = sqlite3.connect

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    # A new store on the same directory, as a new process would open it.
    client = await Client.connect(db_url, namespace=name)
    async with running_worker(client, tq):
        assert await client.execute_workflow(Echo.run, "again", id="again", task_queue=tq) == (
            "again"
        )
    assert statements, "the trace saw nothing"
    ddl = [s for s in statements if re.match(r"\s*(CREATE|ALTER|DROP)\b", s, re.IGNORECASE)]
    assert ddl == [], ddl

    # The trace does see DDL where there is some to run: a namespace new to the directory.
    fresh = await Client.connect(db_url, namespace=new_namespace(db_url, "new-"))
    await fresh.count_workflows()
    assert any(re.match(r"\s*CREATE\b", s, re.IGNORECASE) for s in statements)


async def test_workers_joining_a_busy_postgres_database_all_start(
    db_url: str, tmp_path: Path
) -> None:
    if not is_pg(db_url):
        pytest.skip("Postgres: several processes writing at once")
    name = register_namespace(db_url, f"join-{uid()}")
    client = await Client.connect(db_url, namespace=name)
    load_tq = f"load-{uid()}"
    stop = asyncio.Event()
    done = 0

    async def load() -> None:
        nonlocal done
        while not stop.is_set():
            await client.execute_workflow(Echo.run, "x", id=f"load-{uid()}", task_queue=load_tq)
            done += 1

    try:
        async with running_worker(client, load_tq):
            loads = [asyncio.create_task(load()) for _ in range(4)]
            try:
                while done < 4:  # the load is running
                    await asyncio.sleep(0.05)
                procs = []
                for i in range(8):
                    procs.append(await worker_process(tmp_path, db_url, name, f"join-{i}-{uid()}"))
                    await asyncio.sleep(0.4)
                results = await asyncio.gather(*(wait_process(p, 30) for p in procs))
            finally:
                stop.set()
                await asyncio.gather(*loads)
        failed = [(i, code, out) for i, (code, out) in enumerate(results) if code != 0]
        assert not failed, "\n\n".join(f"worker {i} exited {c}:\n{o}" for i, c, o in failed)
        assert done >= 8
    finally:
        drop_pg(db_url, name)


# --------------------------------------------------------------------------- invalid names


async def test_invalid_namespace_names_are_refused_as_temporal_refuses_them(db_url: str) -> None:
    cases = [
        ("x" * (namespaces.MAX_NAME_LENGTH + 1), "Namespace length exceeds limit."),
        ("é" * (namespaces.MAX_NAME_LENGTH // 2 + 1), "Namespace length exceeds limit."),
        ("", "Namespace not set on request."),
        ("bad\x00name", "Namespace contains a NUL character, which cannot be stored."),
    ]
    for name, message in cases:
        client = await Client.connect(db_url, namespace=name)
        with pytest.raises(RPCError) as err:
            await client.start_workflow("Unserved", id="wf", task_queue="nobody")
        assert err.value.status == RPCStatusCode.INVALID_ARGUMENT, (name[:20], err.value)
        assert err.value.message == message
    # The longest name Temporal accepts works, and is told apart from one a byte shorter.
    longest = uid() + "n" * (namespaces.MAX_NAME_LENGTH - 10)
    shorter = longest[:-1]
    long_client = await Client.connect(db_url, namespace=register_namespace(db_url, longest))
    shorter_client = await Client.connect(db_url, namespace=register_namespace(db_url, shorter))
    try:
        await long_client.start_workflow("Unserved", id="wf", task_queue="nobody")
        assert (await long_client.count_workflows()).count == 1
        assert (await shorter_client.count_workflows()).count == 0
    finally:
        if is_pg(db_url):
            drop_pg(db_url, longest, shorter)


# --------------------------------------------------------------------------- start_local


@pytest.mark.parametrize("configured", [False, True])
async def test_a_start_local_sqlite_store_goes_when_the_environment_shuts_down(
    configured: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from temporalio.testing import WorkflowEnvironment

    base = tmp_path / "configured"
    if configured:
        monkeypatch.setenv("DBOSIFY_DATABASE_URL", f"sqlite:///{base}")
        (base / "keep.txt").parent.mkdir(parents=True)
        (base / "keep.txt").write_text("not the environment's")
    else:
        monkeypatch.delenv("DBOSIFY_DATABASE_URL", raising=False)
    tq = f"tq-{uid()}"
    async with await WorkflowEnvironment.start_local() as env:
        target = env.client.service_client.config.target_host
        directory = sqlite_dir(target)
        async with running_worker(env.client, tq):
            assert await env.client.execute_workflow(Echo.run, "hi", id="wf", task_queue=tq) == "hi"
        assert any(p.suffix == ".sqlite" for p in directory.iterdir())
        if configured:
            assert directory.parent == base
    assert not directory.exists()
    if configured:
        assert [p.name for p in base.iterdir()] == ["keep.txt"]
