"""DBOS both ways: a run's steps in DBOS's tools, and DBOS's send and enqueue (from its client,
in another process, and from SQL on Postgres) signal and start Temporal runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from dbos import DBOSClient
    from dbos_support import dbos, dbos_url  # noqa: F401  (dbos: the fixture)

    from dbosify._store import get_store
    from dbosify._store.dbos_inbound_triggers import queue_name


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


@workflow.defn
class Child:
    @workflow.run
    async def run(self, n: int) -> int:
        return n + 1


@workflow.defn
class Steps:
    @workflow.run
    async def run(self, text: str) -> str:
        a = await workflow.execute_activity(shout, text, start_to_close_timeout=timedelta(seconds=10))
        b = await workflow.execute_local_activity(shout, "local", start_to_close_timeout=timedelta(seconds=10))
        await workflow.sleep(0.01)
        c = await workflow.execute_child_workflow(Child.run, 1, id=f"{workflow.info().workflow_id}-child")
        return f"{a} {b} {c}"


@workflow.defn
class Inbox:
    def __init__(self) -> None:
        self.got: list[Any] = []

    @workflow.signal
    def note(self, message: Any) -> None:
        self.got.append(message)

    @workflow.run
    async def run(self, want: int) -> list[Any]:
        await workflow.wait_condition(lambda: len(self.got) >= want)
        return self.got


@workflow.defn
class Greet:
    @workflow.run
    async def run(self, name: str, punct: str) -> str:
        return f"hello {name}{punct}"


WORKFLOWS = [Steps, Child, Inbox, Greet]




def in_process(client: Client, code: str) -> subprocess.CompletedProcess[str]:
    """DBOS's client in a process of its own (``c`` is it)."""
    url, schema = dbos_url(client)
    head = (
        "from dbos import DBOSClient\n"
        f"c = DBOSClient(system_database_url={url!r}"
        + (f", dbos_system_schema={schema!r}" if schema else "") + ")\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DBOSIFY_ACTIVATE"}
    return subprocess.run(
        [sys.executable, "-c", head + code + "\nc.destroy()\n"],
        capture_output=True, text=True, timeout=60, env=env,
    )


async def test_steps_in_dbos_cli_and_client(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    wid = f"steps/{uuid.uuid4().hex[:6]}"  # a '/' in the ID: quoted in the DBOS ID
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        h = await client.start_workflow(Steps.run, "hi", id=wid, task_queue=tq)
        assert await h.result() == "HI LOCAL 2"
    dbos_id = f"{client.namespace}/{wid.replace('/', '%2F')}/{h.result_run_id}"
    url, schema = dbos_url(client)
    extra = ["--schema", schema] if schema else []
    out = subprocess.run(
        [str(Path(sys.executable).with_name("dbos")), "workflow", "steps", dbos_id, "-s", url, *extra],
        capture_output=True, text=True, timeout=60, check=True,
    )
    listed = json.loads(out.stdout)
    names = [s["function_name"] for s in listed]
    assert names == ["shout", "local_activity", "sleep", "Child"], listed
    ids = [s["function_id"] for s in listed]
    assert ids == sorted(ids) and len(set(ids)) == 4
    steps = await asyncio.to_thread(dbos.list_workflow_steps, dbos_id)
    by_name = {s["function_name"]: s for s in steps}
    assert by_name["shout"]["output"] == "HI"
    assert by_name["local_activity"]["output"] == "LOCAL"
    assert by_name["Child"]["output"] == 2
    child = (await client.get_workflow_handle(f"{wid}-child").describe()).run_id
    assert by_name["Child"]["child_workflow_id"] == f"{client.namespace}/{wid.replace('/', '%2F')}-child/{child}"
    for s in steps:
        assert s["started_at_epoch_ms"] and (s["completed_at_epoch_ms"] or 0) >= s["started_at_epoch_ms"], s
    # Each step is the command's first event: fork --step N resets to the task that gave it.
    history = await h.fetch_history()
    first = {e.event_id: e for e in history.events}
    assert first[by_name["shout"]["function_id"]].HasField("activity_task_scheduled_event_attributes")


async def test_dbos_send_is_a_signal(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        h = await client.start_workflow(Inbox.run, 2, id=f"in-{uuid.uuid4().hex[:6]}", task_queue=tq)
        dbos_id = f"{client.namespace}/{h.id}/{h.result_run_id}"
        await asyncio.to_thread(dbos.send, dbos_id, {"n": 1}, "note")
        sent = in_process(client, f"c.send({dbos_id!r}, 'two', 'note')")
        assert sent.returncode == 0, sent.stderr
        assert await asyncio.wait_for(h.result(), 10) == [{"n": 1}, "two"]
        history = await h.fetch_history()
        signals = [
            e.workflow_execution_signaled_event_attributes for e in history.events
            if e.HasField("workflow_execution_signaled_event_attributes")
        ]
        assert [s.signal_name for s in signals] == ["note", "note"]  # each delivered once
        # A closed run takes no signal (Temporal: "workflow execution already completed").
        with pytest.raises(Exception, match="already completed"):
            await asyncio.to_thread(dbos.send, dbos_id, "late", "note")
        # A message with no topic is refused: a signal needs a name.
        h2 = await client.start_workflow(Inbox.run, 1, id=f"in-{uuid.uuid4().hex[:6]}", task_queue=tq)
        with pytest.raises(Exception, match="topic"):
            await asyncio.to_thread(dbos.send, f"{client.namespace}/{h2.id}/{h2.result_run_id}", "x")
        await h2.terminate()


async def test_dbos_enqueue_starts_a_run(client: Client, dbos: DBOSClient) -> None:
    from dbos import EnqueueOptions

    tq = f"tq-{uuid.uuid4().hex[:8]}"
    q = queue_name(client.namespace, tq)
    wid = f"greet-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        # The namespace in use (its DBOS tables are set up with its first use).
        assert await client.execute_workflow(Greet.run, args=["x", "."], id=f"g-{wid}", task_queue=tq)
        opts: EnqueueOptions = {"workflow_name": "Greet", "queue_name": q, "workflow_id": wid}
        await asyncio.to_thread(dbos.enqueue, opts, "ann", "!")
        h = client.get_workflow_handle(wid)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await h.result() == "hello ann!"
                break
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        run_id = (await h.describe()).run_id
        # The enqueue's own row is closed with the run's outcome, beside the run's own row.
        rows = await asyncio.to_thread(dbos.list_workflows, workflow_ids=[wid])
        assert [r.status for r in rows] == ["SUCCESS"]
        run_row = await asyncio.to_thread(dbos.list_workflows, workflow_ids=[f"{client.namespace}/{wid}/{run_id}"])
        assert run_row and run_row[0].status == "SUCCESS"
        # From another process too.
        wid2 = f"greet-{uuid.uuid4().hex[:6]}"
        code = (
            f"c.enqueue({{'workflow_name': 'Greet', 'queue_name': {q!r}, 'workflow_id': {wid2!r}}},"
            " 'bo', '?')"
        )
        got = in_process(client, code)
        assert got.returncode == 0, got.stderr
        h2 = client.get_workflow_handle(wid2)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await h2.result() == "hello bo?"
                break
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        # A running workflow ID is refused in the caller's transaction (Temporal's default policy).
        h3 = await client.start_workflow(Inbox.run, 1, id=f"in-{uuid.uuid4().hex[:6]}", task_queue=tq)
        with pytest.raises(Exception, match="already running"):
            await asyncio.to_thread(dbos.enqueue, {**opts, "workflow_id": h3.id}, "x", "y")
        await h3.terminate()


async def test_sql_send_and_enqueue_in_the_callers_transaction(client: Client) -> None:
    store = get_store(client.service_client.config.target_host)
    if store.is_sqlite:
        pytest.skip("DBOS's SQL functions exist on Postgres only")
    import psycopg

    url, schema = dbos_url(client)
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    wid = f"greet-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        h = await client.start_workflow(Inbox.run, 1, id=f"in-{uuid.uuid4().hex[:6]}", task_queue=tq)
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TEMP TABLE orders (id int)")
            conn.execute("INSERT INTO orders VALUES (1)")  # the application's own write
            conn.execute(
                f'SELECT "{schema}".send_message(%s, %s::json, %s)',
                (f"{client.namespace}/{h.id}/{h.result_run_id}", json.dumps({"order": 1}), "note"),
            )
            conn.execute(
                f'SELECT "{schema}".enqueue_workflow(workflow_name => %s, queue_name => %s,'
                " positional_args => ARRAY[%s::json, %s::json], workflow_id => %s)",
                ("Greet", queue_name(client.namespace, tq), '"sql"', '"."', wid),
            )
            await asyncio.sleep(0.3)
            assert (await h.describe()).status.name == "RUNNING"  # nothing before the commit
        # committed (the connection's context manager)
        assert await asyncio.wait_for(h.result(), 10) == [{"order": 1}]
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await client.get_workflow_handle(wid).result() == "hello sql."
                break
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)


async def test_a_dbos_queue_of_the_same_name_never_takes_the_start(
    client: Client, dbos: DBOSClient, tmp_path: Path
) -> None:
    """A DBOS application that declares the queue and a workflow of the same name, running while
    no worker of ours is, leaves the enqueued start alone; our worker then starts the run."""
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    q = queue_name(client.namespace, tq)
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        await client.execute_workflow(Greet.run, args=["x", "."], id=f"g-{tq}", task_queue=tq)
    wid = f"greet-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(dbos.enqueue, {"workflow_name": "Greet", "queue_name": q, "workflow_id": wid}, "cy", "~")
    url, schema = dbos_url(client)
    config: dict[str, Any] = {"name": "other-app", "system_database_url": url}
    if schema is not None:
        config["dbos_system_schema"] = schema
    taken = tmp_path / "taken"
    script = (
        "import time\nfrom dbos import DBOS\n"
        f"DBOS(config={config!r})\n"
        "@DBOS.workflow(name='Greet')\ndef greet(name, punct):\n"
        f"    open({str(taken)!r}, 'w').write(name)\n    return name\n"
        f"DBOS.launch()\nDBOS.register_queue({q!r}, polling_interval_sec=0.1)\n"
        "time.sleep(3)\nDBOS.destroy()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DBOSIFY_ACTIVATE"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, cwd=str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert not taken.exists()
    row = (await asyncio.to_thread(dbos.list_workflows, workflow_ids=[wid]))[0]
    assert (row.status, row.app_version, row.executor_id) == ("ENQUEUED", "dbosify:start", None)
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        h = client.get_workflow_handle(wid)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await h.result() == "hello cy~"
                break
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)


async def test_a_refused_enqueue_neither_blocks_others_nor_skips_the_limits(
    client: Client, dbos: DBOSClient
) -> None:
    """An enqueue the engine refuses (a 3 KB type name, over Temporal's 1,000 bytes; on Postgres
    also past an index row's size) is ERROR with the reason, and the requests beside it in the
    same worker transaction still start."""
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    q = queue_name(client.namespace, tq)
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        assert await client.execute_workflow(Greet.run, args=["x", "."], id=f"g-{tq}", task_queue=tq)
    # Both enqueued while no worker runs: one worker transaction meets them together.
    bad, good = f"bad-{uuid.uuid4().hex[:6]}", f"good-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(dbos.enqueue, {"workflow_name": "G" * 3000, "queue_name": q, "workflow_id": bad}, 1)
    await asyncio.to_thread(dbos.enqueue, {"workflow_name": "Greet", "queue_name": q, "workflow_id": good}, "ok", "!")
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        h = client.get_workflow_handle(good)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert await h.result() == "hello ok!"
                break
            except RPCError:
                assert time.monotonic() < deadline, "the good request never started"
                await asyncio.sleep(0.05)
    rows = await asyncio.to_thread(dbos.list_workflows, workflow_ids=[bad])
    assert [r.status for r in rows] == ["ERROR"]
    assert "exceeds maximum allowed length" in str(rows[0].error)
    with pytest.raises(RPCError):
        await client.get_workflow_handle(bad).describe()


async def test_a_dbos_queue_with_a_slash_of_another_application_is_left_alone(
    client: Client, dbos: DBOSClient
) -> None:
    """Only a queue that names this namespace (`<namespace>/<task queue>`) is a start of ours: a
    DBOS application's own `jobs/high` keeps its row as DBOS wrote it."""
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        assert await client.execute_workflow(Greet.run, args=["x", "."], id=f"g-{tq}", task_queue=tq)
    wid = f"app-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(
        dbos.enqueue, {"workflow_name": "Greet", "queue_name": "jobs/high", "workflow_id": wid}, "a", "b"
    )
    rows = await asyncio.to_thread(dbos.list_workflows, workflow_ids=[wid])
    assert len(rows) == 1 and rows[0].status == "ENQUEUED" and rows[0].queue_name == "jobs/high"
    assert rows[0].app_version != "dbosify:start"
