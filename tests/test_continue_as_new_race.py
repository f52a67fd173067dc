"""Updates and signals sent to a workflow id while its run continues as new reach the new run, as on
Temporal: none fails with "workflow execution already completed". On Postgres a request that waited
for the closing run's row lock used to get that run, closed, without seeing its successor (the
workflow streams plugin's subscriber lost its stream that way). On Postgres and SQLite.
"""

from __future__ import annotations

import asyncio
import uuid

from temporalio import workflow
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.worker import Worker


@workflow.defn
class RollsOver:
    def __init__(self) -> None:
        self.go = False
        self.pokes = 0
        self.generation = 0

    @workflow.run
    async def run(self, generation: int) -> None:
        self.generation = generation
        if generation == 0:
            await workflow.wait_condition(lambda: self.go)
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(1)
        await workflow.wait_condition(lambda: False)

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.signal
    def poke(self) -> None:
        self.pokes += 1

    @workflow.update
    def ping(self) -> int:
        return self.generation


async def test_requests_racing_continue_as_new_reach_the_new_run(client: Client) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    outcomes: dict[str, int] = {}

    def count(key: str) -> None:
        outcomes[key] = outcomes.get(key, 0) + 1

    async def updates_until_rolled_over(h) -> None:  # type: ignore[no-untyped-def]
        # Keeps a request in flight through the whole rollover (as a stream subscriber does).
        for _ in range(200):
            try:
                if await h.execute_update(RollsOver.ping) == 1:
                    return
                count("ok")
            except (RPCError, WorkflowUpdateFailedError) as err:
                count(f"{type(err).__name__}: {err}")
                return

    async def signals_until_rolled_over(h) -> None:  # type: ignore[no-untyped-def]
        for _ in range(200):
            try:
                await h.signal(RollsOver.poke)
                count("ok")
            except RPCError as err:
                count(f"{type(err).__name__}: {err}")
                return
            if (await h.describe()).run_id != h.result_run_id:
                return

    async with Worker(client, task_queue=tq, workflows=[RollsOver]):
        for _ in range(6):
            h = await client.start_workflow(RollsOver.run, 0, id=f"ro-{uuid.uuid4().hex[:8]}", task_queue=tq)
            pollers = [asyncio.create_task(updates_until_rolled_over(h)) for _ in range(4)]
            pollers += [asyncio.create_task(signals_until_rolled_over(h)) for _ in range(2)]
            await asyncio.sleep(0.05)
            await h.signal(RollsOver.proceed)
            await asyncio.gather(*pollers)
            await h.terminate()
    assert set(outcomes) == {"ok"}, outcomes
