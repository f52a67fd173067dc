"""Helpers of the task queue tests (test_priority, test_rate_limits)."""

from __future__ import annotations

import asyncio
import time

from temporalio.client import Client

from dbosify._store import get_store


async def queued(client: Client, task_queue: str, n: int) -> None:
    """Wait until ``n`` activity tasks of ``task_queue`` are in the database."""
    store = get_store(client.service_client.config.target_host)
    deadline = time.monotonic() + 30
    while True:
        got = await store.transact(
            client.namespace,
            lambda tx: tx.one("SELECT count(*) FROM activity_tasks WHERE task_queue = %s", (task_queue,))[0],
        )
        if got >= n:
            return
        assert time.monotonic() < deadline, f"{got} of {n} activity tasks queued"
        await asyncio.sleep(0.05)
