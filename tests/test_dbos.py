"""Every run is a DBOS workflow: DBOS's own tools list, inspect, cancel and resume Temporal runs.

On Postgres DBOS's tables are in the same database (schema ``dbos``); on SQLite in the
namespace's file. The tests use DBOS's public client (`DBOSClient`) and its CLI, never our
tables, to look at runs.
"""

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
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, TerminatedError
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from dbos import DBOSClient
    from dbos_support import dbos, dbos_url  # noqa: F401  (dbos: the fixture)

    from dbosify._dbos import records
    from dbosify._store import get_store
    from dbosify._store.dbos_inbound_triggers import queue_name


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


@workflow.defn
class Shout:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10)
        )


@workflow.defn
class Fails:
    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("no luck", type="Unlucky")


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


@workflow.defn
class Hops:
    @workflow.run
    async def run(self, left: int) -> int:
        if left:
            workflow.continue_as_new(left - 1)
        return 42


WORKFLOWS = [Shout, Fails, Waits, Hops]




def find(dbos: DBOSClient, namespace: str, workflow_id: str, run_id: str) -> Any:
    wid = f"{namespace}/{workflow_id}/{run_id}"
    got = [w for w in dbos.list_workflows(workflow_ids=[wid]) if w.workflow_id == wid]
    return got[0] if got else None


async def wait_status(dbos: DBOSClient, ns: str, wid: str, rid: str, status: str) -> Any:
    deadline = time.monotonic() + 10
    while True:
        w = await asyncio.to_thread(find, dbos, ns, wid, rid)
        if w is not None and w.status == status:
            return w
        assert time.monotonic() < deadline, f"DBOS status {w.status if w else None}, not {status}"
        await asyncio.sleep(0.05)


async def test_runs_are_dbos_workflows(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    ns = client.namespace
    # Listed from its start, before any worker claims it.
    h = await client.start_workflow(Shout.run, "hi", id=f"s-{uuid.uuid4().hex[:6]}", task_queue=tq)
    w = find(dbos, ns, h.id, h.result_run_id or "")
    assert w is not None and w.status == "ENQUEUED"
    assert (w.name, w.queue_name, w.app_version) == ("Shout", queue_name(ns, tq), "dbosify")
    assert w.input["args"] == ["hi"] or "hi" in json.dumps(w.input)
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]) as worker:
        assert await h.result() == "HI"
        w = await wait_status(dbos, ns, h.id, h.result_run_id or "", "SUCCESS")
        assert w.output == "HI"
        assert w.executor_id  # the worker that drove it
        f = await client.start_workflow(Fails.run, id=f"f-{uuid.uuid4().hex[:6]}", task_queue=tq)
        with pytest.raises(WorkflowFailureError):
            await f.result()
        w = await wait_status(dbos, ns, f.id, f.result_run_id or "", "ERROR")
        assert "no luck" in str(w.error)
        # Continue-as-new: the first run succeeds, the next one is a workflow of its own.
        c = await client.start_workflow(Hops.run, 1, id=f"c-{uuid.uuid4().hex[:6]}", task_queue=tq)
        assert await c.result() == 42
        first = await wait_status(dbos, ns, c.id, c.result_run_id or "", "SUCCESS")
        assert first is not None
        last = (await c.describe()).run_id
        assert last != c.result_run_id
        await wait_status(dbos, ns, c.id, last, "SUCCESS")
        del worker


async def test_dbos_cancel_terminates_the_run(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        h = await client.start_workflow(Waits.run, id=f"w-{uuid.uuid4().hex[:6]}", task_queue=tq)
        await wait_status(dbos, client.namespace, h.id, h.result_run_id or "", "PENDING")
        began = time.monotonic()
        await asyncio.to_thread(
            dbos.cancel_workflow, f"{client.namespace}/{h.id}/{h.result_run_id}"
        )
        with pytest.raises(WorkflowFailureError) as err:
            await h.result()
        took = time.monotonic() - began
        assert isinstance(err.value.cause, TerminatedError)
        assert took < 1.5, f"the cancel took {took:.2f} s to end the run"
        desc = await h.describe()
        assert desc.status == WorkflowExecutionStatus.TERMINATED
        history = await h.fetch_history()
        reason = history.events[-1].workflow_execution_terminated_event_attributes.reason
        assert "DBOS" in reason
        await wait_status(dbos, client.namespace, h.id, h.result_run_id or "", "CANCELLED")


async def test_dbos_resume_of_a_stuck_run(client: Client, dbos: DBOSClient) -> None:
    """A PENDING run whose owner is gone (here: a worker id that never beats) is recovered at
    once by a DBOS resume, without waiting for the owner's lease to expire."""
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    h = await client.start_workflow(Waits.run, id=f"r-{uuid.uuid4().hex[:6]}", task_queue=tq)
    store = get_store(client.service_client.config.target_host)
    ghost = "elsewhere:1:0000@nowhere"

    def strand(tx: Any) -> None:  # as if a worker on another machine had claimed it and hung
        tx.execute(
            "INSERT INTO workers (worker_id, task_queue, heartbeat_at) VALUES (%s, %s, %s)",
            (ghost, tq, time.time() + 3600),
        )
        tx.execute("UPDATE executions SET owner = %s WHERE run_id = %s", (ghost, h.result_run_id))
        records.on_claim(tx, [(h.id, h.result_run_id or "")], ghost)

    await store.transact(client.namespace, strand)
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        await asyncio.sleep(0.5)
        assert (await h.describe()).status == WorkflowExecutionStatus.RUNNING
        await h.signal(Waits.release)
        await asyncio.sleep(0.5)
        with pytest.raises(asyncio.TimeoutError):  # nobody drives it
            await asyncio.wait_for(asyncio.shield(h.result()), 0.5)
        await asyncio.to_thread(dbos.resume_workflow, f"{client.namespace}/{h.id}/{h.result_run_id}")
        assert await asyncio.wait_for(h.result(), 5) == "released"
    done = await wait_status(dbos, client.namespace, h.id, h.result_run_id or "", "SUCCESS")
    assert done.executor_id != ghost  # the live worker took it over


async def test_dbos_resume_of_closed_run_is_refused(
    client: Client, dbos: DBOSClient
) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        h = await client.start_workflow(Waits.run, id=f"x-{uuid.uuid4().hex[:6]}", task_queue=tq)
        await h.terminate("done here")
    wid = f"{client.namespace}/{h.id}/{h.result_run_id}"
    await wait_status(dbos, client.namespace, h.id, h.result_run_id or "", "CANCELLED")
    with pytest.raises(Exception, match="closed Temporal run"):
        await asyncio.to_thread(dbos.resume_workflow, wid)
    assert (await h.describe()).status == WorkflowExecutionStatus.TERMINATED


async def test_dbos_cli_lists_and_gets_runs(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    h = await client.start_workflow(Shout.run, "cli", id=f"cli-{uuid.uuid4().hex[:6]}", task_queue=tq)
    url, schema = dbos_url(client)
    wid = f"{client.namespace}/{h.id}/{h.result_run_id}"
    dbos_cli = Path(sys.executable).with_name("dbos")
    extra = ["--schema", schema] if schema and schema != "dbos" else []
    env = {k: v for k, v in os.environ.items() if k != "DBOSIFY_ACTIVATE"}
    listed = subprocess.run(
        # Newest first: the database may hold many runs of other tests.
        [str(dbos_cli), "workflow", "list", "-s", url, "--sort-desc", "--name", "Shout", *extra],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert listed.returncode == 0, listed.stderr
    assert wid in listed.stdout
    got = subprocess.run(
        [str(dbos_cli), "workflow", "get", wid, "-s", url, *extra],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert got.returncode == 0, got.stderr
    row = json.loads(got.stdout)
    assert (row["status"], row["name"], row["queue_name"]) == ("ENQUEUED", "Shout", queue_name(client.namespace, tq))


async def test_a_dbos_application_launching_leaves_our_runs_alone(
    client: Client, dbos: DBOSClient
) -> None:
    """A DBOS application launched on the same database recovers its own PENDING workflows and
    polls its queues: a run that our worker drives must stay ours, driven once."""
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    url, schema = dbos_url(client)
    config: dict[str, Any] = {"name": "other-app", "system_database_url": url}
    if schema is not None:
        config["dbos_system_schema"] = schema
    script = (
        "import time\nfrom dbos import DBOS\n"
        f"DBOS(config={config!r})\nDBOS.launch()\ntime.sleep(3)\nDBOS.destroy()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DBOSIFY_ACTIVATE"}
    async with Worker(client, task_queue=tq, workflows=WORKFLOWS, activities=[shout]):
        h = await client.start_workflow(Waits.run, id=f"l-{uuid.uuid4().hex[:6]}", task_queue=tq)
        before = await wait_status(dbos, client.namespace, h.id, h.result_run_id or "", "PENDING")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=env, cwd=str(Path(__file__).parent),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
        after = find(dbos, client.namespace, h.id, h.result_run_id or "")
        assert (after.status, after.executor_id, after.recovery_attempts) == (
            "PENDING", before.executor_id, before.recovery_attempts
        )
        await h.signal(Waits.release)
        assert await h.result() == "released"
    history = await h.fetch_history()
    kinds = [e.event_type for e in history.events]
    assert kinds.count(kinds[0]) == 1  # one start; and the run was not started again
    await wait_status(dbos, client.namespace, h.id, h.result_run_id or "", "SUCCESS")
