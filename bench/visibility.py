"""``python -m bench visibility``: list and count with Temporal filters over many closed runs.

Loads N closed runs (default 100,000) with custom search attributes straight into a fresh,
isolated namespace on Postgres (rows as dbosify writes them, generated in SQL so that loading
takes seconds), then times `list_workflows` (first page of 100) and `count_workflows` through
temporalio's client for five representative filters, and prints each query's plan. The
isolated schemas are dropped at the end. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
TYPES = 10  # workflow types Order0..Order9
CUSTOMERS = 10_000  # CustomKeywordField values: about N / 10,000 runs each
DAY = 86_400.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench visibility", description=__doc__)
    p.add_argument("-n", "--runs", type=int, default=100_000, help="closed runs to load (default 100000)")
    p.add_argument("--db", default=DEFAULT_URL, help=f"Postgres URL (default {DEFAULT_URL})")
    p.add_argument("--repeat", type=int, default=7, help="timings per query; the median is reported")
    return p.parse_args(argv)


def _load_sql(n: int, now: float) -> list[tuple[str, tuple[Any, ...]]]:
    """Closed runs spread over 30 days; 5% failed; attributes as the writer stores them."""
    return [
        (
            "INSERT INTO executions (run_id, workflow_id, workflow_type, task_queue, status,"
            " first_execution_run_id, start_time, close_time, execution_time, next_event_id,"
            " history_size_bytes, root_workflow_id, root_run_id)"
            " SELECT 'r' || i, 'order-' || lpad(i::text, 7, '0'), 'Order' || (i %% %s), 'tq' || (i %% 5),"
            " CASE WHEN i %% 20 = 0 THEN 3 ELSE 2 END, 'r' || i,"
            " %s - (i::float8 / %s) * 30 * 86400, %s - (i::float8 / %s) * 30 * 86400 + 2 + (i %% 7),"
            " %s - (i::float8 / %s) * 30 * 86400, 12, 2048, 'order-' || lpad(i::text, 7, '0'), 'r' || i"
            " FROM generate_series(1, %s) AS i",
            (TYPES, now, n, now, n, now, n, n),
        ),
        (
            "INSERT INTO search_attributes (run_id, name, v_text)"
            " SELECT 'r' || i, 'CustomKeywordField', 'customer-' || (i %% %s) FROM generate_series(1, %s) AS i",
            (CUSTOMERS, n),
        ),
        (
            "INSERT INTO search_attributes (run_id, name, v_int)"
            " SELECT 'r' || i, 'CustomIntField', i %% 1000 FROM generate_series(1, %s) AS i",
            (n,),
        ),
        ("ANALYZE executions", ()),
        ("ANALYZE search_attributes", ()),
    ]


def _queries(now: float) -> list[tuple[str, str]]:
    hour_ago = datetime.fromtimestamp(now - 3600, timezone.utc).isoformat()
    day_ago = datetime.fromtimestamp(now - DAY, timezone.utc).isoformat()
    return [
        ("failed of one type, last hour",
         f"WorkflowType = 'Order3' AND ExecutionStatus = 'Failed' AND StartTime > '{hour_ago}'"),
        ("one customer (keyword attribute)", "CustomKeywordField = 'customer-42'"),
        ("int range and status", "CustomIntField BETWEEN 10 AND 11 AND ExecutionStatus = 'Completed'"),
        ("workflow id prefix", "WorkflowId STARTS_WITH 'order-00042'"),
        ("closed in the last day, two types",
         f"CloseTime > '{day_ago}' AND (WorkflowType = 'Order1' OR WorkflowType = 'Order2')"),
    ]


async def _time(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


async def run(args: argparse.Namespace) -> int:
    import dbosify

    dbosify.activate()
    from temporalio.client import Client

    from dbosify._engine import search_attributes as sa
    from dbosify._engine.visibility_sql import translate
    from dbosify._store import SERVER_PARAM, get_store, resolve_url

    server = f"bv{uuid.uuid4().hex[:8]}"
    url = f"{args.db}{'&' if '?' in args.db else '?'}{SERVER_PARAM}={server}"
    client = await Client.connect(url, namespace="default")
    store = get_store(resolve_url(url))
    now = time.time()
    try:
        await client.count_workflows()  # creates the namespace's tables
        t0 = time.perf_counter()

        def load(tx: Any) -> None:
            for sql, params in _load_sql(args.runs, now):
                tx.execute(sql, params)

        await store.transact("default", load)
        print(f"loaded {args.runs:,} closed runs in {time.perf_counter() - t0:.1f} s", flush=True)
        print("\n| filter | list (first 100), ms | count, ms | matches |\n|---|---|---|---|")
        plans = []
        for label, query in _queries(now):
            list_ms, page = await _time(
                lambda q=query: _first_page(client, q), args.repeat
            )
            count_ms, count = await _time(lambda q=query: client.count_workflows(q), args.repeat)
            print(f"| {label}: `{query}` | {list_ms:.1f} | {count_ms:.1f} | {count.count:,} |", flush=True)
            assert len(page) == min(100, count.count), (label, len(page), count.count)

            def explain(tx: Any, q: str = query) -> list[Any]:
                t = translate(q, sa.registry(tx), sqlite=False)
                return tx.all(
                    "EXPLAIN SELECT e.run_id FROM executions e WHERE " + t.where
                    + " ORDER BY e.start_time DESC, e.run_id DESC LIMIT 100",
                    t.params,
                )

            plans.append((label, await store.transact("default", explain)))
        group_ms, groups = await _time(lambda: client.count_workflows("GROUP BY ExecutionStatus"), 3)
        print(f"| all runs, `GROUP BY ExecutionStatus` | - | {group_ms:.1f} | {groups.count:,} |")
        for label, plan in plans:
            print(f"\nplan, {label}:")
            for (line,) in plan:
                print("   ", line)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, store.drop_server)
    return 0


async def _first_page(client: Any, query: str) -> list[Any]:
    page = []
    async for w in client.list_workflows(query, page_size=100):
        page.append(w)
        if len(page) == 100:
            break
    return page


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
