"""Namespaces are registered before use, as on Temporal, on Postgres and SQLite.

``default`` exists from the start; any other name is registered by the RegisterNamespace RPC,
``dbosify namespace create``, ``DBOSIFY_NAMESPACES`` or a dev server's ``--namespace``. Using
one that is not registered is NOT_FOUND (``NamespaceNotFoundFailure``), a worker on it fails
validation at once, and neither writes anything to the database.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.errordetails.v1 import NamespaceNotFoundFailure
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    ListNamespacesRequest,
    RegisterNamespaceRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from dbosify._store import forget_store, get_store


@workflow.defn
class Hello:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"Hello, {name}!"


def uid() -> str:
    return uuid.uuid4().hex[:10]


def _pg_schemas(pg_url: str, server: str) -> list[str]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s ORDER BY 1",
            (f"dbosify\\_{server}\\_%",),
        ).fetchall()
    return [str(r[0]) for r in rows]


class Fresh:
    """A store no test has used: a new SQLite directory, or an isolated server's schemas in the
    test Postgres database (dropped afterwards)."""

    def __init__(self, db_url: str, tmp: Path) -> None:
        self.pg = db_url.startswith("postgres")
        self.server = uuid.uuid4().hex[:10]
        if self.pg:
            sep = "&" if "?" in db_url else "?"
            self.base = db_url
            self.url = f"{db_url}{sep}dbosify_server={self.server}"
        else:
            self.dir = tmp / "store"
            self.url = f"sqlite:///{self.dir}"

    def written(self) -> list[str]:
        """What the store has in the database: its schemas, or its directory's files."""
        if self.pg:
            return _pg_schemas(self.base, self.server)
        return sorted(p.name for p in self.dir.iterdir()) if self.dir.exists() else []

    def catalog(self) -> list[str]:
        """The names in the catalog."""
        if self.pg:
            import psycopg

            with psycopg.connect(self.base, autocommit=True) as conn:
                rows = conn.execute(
                    f'SELECT name FROM "dbosify_{self.server}_catalog".namespaces ORDER BY 1'
                ).fetchall()
            return [str(r[0]) for r in rows]
        conn = sqlite3.connect(self.dir / "catalog.sqlite")
        try:
            return [str(r[0]) for r in conn.execute("SELECT name FROM namespaces ORDER BY 1")]
        finally:
            conn.close()

    def close(self) -> None:
        store = forget_store(self.url)
        if self.pg:
            (store or get_store(self.url)).drop_server()


@pytest.fixture
def fresh(db_url: str, tmp_path: Path) -> Iterator[Fresh]:
    f = Fresh(db_url, tmp_path)
    try:
        yield f
    finally:
        f.close()


def _assert_not_found(err: RPCError, name: str) -> None:
    assert err.status == RPCStatusCode.NOT_FOUND, err
    assert err.message.startswith(f"Namespace {name} is not found."), err.message
    assert "dbosify namespace create" in err.message  # the hint: how to register it
    detail = err.grpc_status.details[0]
    assert detail.Is(NamespaceNotFoundFailure.DESCRIPTOR)
    failure = NamespaceNotFoundFailure()
    detail.Unpack(failure)
    assert failure.namespace == name


def _worker(client: Client, tq: str) -> Worker:
    return Worker(client, task_queue=tq, workflows=[Hello], workflow_runner=UnsandboxedWorkflowRunner())


async def _runs_a_workflow(client: Client) -> None:
    tq = f"tq-{uid()}"
    async with _worker(client, tq):
        assert await client.execute_workflow(Hello.run, "ns", id=f"wf-{uid()}", task_queue=tq) == "Hello, ns!"


# --------------------------------------------------------------------------- not registered


async def test_an_unregistered_namespace_is_not_found_and_nothing_is_written(fresh: Fresh) -> None:
    name = f"nope-{uid()}"
    client = await Client.connect(fresh.url, namespace=name)
    calls = {
        "start": lambda: client.start_workflow(Hello.run, "x", id="wf", task_queue="tq"),
        "signal": lambda: client.get_workflow_handle("wf").signal("anything"),
        "describe": lambda: client.get_workflow_handle("wf").describe(),
        "count": lambda: client.count_workflows(),
        "describe_namespace": lambda: client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=name)
        ),
    }
    for what, call in calls.items():
        with pytest.raises(RPCError) as err:
            await call()
        _assert_not_found(err.value, name)
        assert fresh.written() == [], what
    with pytest.raises(RPCError) as err:
        [w async for w in client.list_workflows()]
    _assert_not_found(err.value, name)
    listed = await client.workflow_service.list_namespaces(ListNamespacesRequest())
    assert [n.namespace_info.name for n in listed.namespaces] == ["default"]
    assert fresh.written() == []


async def test_a_worker_on_an_unregistered_namespace_fails_validation(fresh: Fresh) -> None:
    name = f"nope-{uid()}"
    client = await Client.connect(fresh.url, namespace=name)
    with pytest.raises(RuntimeError) as err:
        await asyncio.wait_for(_worker(client, f"tq-{uid()}").run(), 30)
    assert str(err.value).startswith("Worker validation failed: "), err.value
    assert f"Namespace {name} is not found." in str(err.value)
    assert fresh.written() == []  # the worker registered nothing before it failed
    # Once registered, the same client's worker runs.
    await client.workflow_service.register_namespace(RegisterNamespaceRequest(namespace=name))
    await _runs_a_workflow(client)


# --------------------------------------------------------------------------- registering


async def test_register_namespace_rpc_then_already_exists(fresh: Fresh) -> None:
    name = f"team-a.prod-{uid()}"
    client = await Client.connect(fresh.url, namespace=name)
    await client.workflow_service.register_namespace(RegisterNamespaceRequest(namespace=name))
    assert fresh.catalog() == [name]
    await _runs_a_workflow(client)
    with pytest.raises(RPCError) as err:
        await client.workflow_service.register_namespace(RegisterNamespaceRequest(namespace=name))
    assert err.value.status == RPCStatusCode.ALREADY_EXISTS
    assert err.value.message == "Namespace already exists."
    described = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=name))
    assert described.namespace_info.name == name
    listed = await client.workflow_service.list_namespaces(ListNamespacesRequest())
    assert [n.namespace_info.name for n in listed.namespaces] == sorted(["default", name])
    # Another process (here: a store of its own) sees the registration.
    forget_store(fresh.url)
    again = await Client.connect(fresh.url, namespace=name)
    assert (await again.count_workflows()).count == 1
    # An empty name is refused as Temporal refuses it.
    with pytest.raises(RPCError) as err:
        await client.workflow_service.register_namespace(RegisterNamespaceRequest(namespace=""))
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT


async def test_default_needs_no_registration(fresh: Fresh) -> None:
    client = await Client.connect(fresh.url)  # namespace "default"
    described = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
    assert described.namespace_info.name == "default"
    await _runs_a_workflow(client)
    assert fresh.catalog() == ["default"]
    with pytest.raises(RPCError) as err:
        await client.workflow_service.register_namespace(RegisterNamespaceRequest(namespace="default"))
    assert err.value.status == RPCStatusCode.ALREADY_EXISTS


async def test_dbosify_namespaces_registers_at_connect(
    fresh: Fresh, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = f"a-{uid()}", f"b-{uid()}"
    monkeypatch.setenv("DBOSIFY_NAMESPACES", f"{a}, {b},")
    client = await Client.connect(fresh.url, namespace=b)
    assert fresh.catalog() == sorted([a, b])
    await _runs_a_workflow(client)
    # Registered already: a second connect (another process would too) is no error.
    forget_store(fresh.url)
    other = await Client.connect(fresh.url, namespace=a)
    await _runs_a_workflow(other)
    monkeypatch.setenv("DBOSIFY_NAMESPACES", "ok," + "x" * 1001)  # longer than Temporal allows
    forget_store(fresh.url)
    with pytest.raises(ValueError, match="DBOSIFY_NAMESPACES"):
        await Client.connect(fresh.url, namespace=a)
    assert "ok" not in fresh.catalog()  # none is registered when one of them cannot be


async def test_dbosify_namespace_create_and_list(fresh: Fresh) -> None:
    name = f"cli-{uid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOSIFY_")}

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbosify", "namespace", *args, "--db", fresh.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    rc, out, err = await cli("create", name)
    assert rc == 0 and out.strip() == f"Registered namespace {name}.", (rc, out, err)
    rc, out, err = await cli("create", name)
    assert rc == 1 and "Namespace already exists." in err, (rc, out, err)
    rc, out, err = await cli("list")
    assert rc == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == sorted(["default", name])
    client = await Client.connect(fresh.url, namespace=name)
    await _runs_a_workflow(client)


# --------------------------------------------------------------------------- environments


async def test_start_local_registers_its_namespaces(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from temporalio.testing import WorkflowEnvironment

    monkeypatch.setenv("DBOSIFY_DATABASE_URL", db_url)
    mine, extra = f"env-{uid()}", f"extra-{uid()}"
    async with await WorkflowEnvironment.start_local(
        namespace=mine, dev_server_extra_args=["--namespace", extra]
    ) as env:
        assert env.client.namespace == mine
        await _runs_a_workflow(env.client)
        target = env.client.service_client.config.target_host
        other = await Client.connect(target, namespace=extra)
        await _runs_a_workflow(other)
        unknown = await Client.connect(target, namespace=f"nope-{uid()}")
        with pytest.raises(RPCError) as err:
            await unknown.count_workflows()
        assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_the_time_skipping_environment_accepts_any_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the Java test server does (it does not check namespaces)."""
    from temporalio.testing import WorkflowEnvironment

    monkeypatch.setenv("DBOSIFY_DATABASE_URL", f"sqlite:///{tmp_path}")
    async with await WorkflowEnvironment.start_time_skipping() as env:
        target = env.client.service_client.config.target_host
        client = await Client.connect(target, namespace=f"any-{uid()}")
        assert (await client.count_workflows()).count == 0
