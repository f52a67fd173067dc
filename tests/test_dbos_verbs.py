"""DBOS's verbs on a run are carried out with Temporal's meaning, or refused with the reason.

Through DBOS's public client (`DBOSClient`) and its CLI, on Postgres and SQLite: a cancel after a
resume, a fork (a reset) and a delete, and every pair of verbs in sequence on a running run,
after which Temporal and DBOS agree on the run.
"""

from __future__ import annotations

import asyncio
import itertools
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
from temporalio.exceptions import TerminatedError
from temporalio.service import RPCError, RPCStatusCode
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
class Waits:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def release(self) -> None:
        self.go = True

    @workflow.run
    async def run(self, text: str) -> str:
        said = await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.wait_condition(lambda: self.go)
        return said




def uuid_of(client: Client, wid: str, rid: str) -> str:
    return f"{client.namespace}/{wid}/{rid}"


def status_of(dbos: DBOSClient, wid: str) -> str | None:
    got = [w for w in dbos.list_workflows(workflow_ids=[wid]) if w.workflow_id == wid]
    return got[0].status if got else None


async def wait_for(what: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await what()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def temporal_status(client: Client, wid: str, rid: str) -> WorkflowExecutionStatus | None:
    try:
        desc = await client.get_workflow_handle(wid, run_id=rid).describe()
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND
        return None
    return desc.status


async def agree(client: Client, dbos: DBOSClient, wid: str, rid: str) -> bool:
    """Temporal and DBOS say the same of the run (deleted in both, running, or closed)."""
    t = await temporal_status(client, wid, rid)
    d = await asyncio.to_thread(status_of, dbos, uuid_of(client, wid, rid))
    if t is None:
        return d is None
    if t == WorkflowExecutionStatus.RUNNING:
        return d == "PENDING"
    if t == WorkflowExecutionStatus.TERMINATED:
        return d == "CANCELLED"
    return d in ("SUCCESS", "ERROR")


async def started(client: Client, dbos: DBOSClient, tq: str) -> tuple[str, str]:
    h = await client.start_workflow(Waits.run, "hi", id=f"v-{uuid.uuid4().hex[:8]}", task_queue=tq)
    rid = h.result_run_id or ""

    async def pending() -> bool:
        return await asyncio.to_thread(status_of, dbos, uuid_of(client, h.id, rid)) == "PENDING"

    async def first_task_done() -> bool:  # a run can be reset from then on
        return any(e.HasField("workflow_task_completed_event_attributes")
                   for e in (await h.fetch_history()).events)

    await wait_for(pending)
    await wait_for(first_task_done)
    return h.id, rid


async def test_cancel_after_resume_terminates_the_run(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[Waits], activities=[shout]):
        wid, rid = await started(client, dbos, tq)
        dbos_id = uuid_of(client, wid, rid)
        for _ in range(2):  # a second resume is carried out too
            await asyncio.to_thread(dbos.resume_workflow, dbos_id)

            async def again() -> bool:
                return await asyncio.to_thread(status_of, dbos, dbos_id) == "PENDING"

            await wait_for(again)
        began = time.monotonic()
        await asyncio.to_thread(dbos.cancel_workflow, dbos_id)
        with pytest.raises(WorkflowFailureError) as err:
            await client.get_workflow_handle(wid, run_id=rid).result()
        assert isinstance(err.value.cause, TerminatedError)
        assert time.monotonic() - began < 1.0
        got = (await asyncio.to_thread(dbos.list_workflows, workflow_ids=[dbos_id]))[0]
        assert got.queue_name == queue_name(client.namespace, tq)  # kept through the verbs, and at close


async def test_delete_through_dbos_deletes_the_run(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[Waits], activities=[shout]):
        wid, rid = await started(client, dbos, tq)
        await asyncio.to_thread(dbos.delete_workflow, uuid_of(client, wid, rid))

        async def gone() -> bool:
            return await temporal_status(client, wid, rid) is None

        await wait_for(gone, 2.0)
        assert await agree(client, dbos, wid, rid)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DBOSIFY_ACTIVATE"}
    return subprocess.run(
        [str(Path(sys.executable).with_name("dbos")), "workflow", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )


async def test_cli_fork_is_a_reset(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    url, schema = dbos_url(client)
    extra = ["-s", url, *(["--schema", schema] if schema and schema != "dbos" else [])]
    async with Worker(client, task_queue=tq, workflows=[Waits], activities=[shout]):
        wid, rid = await started(client, dbos, tq)
        await client.get_workflow_handle(wid, run_id=rid).signal(Waits.release)
        assert await client.get_workflow_handle(wid, run_id=rid).result() == "HI"
        # A closed run forks; DBOS makes up the fork's ID, which becomes the new run's ID.
        out = await asyncio.to_thread(run_cli, "fork", uuid_of(client, wid, rid), "--step", "1", *extra)
        assert out.returncode == 0, out.stderr
        fork_id = json.loads(out.stdout)["workflow_id"]
        new = client.get_workflow_handle(wid, run_id=fork_id)
        await wait_for(lambda: temporal_status(client, wid, fork_id))
        got = await asyncio.to_thread(dbos.retrieve_workflow(fork_id).get_result)
        assert got == uuid_of(client, wid, fork_id)  # the fork's result: the new run's DBOS ID
        first = [e for e in (await new.fetch_history()).events if e.HasField(
            "workflow_task_failed_event_attributes")][0]
        assert first.workflow_task_failed_event_attributes.new_run_id == fork_id  # a reset
        assert await new.result() == "HI"  # the signal after the reset point is reapplied
        assert await agree(client, dbos, wid, fork_id)
        # A running run forks with an ID in our form: that is the new run's DBOS ID; the
        # forked run, the workflow's current run, is terminated, as a reset does.
        wid2, rid2 = await started(client, dbos, tq)
        mine = f"r{uuid.uuid4().hex[:8]}"
        out = await asyncio.to_thread(
            run_cli, "fork", uuid_of(client, wid2, rid2), "--step", "99",
            "-f", uuid_of(client, wid2, mine), *extra,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["workflow_id"] == uuid_of(client, wid2, mine)
        await wait_for(lambda: temporal_status(client, wid2, mine))
        assert await temporal_status(client, wid2, rid2) == WorkflowExecutionStatus.TERMINATED
        await client.get_workflow_handle(wid2, run_id=mine).signal(Waits.release)
        assert await client.get_workflow_handle(wid2, run_id=mine).result() == "HI"
        assert await wait_for(lambda: agree(client, dbos, wid2, mine))
        assert await wait_for(lambda: agree(client, dbos, wid2, rid2))


async def test_cli_resume_of_a_closed_run_is_refused(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    url, schema = dbos_url(client)
    extra = ["-s", url, *(["--schema", schema] if schema and schema != "dbos" else [])]
    async with Worker(client, task_queue=tq, workflows=[Waits], activities=[shout]):
        wid, rid = await started(client, dbos, tq)
        await client.get_workflow_handle(wid, run_id=rid).terminate("done")
    with pytest.raises(Exception, match="closed Temporal run"):  # a rewind too
        await asyncio.to_thread(dbos.rewind_workflow, uuid_of(client, wid, rid))
    out = await asyncio.to_thread(run_cli, "resume", uuid_of(client, wid, rid), *extra)
    assert out.returncode != 0
    assert any("dbosify:" in line and "closed Temporal run" in line for line in out.stderr.splitlines())


VERBS = ["cancel", "resume", "fork", "delete", "attributes"]


def do(dbos: DBOSClient, verb: str, dbos_id: str) -> str | None:
    """Give a DBOS verb; returns the new run's ID for a fork, raises when refused."""
    if verb == "cancel":
        dbos.cancel_workflow(dbos_id)
    elif verb == "resume":
        dbos.resume_workflow(dbos_id)
    elif verb == "fork":
        return dbos.fork_workflow(dbos_id, 1).workflow_id
    elif verb == "delete":
        dbos.delete_workflow(dbos_id)
    else:
        dbos.update_workflow_attributes(dbos_id, {"note": "kept in DBOS"})
    return None


@pytest.mark.parametrize("first,second", list(itertools.product(VERBS, VERBS)))
async def test_every_pair_of_verbs(
    client: Client, dbos: DBOSClient, first: str, second: str
) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[Waits], activities=[shout]):
        wid, rid = await started(client, dbos, tq)
        dbos_id = uuid_of(client, wid, rid)
        runs = [rid]
        for verb in (first, second):
            try:
                new = await asyncio.to_thread(do, dbos, verb, dbos_id)
            except Exception as err:  # refused, with the reason
                assert "dbosify" in str(err) or "Non-existent" in str(err), str(err)
                continue
            if new is not None:
                runs.append(new)
                await wait_for(lambda: temporal_status(client, wid, runs[-1]))
            await asyncio.sleep(0.3)
            for run in runs:
                try:
                    await wait_for(lambda: agree(client, dbos, wid, run), 3.0)  # noqa: B023
                except AssertionError as err:
                    t = await temporal_status(client, wid, run)
                    d = await asyncio.to_thread(status_of, dbos, uuid_of(client, wid, run))
                    raise AssertionError(f"after {verb}: run {run} is {t}, DBOS says {d}") from err


_instances: list[str] = []  # run ids, one per workflow instance made (a claim of a dormant run replays)


@workflow.defn
class SleepsLong:
    def __init__(self) -> None:
        _instances.append(workflow.info().run_id)

    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(3600)


async def test_resume_of_a_dormant_run_hands_it_to_a_worker_at_once(
    client: Client, dbos: DBOSClient
) -> None:
    from temporalio.worker import UnsandboxedWorkflowRunner

    tq = f"tq-{uuid.uuid4().hex[:8]}"
    store = get_store(client.service_client.config.target_host)
    async with Worker(client, task_queue=tq, workflows=[SleepsLong], max_cached_workflows=0,
                      workflow_runner=UnsandboxedWorkflowRunner()):
        h = await client.start_workflow(SleepsLong.run, id=f"d-{uuid.uuid4().hex[:8]}", task_queue=tq)
        rid = h.result_run_id or ""

        async def dormant() -> bool:  # evicted after its first task: nothing due for an hour
            row = await store.transact(client.namespace, lambda tx: tx.one(
                "SELECT owner, dormant FROM executions WHERE run_id = %s", (rid,)))
            return row is not None and row[0] is None and bool(row[1])

        await wait_for(dormant, timeout=15)
        made = _instances.count(rid)
        await asyncio.to_thread(dbos.resume_workflow, uuid_of(client, h.id, rid))

        async def claimed_again() -> bool:
            return _instances.count(rid) > made

        await wait_for(claimed_again, timeout=5)  # not in an hour, when its timer is due
        await h.terminate()
