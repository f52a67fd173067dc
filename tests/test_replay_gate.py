"""Which claimed runs replay first: runs with waiting work go before runs that only wait."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import Client

from dbosify._store import get_store
from dbosify._worker.replay_gate import IDLE, URGENT, ReplayGate, priorities, rank


async def test_waiting_work_replays_first() -> None:
    gate = ReplayGate(1)
    order: list[str] = []

    async def replay(name: str, priority: int) -> None:
        async with gate.slot(priority):
            order.append(name)
            await asyncio.sleep(0.01)

    async with gate.slot(IDLE):  # the one slot is busy while the others queue up
        tasks = [asyncio.create_task(replay("idle-1", IDLE))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(replay("urgent", URGENT)))
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(replay("idle-2", IDLE)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["urgent", "idle-1", "idle-2"]


async def test_a_fresh_run_is_urgent(client: Client) -> None:
    h = await client.start_workflow("AnyWorkflow", id=f"p-{uuid.uuid4().hex[:8]}", task_queue="nobody")
    store = get_store(client.service_client.config.target_host)
    got = await store.transact(client.namespace, lambda tx: priorities(tx, [h.result_run_id or ""]))
    assert got == {h.result_run_id: rank(URGENT)}  # and the default priority key, 3
