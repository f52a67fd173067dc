"""A query handler sees `workflow.unsafe.is_replaying()` true, as under Core: a query is answered
in an activation of its own, from history the worker has applied (a cached run's, one replayed
for the query because the run was not cached, or a closed run's), and the dev server shows true in
each case. `is_replaying_history_events()` stays false in the handler, so replay-safe telemetry
(the OpenTelemetry plugin's meter provider) keeps what a query records, once per request.
"""

from __future__ import annotations

import uuid

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker


@workflow.defn
class ReplayFlags:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> bool:
        await workflow.wait_condition(lambda: self.go)
        return workflow.unsafe.is_replaying()

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.query
    def flags(self) -> tuple[bool, bool]:
        return workflow.unsafe.is_replaying(), workflow.unsafe.is_replaying_history_events()


async def _first_task_done(handle) -> None:  # type: ignore[no-untyped-def]
    async for ev in handle.fetch_history_events(wait_new_event=True):
        if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return


@pytest.mark.parametrize("cache", [0, 10])
async def test_query_sees_replaying(client: Client, cache: int) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=tq, workflows=[ReplayFlags], max_cached_workflows=cache,
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        h = await client.start_workflow(ReplayFlags.run, id=f"rf-{uuid.uuid4().hex[:8]}", task_queue=tq)
        await _first_task_done(h)
        # Not cached (cache 0): the run is replayed first, then the query has its own activation.
        assert tuple(await h.query(ReplayFlags.flags)) == (True, False)
        assert tuple(await h.query(ReplayFlags.flags)) == (True, False)
        await h.signal(ReplayFlags.proceed)
        # The workflow task the signal caused ran live.
        assert await h.result() is False
        # A closed run's query: answered after a full replay.
        assert tuple(await h.query(ReplayFlags.flags)) == (True, False)
