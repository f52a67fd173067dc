"""``python -m bench.idle_schedules``: what an idle worker costs Postgres, with 100 schedules due
in an hour and without.

Creates a throwaway database, runs one worker process (through the hook) on it, and counts the
transactions Postgres records for that database (``pg_stat_database``) over a quiet window: first
with no schedule, then with 100 schedules whose first action is an hour away. Prints both rates
(transactions per second); the difference is what the schedules cost while nothing is due.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

SERVER = "postgresql://postgres@127.0.0.1:5432"
WORKER = """
import asyncio, sys
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

@workflow.defn
class Tick:
    @workflow.run
    async def run(self) -> None:
        return None

async def main():
    client = await Client.connect(sys.argv[1], namespace="idle")
    async with Worker(client, task_queue="idle", workflows=[Tick], workflow_runner=UnsandboxedWorkflowRunner()):
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _xacts(conn: object, db: str) -> int:
    row = conn.execute(  # type: ignore[attr-defined]
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (db,)
    ).fetchone()
    return int(row[0])


def _rate(conn: object, db: str, seconds: float) -> float:
    conn.execute("SELECT pg_stat_clear_snapshot()")  # type: ignore[attr-defined]
    before = _xacts(conn, db)
    time.sleep(seconds)
    conn.execute("SELECT pg_stat_clear_snapshot()")  # type: ignore[attr-defined]
    return (_xacts(conn, db) - before) / seconds


async def _create_schedules(url: str, n: int) -> None:
    import dbosify

    dbosify.activate()
    from temporalio.client import (
        Client,
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleIntervalSpec,
        ScheduleSpec,
    )

    client = await Client.connect(url, namespace="idle")
    start = datetime.now(timezone.utc) + timedelta(hours=1)
    for i in range(n):
        await client.create_schedule(f"idle-{i}", Schedule(
            action=ScheduleActionStartWorkflow("Tick", id=f"tick-{i}", task_queue="idle"),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))], start_at=start),
        ))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--create"]:  # in a process of its own, gone before the second window
        asyncio.run(_create_schedules(argv[1], int(argv[2])))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.idle_schedules", description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each quiet window")
    p.add_argument("--schedules", type=int, default=100)
    args = p.parse_args(argv)
    import psycopg

    db = f"idle_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(f"{SERVER}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{db}"')
    url = f"{SERVER}/{db}"
    # The namespace "idle" is registered by each process as it connects (ignored by a dbosify
    # from before namespaces had to be registered).
    env = {**os.environ, "DBOSIFY_ACTIVATE": "1", "DBOSIFY_NAMESPACES": "idle"}
    env.pop("DBOSIFY_DATABASE_URL", None)
    worker = subprocess.Popen([sys.executable, "-c", WORKER, url], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == b"ready"
        time.sleep(5)  # past the worker's start-up (registration, first looks)
        quiet = _rate(admin, db, args.seconds)
        subprocess.run([sys.executable, "-m", "bench.idle_schedules", "--create", url, str(args.schedules)],
                       check=True, env=env, stderr=subprocess.DEVNULL,
                       cwd=Path(__file__).resolve().parent.parent)
        time.sleep(5)
        with_schedules = _rate(admin, db, args.seconds)
        print(f"idle worker: {quiet:.2f} transactions/s without schedules, {with_schedules:.2f} with"
              f" {args.schedules} schedules due in an hour (difference {with_schedules - quiet:+.2f}/s)")
    finally:
        worker.kill()
        worker.wait()
        admin.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
