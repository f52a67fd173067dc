"""A worker process for tests/test_schedules.py: ``python tests/schedule_app.py URL NAMESPACE TASK_QUEUE``.

Runs a Worker for `Tick` until killed, after printing ``ready``. With
``DBOSIFY_FAULT_PAUSE_BEFORE_SCHEDULE_COMMIT`` set it pauses inside each firing transaction
(see dbosify/_engine/scheduler.py), so that the test can kill it there.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio import workflow


@workflow.defn
class Tick:
    @workflow.run
    async def run(self) -> str:
        return workflow.info().workflow_id


async def main(url: str, namespace: str, task_queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    client = await Client.connect(url, namespace=namespace)
    async with Worker(client, task_queue=task_queue, workflows=[Tick], workflow_runner=UnsandboxedWorkflowRunner()):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    asyncio.run(main(*sys.argv[1:4]))
