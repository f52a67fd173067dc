"""Task queue priority and fairness (Temporal's ``Priority``), on Postgres and SQLite.

Activity tasks and workflow tasks are claimed by priority key (1 first, unset = 3), then, for
activity tasks, across fairness keys in proportion to their weights; activities and children
inherit the workflow's priority field by field.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from queue_support import queued
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import Priority
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

STARTS: list[str] = []  # what `record` was called with, in the order attempts started


@activity.defn
async def record(tag: str) -> None:
    STARTS.append(tag)


@workflow.defn
class Fan:
    """``n`` activities on ``task_queue`` tagged ``tag``, each with ``priority`` (None: inherit)."""

    @workflow.run
    async def run(self, n: int, tag: str, task_queue: str, priority: Priority | None) -> None:
        await asyncio.gather(*(
            workflow.execute_activity(
                record, tag, task_queue=task_queue, start_to_close_timeout=timedelta(seconds=60),
                priority=priority or Priority.default,
            )
            for _ in range(n)
        ))


async def test_activity_tasks_by_priority_key(client: Client) -> None:
    """200 key-5 tasks queued before 10 key-1 tasks: the key-1 tasks start first. The key-5 ones
    inherit the key from their workflow; the key-1 ones set it on the activity."""
    tq, acts_tq = f"wf-{uuid.uuid4().hex[:8]}", f"act-{uuid.uuid4().hex[:8]}"
    STARTS.clear()
    async with Worker(client, task_queue=tq, workflows=[Fan]):
        low = await client.start_workflow(
            Fan.run, args=[200, "low", acts_tq, None], id=f"low-{tq}", task_queue=tq,
            priority=Priority(priority_key=5),
        )
        await queued(client, acts_tq, 200)
        high = await client.start_workflow(
            Fan.run, args=[10, "high", acts_tq, Priority(priority_key=1)], id=f"high-{tq}", task_queue=tq,
        )
        await queued(client, acts_tq, 210)
        async with Worker(client, task_queue=acts_tq, activities=[record], max_concurrent_activities=1):
            await asyncio.gather(low.result(), high.result())
    assert len(STARTS) == 210
    twentieth_low = [i for i, t in enumerate(STARTS) if t == "low"][19]
    assert max(i for i, t in enumerate(STARTS) if t == "high") < twentieth_low, STARTS[:40]


async def test_fairness_keys_by_weight(client: Client) -> None:
    """Two fairness keys weighted 1:3 within one priority key, on a saturated worker: the first
    100 starts go 25% / 75% (the lighter key's tasks were queued first)."""
    tq, acts_tq = f"wf-{uuid.uuid4().hex[:8]}", f"act-{uuid.uuid4().hex[:8]}"
    STARTS.clear()
    async with Worker(client, task_queue=tq, workflows=[Fan]):
        light = await client.start_workflow(
            Fan.run, args=[150, "light", acts_tq, Priority(fairness_key="light", fairness_weight=1.0)],
            id=f"light-{tq}", task_queue=tq,
        )
        await queued(client, acts_tq, 150)
        heavy = await client.start_workflow(
            Fan.run, args=[150, "heavy", acts_tq, None], id=f"heavy-{tq}", task_queue=tq,
            priority=Priority(fairness_key="heavy", fairness_weight=3.0),  # inherited by the activities
        )
        await queued(client, acts_tq, 300)
        async with Worker(client, task_queue=acts_tq, activities=[record], max_concurrent_activities=1):
            await asyncio.gather(light.result(), heavy.result())
    first = STARTS[:100]
    assert 70 <= first.count("heavy") <= 80, first


async def test_a_new_fairness_key_starts_at_the_head(client: Client) -> None:
    """A key that shows up behind another key's backlog is served at once, in turn with it."""
    tq, acts_tq = f"wf-{uuid.uuid4().hex[:8]}", f"act-{uuid.uuid4().hex[:8]}"
    STARTS.clear()
    async with Worker(client, task_queue=tq, workflows=[Fan]):
        big = await client.start_workflow(
            Fan.run, args=[120, "big", acts_tq, Priority(fairness_key="big")], id=f"big-{tq}", task_queue=tq,
        )
        await queued(client, acts_tq, 120)
        async with Worker(client, task_queue=acts_tq, activities=[record], max_concurrent_activities=1):
            while len(STARTS) < 20:
                await asyncio.sleep(0.01)
            small = await client.start_workflow(
                Fan.run, args=[5, "small", acts_tq, Priority(fairness_key="small")], id=f"small-{tq}",
                task_queue=tq,
            )
            arrived = len(STARTS)  # its workflow task is yet to schedule its activities
            await asyncio.gather(big.result(), small.result())
    last_small = max(i for i, t in enumerate(STARTS) if t == "small")
    # In turn with "big" from where it arrived (about 1:1), not after the rest of its backlog.
    assert last_small - arrived < 40 and STARTS[-1] == "big", (arrived, STARTS)


WF_STARTS: list[str] = []


@workflow.defn
class Note:
    @workflow.run
    async def run(self, tag: str) -> None:
        if not workflow.unsafe.is_replaying():
            WF_STARTS.append(tag)


async def test_workflow_tasks_by_priority_key(client: Client) -> None:
    """200 key-5 runs started before 10 key-1 runs, with no worker: the key-1 runs' first
    workflow tasks run first."""
    tq = f"wf-{uuid.uuid4().hex[:8]}"
    WF_STARTS.clear()
    handles = []
    for i in range(200):
        handles.append(await client.start_workflow(
            Note.run, "low", id=f"low-{i}-{tq}", task_queue=tq, priority=Priority(priority_key=5)
        ))
    for i in range(10):
        handles.append(await client.start_workflow(
            Note.run, "high", id=f"high-{i}-{tq}", task_queue=tq, priority=Priority(priority_key=1)
        ))
    async with Worker(client, task_queue=tq, workflows=[Note], workflow_runner=UnsandboxedWorkflowRunner()):
        await asyncio.gather(*(h.result() for h in handles))
    assert len(WF_STARTS) == 210
    twentieth_low = [i for i, t in enumerate(WF_STARTS) if t == "low"][19]
    assert max(i for i, t in enumerate(WF_STARTS) if t == "high") < twentieth_low, WF_STARTS[:40]


@workflow.defn
class Child:
    @workflow.run
    async def run(self) -> list:
        p = workflow.info().priority
        return [p.priority_key, p.fairness_key, p.fairness_weight]


@workflow.defn
class Parent:
    @workflow.run
    async def run(self) -> list:
        wid = workflow.info().workflow_id
        return [
            await workflow.execute_child_workflow(Child.run, id=f"{wid}-1"),
            await workflow.execute_child_workflow(Child.run, id=f"{wid}-2", priority=Priority(priority_key=4)),
        ]


async def test_children_inherit_priority_field_by_field(client: Client) -> None:
    tq = f"wf-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[Parent, Child]):
        got = await client.execute_workflow(
            Parent.run, id=f"p-{tq}", task_queue=tq,
            priority=Priority(priority_key=2, fairness_key="t1", fairness_weight=2.0),
        )
    assert got == [[2, "t1", 2.0], [4, "t1", 2.0]]  # as on Temporal's dev server


@pytest.mark.parametrize(
    "bad, message",
    [
        (Priority(fairness_weight=-1.0), "must be greater than zero"),
        (Priority(fairness_key="x" * 65), "fairness key length exceeds limit"),
        # Not refused by Temporal, but no store can hold them: refused here with a status, never
        # a driver error.
        (Priority(fairness_key="a\x00b"), "NUL character"),
        (Priority(fairness_weight=float("nan")), "must be greater than zero"),
    ],
)
async def test_bad_priority_is_refused(client: Client, bad: Priority, message: str) -> None:
    with pytest.raises(RPCError, match=message):
        await client.start_workflow(Child.run, id=f"bad-{uuid.uuid4().hex[:8]}", task_queue="nobody", priority=bad)


@workflow.defn
class BadActivityPriority:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            record, "x", start_to_close_timeout=timedelta(seconds=5),
            priority=Priority(fairness_key="y" * 65),
        )


async def test_bad_activity_priority_fails_the_workflow_task(client: Client) -> None:
    tq = f"wf-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[BadActivityPriority], activities=[record]):
        h = await client.start_workflow(
            BadActivityPriority.run, id=f"bad-{tq}", task_queue=tq, execution_timeout=timedelta(seconds=3)
        )
        with pytest.raises(WorkflowFailureError):
            await h.result()
        failed = [
            e async for e in h.fetch_history_events()
            if e.HasField("workflow_task_failed_event_attributes")
        ]
    assert failed and "fairness key length exceeds limit" in failed[0].workflow_task_failed_event_attributes.failure.message
