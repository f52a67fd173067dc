"""Names and shapes a DBOS user reads, and DBOS's handle of an enqueue.

- the queue name of a run's DBOS row is ``<namespace>/<task queue>`` (each part quoted), kept at
  close, and DBOS's verbs given to the run still reach its workers;
- a continued-as-new run's output names the next run by its DBOS ID;
- ``DBOSClient.enqueue(...).get_result()`` returns the workflow's result (it polled for a row that
  the start had replaced: a hang), also after the workflow continued as new.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from dbos import DBOSClient
    from dbos_support import dbos  # noqa: F401  (the fixture)

    from dbosify._worker.dbos_inbound import queue_name



@workflow.defn(name="Hops")
class Hops:
    @workflow.run
    async def run(self, left: int, said: str) -> str:
        if left > 0:
            workflow.continue_as_new(args=[left - 1, said + "!"])
        return said


@workflow.defn(name="Waits")
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


async def _rows(dbos: DBOSClient, **kw: Any) -> list[Any]:
    return list(await asyncio.to_thread(dbos.list_workflows, **kw))


async def test_queue_name_carries_the_namespace(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq/{uuid.uuid4().hex[:6]}"  # a '/' in the task queue: quoted
    q = queue_name(client.namespace, tq)
    assert q.endswith("/tq%2F" + tq.split("/")[1])
    async with Worker(client, task_queue=tq, workflows=[Hops, Waits]):
        h = await client.start_workflow(Waits.run, id=f"w-{uuid.uuid4().hex[:6]}", task_queue=tq)
        uid = f"{client.namespace}/{h.id}/{h.result_run_id}"
        rows = await _rows(dbos, queue_name=q)
        assert [r.workflow_id for r in rows] == [uid]
        # A DBOS cancel still reaches the run's workers (the wake-up key names the task queue).
        await asyncio.to_thread(dbos.cancel_workflow, uid)
        async def closed() -> None:
            while (await h.describe()).status == WorkflowExecutionStatus.RUNNING:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(closed(), 10)
        rows = await _rows(dbos, workflow_ids=[uid])
        assert rows[0].queue_name == q and rows[0].status == "CANCELLED"  # kept at close


async def test_enqueue_handle_returns_the_result(client: Client, dbos: DBOSClient) -> None:
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    wid = f"hops-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=tq, workflows=[Hops, Waits]):
        # The namespace in use (its DBOS tables are set up with its first use).
        assert await client.execute_workflow(Hops.run, args=[0, "x"], id=f"x-{wid}", task_queue=tq)
        handle = await asyncio.to_thread(
            dbos.enqueue, {"workflow_name": "Hops", "queue_name": queue_name(client.namespace, tq),
                           "workflow_id": wid}, 2, "hi",
        )
        assert handle.get_workflow_id() == wid
        # Through two continue-as-new: the chain's last run closes the enqueue's row.
        got = await asyncio.wait_for(asyncio.to_thread(handle.get_result), 15)
        assert got == "hi!!"
        first, second, last = sorted(
            (await _rows(dbos, workflow_id_prefix=f"{client.namespace}/{wid}/")),
            key=lambda r: r.created_at,
        )
        # A continued-as-new run's output names the next run by its DBOS ID.
        assert first.output == {"continued_as_new": second.workflow_id}
        assert second.output == {"continued_as_new": last.workflow_id}
        assert last.output == "hi!!"
        current = (await client.get_workflow_handle(wid).describe()).run_id
        assert last.workflow_id == f"{client.namespace}/{wid}/{current}"


async def test_verbs_and_messages_given_to_the_enqueues_own_id(client: Client, dbos: DBOSClient) -> None:
    """The ID DBOS's enqueue hands back is the workflow ID: a message sent to it signals the
    workflow's running run, a resume of it hands the run over and leaves the request PENDING,
    and a cancel of it terminates the run (these were accepted and never acted on)."""
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=tq, workflows=[Hops, Waits]):
        assert await client.execute_workflow(Hops.run, args=[0, "x"], id=f"x-{tq}", task_queue=tq)
        q = queue_name(client.namespace, tq)

        async def enqueue_waits(wid: str) -> Any:
            handle = await asyncio.to_thread(dbos.enqueue, {"workflow_name": "Waits", "queue_name": q, "workflow_id": wid})
            for _ in range(200):  # started by a worker
                try:
                    if (await client.get_workflow_handle(wid).describe()).status == WorkflowExecutionStatus.RUNNING:
                        return handle
                except Exception:
                    pass
                await asyncio.sleep(0.05)
            raise AssertionError(f"{wid} did not start")

        # send -> the signal: the workflow completes with DBOS's handle's result.
        sent = await enqueue_waits(f"s-{tq}")
        await asyncio.to_thread(dbos.send, sent.get_workflow_id(), None, "release")
        assert await asyncio.wait_for(asyncio.to_thread(sent.get_result), 15) == "released"

        # resume -> handed to a live worker; the request stays PENDING, then takes the result.
        resumed = await enqueue_waits(f"r-{tq}")
        await asyncio.to_thread(dbos.resume_workflow, resumed.get_workflow_id())
        for _ in range(200):
            [row] = await _rows(dbos, workflow_ids=[resumed.get_workflow_id()])
            if row.status == "PENDING":
                break
            await asyncio.sleep(0.05)
        assert row.status == "PENDING"
        await client.get_workflow_handle(f"r-{tq}").signal(Waits.release)
        assert await asyncio.wait_for(asyncio.to_thread(resumed.get_result), 15) == "released"

        # cancel -> the run is terminated, naming DBOS.
        cancelled = await enqueue_waits(f"c-{tq}")
        await asyncio.to_thread(dbos.cancel_workflow, cancelled.get_workflow_id())
        h = client.get_workflow_handle(f"c-{tq}")

        async def terminated() -> None:
            while (await h.describe()).status != WorkflowExecutionStatus.TERMINATED:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(terminated(), 10)
        [row] = await _rows(dbos, workflow_ids=[cancelled.get_workflow_id()])
        assert row.status == "CANCELLED"

        # That cancel is done: a new run of the same workflow ID is left alone, also when the
        # queue's workers look again (another DBOS cancel wakes them).
        again = await client.start_workflow(Waits.run, id=f"c-{tq}", task_queue=tq)
        other = await enqueue_waits(f"o-{tq}")
        await asyncio.to_thread(dbos.cancel_workflow, other.get_workflow_id())
        h = client.get_workflow_handle(f"o-{tq}")
        await asyncio.wait_for(terminated(), 10)
        assert (await again.describe()).status == WorkflowExecutionStatus.RUNNING
        await again.signal(Waits.release)
        assert await again.result() == "released"
