"""Latency of a DBOS cancel of a Temporal run: `DBOSClient.cancel_workflow` returned -> the run
terminated (its close committed), for runs never touched by DBOS and for runs resumed through
DBOS first (the case where a cancel used to be lost). Usage:
``DBOSIFY_ACTIVATE=1 python -m bench.dbos_cancel <postgresql://... or sqlite:///dir> [N]``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker


@workflow.defn
class Parked:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


def _status(dbos: Any, dbos_id: str) -> str | None:
    got = dbos.list_workflows(workflow_ids=[dbos_id])
    return got[0].status if got else None


async def _until(pred: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: waited too long")
        await asyncio.sleep(0.005)


async def main(url: str, n: int) -> None:
    from dbos import DBOSClient

    from dbosify import dbos_workflow_id
    from dbosify._store import get_store

    client = await Client.connect(url)
    store = get_store(client.service_client.config.target_host)
    kwargs: dict[str, Any] = {"system_database_url": url}
    if store.is_sqlite:
        kwargs["system_database_url"] = f"sqlite:///{store.sqlite_path(client.namespace)}"
    else:
        kwargs["dbos_system_schema"] = store.dbos_schema_of(client.namespace)
    dbos = DBOSClient(**kwargs)
    tq = f"bench-{uuid.uuid4().hex[:6]}"
    plain: list[float] = []
    resumed: list[float] = []
    try:
        async with Worker(client, task_queue=tq, workflows=[Parked]):
            for i in range(n):
                h = await client.start_workflow(Parked.run, id=f"c-{tq}-{i}", task_queue=tq)
                dbos_id = dbos_workflow_id(client.namespace, h.id, h.result_run_id or "")

                async def pending(d: str = dbos_id) -> bool:
                    return await asyncio.to_thread(_status, dbos, d) == "PENDING"

                await _until(pending)
                after_resume = i % 2 == 1
                if after_resume:
                    await asyncio.to_thread(dbos.resume_workflow, dbos_id)
                    await _until(pending)
                await asyncio.to_thread(dbos.cancel_workflow, dbos_id)
                began = time.perf_counter()
                try:
                    await h.result()
                except Exception:
                    pass  # terminated, as expected
                (resumed if after_resume else plain).append(time.perf_counter() - began)
    finally:
        dbos.destroy()

    def q(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1000

    for label, xs in (("cancel", plain), ("cancel after a resume", resumed)):
        print(f"{label} -> run terminated: p50 {statistics.median(xs) * 1000:.1f} ms,"
              f" p99 {q(xs, 0.99):.1f} ms, max {max(xs) * 1000:.1f} ms (n={len(xs)})")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100))
