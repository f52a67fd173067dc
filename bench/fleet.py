"""A fleet on one task queue: priority, fairness and the task queue's activity rate.

    python -m bench.fleet [--db URL] [--parts priority,fairness,rate]
                          [--low 1000] [--high 10] [--fair-seconds 60] [--rate 20]
                          [--workers 3] [--rate-seconds 30]

- ``priority``: ``--low`` activity tasks of priority key 5, then ``--high`` of key 1, queued
  before a worker with one activity slot starts: where the key-1 tasks start among all starts.
- ``fairness``: two fairness keys weighted 1:3, each with a backlog it cannot finish, on a worker
  with one slot whose activities take 20 ms, for ``--fair-seconds``: each key's share of starts.
- ``rate``: ``--workers`` worker processes given ``max_task_queue_activities_per_second=--rate``
  on a backlog they cannot finish, for ``--rate-seconds``: starts per second over the queue,
  whole and per second.

Prints one JSON object per part. Each part runs in a fresh namespace, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from typing import Any

import dbosify

dbosify.activate()  # before temporalio is imported

from temporalio import activity, workflow  # noqa: E402
from temporalio.common import Priority  # noqa: E402

STARTS: list[tuple[float, str]] = []
START_LOG = os.environ.get("FLEET_START_LOG", "")  # a worker process appends its start times here


@activity.defn(name="fleet_tick")
async def tick(tag: str, seconds: float) -> None:
    now = time.time()
    STARTS.append((now, tag))
    if START_LOG:
        with open(START_LOG, "a") as f:
            f.write(f"{now}\n")
    if seconds:
        await asyncio.sleep(seconds)


@workflow.defn(name="FleetFan")
class Fan:
    @workflow.run
    async def run(self, n: int, tag: str, task_queue: str, seconds: float, key: int, fkey: str, weight: float) -> None:
        prio = Priority(priority_key=key or None, fairness_key=fkey or None, fairness_weight=weight or None)
        await asyncio.gather(*(
            workflow.execute_activity(
                tick, args=[tag, seconds], task_queue=task_queue, priority=prio,
                start_to_close_timeout=timedelta(minutes=10),
            )
            for _ in range(n)
        ))


async def _queued(store: Any, ns: str, tq: str, n: int) -> None:
    while True:
        got = await store.transact(
            ns, lambda tx: tx.one("SELECT count(*) FROM activity_tasks WHERE task_queue = %s", (tq,))[0]
        )
        if got >= n:
            return
        await asyncio.sleep(0.1)


async def _fan(client: Any, tq: str, acts_tq: str, n: int, tag: str, seconds: float = 0.0,
               key: int = 0, fkey: str = "", weight: float = 0.0, chunk: int = 500) -> list[Any]:
    """Start workflows that queue ``n`` activities on ``acts_tq`` (``chunk`` per workflow)."""
    handles = []
    for i in range(0, n, chunk):
        handles.append(await client.start_workflow(
            Fan.run, args=[min(chunk, n - i), tag, acts_tq, seconds, key, fkey, weight],
            id=f"{tag}-{i}-{uuid.uuid4().hex[:6]}", task_queue=tq,
        ))
    return handles


async def _end(handles: list[Any]) -> None:
    """Terminate the fan-out workflows still running (their backlog is not needed)."""
    from temporalio.service import RPCError

    for h in handles:
        try:
            await h.terminate("bench over")
        except RPCError:
            pass  # it completed


async def _namespace(url: str) -> tuple[Any, Any, str]:
    from temporalio.client import Client

    from dbosify._store import get_store, resolve_url

    ns = f"fleet{uuid.uuid4().hex[:10]}"
    store = get_store(resolve_url(url))
    store.register_namespace(ns)
    return await Client.connect(url, namespace=ns), store, ns


async def priority(url: str, low: int, high: int) -> dict[str, Any]:
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    client, store, ns = await _namespace(url)
    tq, acts_tq = "fleet-wf", "fleet-act"
    STARTS.clear()
    try:
        async with Worker(client, task_queue=tq, workflows=[Fan], workflow_runner=UnsandboxedWorkflowRunner()):
            hs = await _fan(client, tq, acts_tq, low, "low", key=5)
            await _queued(store, ns, acts_tq, low)
            hs += await _fan(client, tq, acts_tq, high, "high", key=1)
            await _queued(store, ns, acts_tq, low + high)
            t0 = time.monotonic()
            async with Worker(client, task_queue=acts_tq, activities=[tick], max_concurrent_activities=1):
                await asyncio.gather(*(h.result() for h in hs))
            took = time.monotonic() - t0
    finally:
        store.drop_namespace(ns)
    tags = [t for _, t in STARTS]
    high_at = [i for i, t in enumerate(tags) if t == "high"]
    return {
        "part": "priority", "low_key5": low, "high_key1": high,
        "high_start_positions": high_at, "twentieth_low_position": [i for i, t in enumerate(tags) if t == "low"][19],
        "all_high_first": max(high_at) < high, "drain_s": round(took, 1),
    }


async def fairness(url: str, seconds: float) -> dict[str, Any]:
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    client, store, ns = await _namespace(url)
    tq, acts_tq = "fleet-wf", "fleet-act"
    STARTS.clear()
    backlog = int(seconds * 60) + 200  # more than one slot can start in the time (20 ms each)
    try:
        async with Worker(client, task_queue=tq, workflows=[Fan], workflow_runner=UnsandboxedWorkflowRunner()):
            hs = await _fan(client, tq, acts_tq, backlog, "w1", seconds=0.02, fkey="w1", weight=1.0)
            hs += await _fan(client, tq, acts_tq, backlog, "w3", seconds=0.02, fkey="w3", weight=3.0)
            await _queued(store, ns, acts_tq, 2 * backlog)
            async with Worker(client, task_queue=acts_tq, activities=[tick], max_concurrent_activities=1):
                await asyncio.sleep(seconds)
                window = list(STARTS)
                await _end(hs)
    finally:
        store.drop_namespace(ns)
    t0 = window[0][0]
    window = [(t, tag) for t, tag in window if t < t0 + seconds]
    n = len(window)
    w3 = sum(1 for _, tag in window if tag == "w3")
    per10 = []
    for k in range(int(seconds // 10)):
        part = [tag for t, tag in window if t0 + 10 * k <= t < t0 + 10 * (k + 1)]
        per10.append(round(part.count("w3") / max(1, len(part)), 3))
    return {
        "part": "fairness", "seconds": seconds, "starts": n, "share_weight3": round(w3 / n, 4),
        "share_weight1": round(1 - w3 / n, 4), "share_weight3_per_10s": per10,
    }


def _spawn(url: str, ns: str, tq: str, rate: float, log: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DBOSIFY_ACTIVATE": "1", "FLEET_START_LOG": log}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.fleet", "--worker", url, ns, tq, str(rate)], env=env,
        stdout=subprocess.PIPE,
    )


async def _worker(url: str, ns: str, tq: str, rate: float) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(url, namespace=ns)
    async with Worker(client, task_queue=tq, activities=[tick], max_task_queue_activities_per_second=rate):
        print("ready", flush=True)
        await asyncio.Event().wait()


async def rate(url: str, per_second: float, workers: int, seconds: float) -> dict[str, Any]:
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    client, store, ns = await _namespace(url)
    tq, acts_tq = "fleet-wf", "fleet-act"
    backlog = int(per_second * seconds * 1.3) + 50
    logs = [tempfile.mktemp(prefix="fleet-starts-") for _ in range(workers)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with Worker(client, task_queue=tq, workflows=[Fan], workflow_runner=UnsandboxedWorkflowRunner()):
            hs = await _fan(client, tq, acts_tq, backlog, "r")
            await _queued(store, ns, acts_tq, backlog)
            procs = [_spawn(url, ns, acts_tq, per_second, log) for log in logs]
            for p in procs:
                assert p.stdout is not None
                await asyncio.to_thread(p.stdout.readline)
            await asyncio.sleep(seconds + 3)
            await _end(hs)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        store.drop_namespace(ns)
    per_worker = []
    times: list[float] = []
    for log in logs:
        with open(log) as f:
            got = [float(x) for x in f.read().split()]
        os.unlink(log)
        per_worker.append(len(got))
        times += got
    times.sort()
    t0 = times[0]
    window = [t for t in times if t0 + 1 <= t < t0 + 1 + seconds]  # past the first second
    per_sec = [sum(1 for t in window if t0 + 1 + k <= t < t0 + 2 + k) for k in range(int(seconds))]
    return {
        "part": "rate", "workers": workers, "limit_per_s": per_second, "seconds": seconds,
        "measured_per_s": round(len(window) / seconds, 2), "per_second_min": min(per_sec),
        "per_second_max": max(per_sec), "starts_per_worker": per_worker,
    }


async def _main(args: argparse.Namespace) -> None:
    for part in args.parts.split(","):
        if part == "priority":
            out = await priority(args.db, args.low, args.high)
        elif part == "fairness":
            out = await fairness(args.db, args.fair_seconds)
        elif part == "rate":
            out = await rate(args.db, args.rate, args.workers, args.rate_seconds)
        else:
            raise SystemExit(f"unknown part {part!r}")
        print(json.dumps(out), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(_worker(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])))
        return
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--parts", default="priority,fairness,rate")
    p.add_argument("--low", type=int, default=1000)
    p.add_argument("--high", type=int, default=10)
    p.add_argument("--fair-seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--rate-seconds", type=float, default=30.0)
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
