"""Latency of DBOS's SQL send and enqueue into Temporal runs (Postgres).

`dbos.send_message` committed -> the signal in the run's history; `dbos.enqueue_workflow`
committed -> the new run's first workflow task taken by a worker (the run claimed:
its history is written when that task completes). Usage:
``DBOSIFY_ACTIVATE=1 python -m bench.dbos_inbound postgresql://... [N]``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
from temporalio import workflow
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.client import Client
from temporalio.worker import Worker


@workflow.defn
class Inbox:
    def __init__(self) -> None:
        self.n = 0

    @workflow.signal
    def note(self, _m: Any) -> None:
        self.n += 1

    @workflow.run
    async def run(self, want: int) -> int:
        await workflow.wait_condition(lambda: self.n >= want)
        return self.n


def _wait(conn: psycopg.Connection[Any], schema: str, sql: str, args: tuple[Any, ...]) -> float:
    while True:
        if conn.execute(sql.replace("{s}", f'"{schema}"'), args).fetchone():
            return time.perf_counter()
        conn.rollback()
        time.sleep(0.0005)


async def main(url: str, n: int) -> None:
    from dbosify._store import get_store
    from dbosify._store.dbos_inbound_triggers import queue_name

    client = await Client.connect(url)
    store = get_store(client.service_client.config.target_host)
    ident, dschema = store.ident("default"), store.dbos_schema
    tq = f"bench-{uuid.uuid4().hex[:6]}"
    sends: list[float] = []
    starts: list[float] = []
    created: list[float] = []
    async with Worker(client, task_queue=tq, workflows=[Inbox]):
        h = await client.start_workflow(Inbox.run, n, id=f"inbox-{tq}", task_queue=tq)
        dbos_id = f"default/{h.id}/{h.result_run_id}"
        with psycopg.connect(url, autocommit=False) as conn, psycopg.connect(url) as watch:
            for i in range(n):
                conn.execute(f'SELECT "{dschema}".send_message(%s, %s::json, %s)', (dbos_id, str(i), "note"))
                conn.commit()
                t0 = time.perf_counter()
                t1 = await asyncio.to_thread(
                    _wait, watch, ident,
                    "SELECT 1 FROM {s}.history WHERE run_id = %s AND event_type = %s OFFSET %s",
                    (h.result_run_id, et.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, i),
                )
                sends.append(t1 - t0)
            for i in range(n):
                wid = f"e-{tq}-{i}"
                conn.execute(
                    f'SELECT "{dschema}".enqueue_workflow(workflow_name => %s, queue_name => %s,'
                    " positional_args => ARRAY['0'::json], workflow_id => %s)",
                    ("Inbox", queue_name("default", tq), wid),
                )
                conn.commit()
                t0 = time.perf_counter()
                t_run = await asyncio.to_thread(
                    _wait, watch, ident, "SELECT 1 FROM {s}.executions WHERE workflow_id = %s", (wid,)
                )
                t1 = await asyncio.to_thread(
                    _wait, watch, ident,
                    "SELECT 1 FROM {s}.executions WHERE workflow_id = %s AND owner IS NOT NULL", (wid,),
                )
                starts.append(t1 - t0)
                created.append(t_run - t0)
                # Each on an idle worker: the next is enqueued once this one has finished, so
                # its time is the hand-off's, not a wait behind the previous run's workflow task.
                await client.get_workflow_handle(wid).result()
            base: list[float] = []
            for i in range(n):
                wid = f"b-{tq}-{i}"
                t0 = time.perf_counter()
                started = await client.start_workflow(Inbox.run, 0, id=wid, task_queue=tq)
                t1 = await asyncio.to_thread(
                    _wait, watch, ident,
                    "SELECT 1 FROM {s}.executions WHERE workflow_id = %s AND owner IS NOT NULL", (wid,),
                )
                base.append(t1 - t0)
                await started.result()
            print(f"(Temporal client start -> claimed, same worker: p50"
                  f" {statistics.median(base) * 1000:.1f} ms)")
        await h.result()

    def q(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1000

    print(f"send_message -> signal in history: p50 {statistics.median(sends) * 1000:.1f} ms,"
          f" p99 {q(sends, 0.99):.1f} ms (n={n})")
    print(f"enqueue_workflow -> first workflow task (claimed): p50 {statistics.median(starts) * 1000:.1f} ms,"
          f" p99 {q(starts, 0.99):.1f} ms (n={n}); the run created: p50"
          f" {statistics.median(created) * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100))
