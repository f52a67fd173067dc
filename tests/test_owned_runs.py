"""Releasing a worker's runs (it died, or it shuts down) reads only those runs, however many other
runs are open: the statements go through an index of owned runs, not over every open run (or
every entry of an index that leads with the task queue)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dbosify._store.store import Store, Tx
from dbosify._worker import dormancy

OTHER_RUNS = 40_000  # open runs owned by no one or by live workers
DEAD_RUNS = 3


@pytest.fixture
def store(_pg_session_url: str) -> Iterator[tuple[Store, str]]:
    s = Store(_pg_session_url)
    ns = f"ow{uuid.uuid4().hex[:10]}"
    s.register_namespace(ns)
    s.ident(ns)
    try:
        yield s, ns
    finally:
        s.drop_namespace(ns)
        s.close()


def _load(tx: Tx) -> None:
    tx.execute(
        "INSERT INTO executions (run_id, workflow_id, workflow_type, task_queue, status,"
        " first_execution_run_id, start_time, next_event_id, owner, dormant)"
        " SELECT 'r' || i, 'w' || i, 'T', 'tq', 1, 'r' || i, i, 5,"
        " CASE WHEN i <= %s THEN 'dead' WHEN i %% 3 = 0 THEN 'alive-' || (i %% 7) END,"
        " CASE WHEN i > %s AND i %% 3 <> 0 THEN 1 ELSE 0 END"
        " FROM generate_series(1, %s) AS i",
        (DEAD_RUNS, DEAD_RUNS, OTHER_RUNS + DEAD_RUNS),
    )
    tx.execute("ANALYZE executions")


class _Recording:
    """A transaction that records the statements run on it."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def _record(self, name: str, sql: str, params: Any = ()) -> Any:
        self.statements.append((sql, tuple(params or ())))
        return getattr(self._tx, name)(sql, params)

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._record("execute", sql, params)

    def one(self, sql: str, params: Any = ()) -> Any:
        return self._record("one", sql, params)

    def all(self, sql: str, params: Any = ()) -> Any:
        return self._record("all", sql, params)


def _scans_of_executions(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if plan.get("Relation Name") == "executions" or str(plan.get("Index Name", "")).startswith("executions"):
        yield plan
    for sub in plan.get("Plans", []):
        yield from _scans_of_executions(sub)


def test_releasing_a_dead_workers_runs_reads_only_its_runs(store: tuple[Store, str]) -> None:
    s, ns = store
    s.transact_sync(ns, _load)

    def release(tx: Tx) -> list[tuple[str, list[dict[str, Any]]]]:
        rec = _Recording(tx)
        released = dormancy.release(rec, "owner = %s", ("dead",))  # type: ignore[arg-type]
        assert sorted(r for _, _, r in released) == [f"r{i}" for i in range(1, DEAD_RUNS + 1)]
        # The same statements again, measured (the runs are released by now: what counts is
        # how many pages finding them reads).
        plans = []
        for sql, params in rec.statements:
            if "executions" not in sql.split(" WHERE ")[0]:
                continue
            tx.execute("SAVEPOINT measure")
            (raw,) = tx.one("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            tx.execute("ROLLBACK TO SAVEPOINT measure")
            top = raw if isinstance(raw, list) else json.loads(raw)
            plans.append((sql, list(_scans_of_executions(top[0]["Plan"]))))
        return plans

    plans = s.transact_sync(ns, release)
    assert plans
    for sql, scans in plans:
        assert scans, sql
        for scan in scans:
            # A few pages, not a pass over the 40,000 open runs (or an index of them all).
            pages = scan["Shared Hit Blocks"] + scan["Shared Read Blocks"]
            assert pages <= 10, (sql[:60], scan["Node Type"], scan.get("Index Name"), pages)
