"""A query's answer comes with its wake-up: the caller records the query, waits, and has the
answer without reading it back (the usual query costs the client one transaction). An answer
too large for a notification is read from the database; either way no row is left behind.
"""

from __future__ import annotations

import asyncio
import uuid

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from dbosify._store import get_store
from dbosify._store.wakeups import MAX_VALUE_BYTES, VALUE_SEP, Hub, with_value


@workflow.defn
class Echo:
    def __init__(self) -> None:
        self.size = 0

    @workflow.signal
    def resize(self, size: int) -> None:
        self.size = size

    @workflow.query
    def text(self) -> str:
        return "x" * self.size

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


async def test_small_and_large_answers(client: Client) -> None:
    store = get_store(client.service_client.config.target_host)
    reads: list[str] = []
    transact = store.transact

    async def watched(ns: str, fn, *a, **kw):  # type: ignore[no-untyped-def]
        reads.append(getattr(fn, "__qualname__", ""))
        return await transact(ns, fn, *a, **kw)

    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[Echo]):
        h = await client.start_workflow(Echo.run, id=f"echo-{uuid.uuid4().hex[:8]}", task_queue=tq)
        for size in (0, 10, 3000, 20_000, 5):
            await h.signal(Echo.resize, size)
            store.transact = watched  # type: ignore[method-assign]
            try:
                reads.clear()
                assert await h.query(Echo.text) == "x" * size
            finally:
                store.transact = transact  # type: ignore[method-assign]
            in_query = [r for r in reads if "query_workflow" in r]
            if size <= 3000:
                # One transaction: the insert (the row's deletion runs after the answer).
                assert len([r for r in in_query if "_forget_query" not in r]) == 1, in_query
        await h.terminate()
    # The rows go in the background, once answered.
    for _ in range(100):
        left = await store.transact(client.namespace, lambda tx: tx.all("SELECT query_id FROM queries"))
        if not left:
            break
        await asyncio.sleep(0.05)
    assert left == []


def test_value_rides_with_the_key() -> None:
    hub = Hub()

    async def main() -> None:
        fut = hub.waiter(["ns\x00qr:1"], value=True)
        hub.fire("ns\x00" + with_value("qr:1", b"\x00answer\xff"))
        await fut
        assert hub.take_value("ns\x00qr:1") == b"\x00answer\xff"
        assert hub.take_value("ns\x00qr:1") is None  # once
        # Nobody waits, or nobody that takes values: nothing is kept.
        hub.fire("ns\x00" + with_value("qr:2", b"late"))
        assert hub.take_value("ns\x00qr:2") is None
        other = hub.waiter(["ns\x00closed:3"])
        hub.fire("ns\x00" + with_value("closed:3", b"event"))
        await other
        assert hub.take_value("ns\x00closed:3") is None

    asyncio.run(main())
    assert VALUE_SEP not in with_value("qr:3", b"y" * (MAX_VALUE_BYTES + 1))


@workflow.defn
class Returns:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def release(self) -> None:
        self.go = True

    @workflow.run
    async def run(self, size: int) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "r" * size


async def test_result_comes_with_the_close(client: Client) -> None:
    """A small close event rides on the close's wake-up: waiting for a result takes one look
    (the first); a large one is read after the wake-up, as before."""
    store = get_store(client.service_client.config.target_host)
    calls: list[str] = []
    transact = store.transact

    async def watched(ns: str, fn, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(getattr(fn, "__qualname__", ""))
        return await transact(ns, fn, *a, **kw)

    tq = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[Returns]):
        for size, looks in ((3, 1), (20_000, 2)):
            h = await client.start_workflow(Returns.run, size, id=f"r-{uuid.uuid4().hex[:8]}", task_queue=tq)
            store.transact = watched  # type: ignore[method-assign]
            try:
                calls.clear()
                result = asyncio.ensure_future(h.result())
                while not any("get_workflow_execution_history" in c for c in calls):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)  # the first look found it running; the waiter waits
                await h.signal(Returns.release)
                assert await result == "r" * size
            finally:
                store.transact = transact  # type: ignore[method-assign]
            assert len([c for c in calls if "get_workflow_execution_history" in c]) == looks, calls
