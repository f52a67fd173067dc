"""What `bench.scale` reads from the database and from /proc: run counts by state, the
namespace's size in Postgres, the timers' lateness from their history events, and the CPU of a
worker process and of its Postgres sessions."""

from __future__ import annotations

import statistics
import time
from typing import Any

from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.history.v1 import message_pb2 as hist

from bench.measure import CpuSampler, cpu_seconds

# Events of a ScaleWaiter run whose first workflow task has completed: WorkflowExecutionStarted,
# WorkflowTaskScheduled, -Started, -Completed (and TimerStarted for a timer run), so the next
# event id is at least 5. A timer run that has resumed after its TimerFired has had another
# workflow task as well: at least 10.
WAITING_NEXT_EVENT_ID = 5
RESUMED_NEXT_EVENT_ID = 10


def counts(tx: Any, task_queue: str) -> dict[str, int]:
    """Open runs of the task queue: all, past their first workflow task, dormant, owned; and
    burst runs (ids ending in 1), open or not, past the workflow task after their TimerFired
    (or after a signal: one signalled after the restart; it completes when its timer fires)."""
    row = tx.one(
        "SELECT count(*) FILTER (WHERE status = 1), count(*) FILTER (WHERE status = 1 AND next_event_id >= %s),"
        " count(*) FILTER (WHERE status = 1 AND dormant = 1),"
        " count(*) FILTER (WHERE status = 1 AND owner IS NOT NULL),"
        " count(*) FILTER (WHERE workflow_id LIKE '%%1' AND next_event_id >= %s)"
        " FROM executions WHERE task_queue = %s",
        (WAITING_NEXT_EVENT_ID, RESUMED_NEXT_EVENT_ID, task_queue),
    )
    keys = ("open", "waiting", "dormant", "owned", "burst_resumed")
    return {k: int(v) for k, v in zip(keys, row, strict=True)}


def owned_ids(tx: Any, task_queue: str) -> list[str]:
    """Workflow ids of the open runs a worker holds."""
    rows = tx.all(
        "SELECT workflow_id FROM executions WHERE task_queue = %s AND status = 1 AND owner IS NOT NULL",
        (task_queue,),
    )
    return [str(r[0]) for r in rows]


def run_state(tx: Any, workflow_id: str) -> dict[str, Any]:
    row = tx.one(
        "SELECT dormant, owner IS NOT NULL, wake_at FROM executions WHERE workflow_id = %s AND status = 1",
        (workflow_id,),
    )
    return {} if row is None else {"dormant": bool(row[0]), "owned": bool(row[1]), "wake_at": row[2]}


def schema_bytes(conn: Any, schema: str) -> int:
    """Tables, their indexes and TOAST of one Postgres schema."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
        (schema,),
    ).fetchone()
    return int(row[0])


def table_bytes(conn: Any, schema: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p')"
        " ORDER BY 2 DESC",
        (schema,),
    ).fetchall()
    return {str(name): int(size) for name, size in rows}


def timer_lateness(tx: Any) -> dict[str, Any]:
    """Each fired timer against its due time (TimerStarted's time + start_to_fire_timeout):
    when the engine recorded TimerFired, and when the workflow resumed (the time of the next
    completed workflow task, which is `workflow.now()` in the code after the sleep)."""
    rows = tx.all(
        "SELECT s.event, f.event, (SELECT c.event FROM history c WHERE c.run_id = f.run_id"
        f" AND c.event_type = {int(et.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)} AND c.event_id > f.event_id"
        " ORDER BY c.event_id LIMIT 1)"
        " FROM history s JOIN history f ON f.run_id = s.run_id AND f.seq = s.seq"
        f" AND f.event_type = {int(et.EVENT_TYPE_TIMER_FIRED)}"
        f" WHERE s.event_type = {int(et.EVENT_TYPE_TIMER_STARTED)}"
    )
    fired, resumed = [], []
    for started_b, fired_b, completed_b in rows:
        started = hist.HistoryEvent.FromString(bytes(started_b))
        due = _seconds(started) + started.timer_started_event_attributes.start_to_fire_timeout.ToNanoseconds() / 1e9
        fired.append(_seconds(hist.HistoryEvent.FromString(bytes(fired_b))) - due)
        if completed_b is not None:
            resumed.append(_seconds(hist.HistoryEvent.FromString(bytes(completed_b))) - due)
    return {"fired": len(fired), "fired_late_s": spread(fired), "resumed": len(resumed),
            "resumed_late_s": spread(resumed)}


def _seconds(event: hist.HistoryEvent) -> float:
    return event.event_time.ToNanoseconds() / 1e9


def spread(xs: list[float]) -> dict[str, float] | None:
    """p50, p99, max and min of a sample, in seconds to the millisecond."""
    if not xs:
        return None
    s = sorted(xs)

    def pct(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 3)

    return {"min": round(s[0], 3), "p50": round(statistics.median(s), 3), "p99": pct(0.99),
            "max": round(s[-1], 3)}


def cpu_percent(pids: list[int], seconds: float) -> float:
    """CPU used by ``pids`` over the next ``seconds`` (100 = one core)."""
    before = [cpu_seconds(p) or 0.0 for p in pids]
    time.sleep(seconds)
    after = [cpu_seconds(p) or 0.0 for p in pids]
    return round(100 * (sum(after) - sum(before)) / seconds, 2)


def session_pids(conn: Any, pid: int) -> list[int]:
    """The Postgres backends serving the process ``pid`` (dbosify names its sessions by pid)."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (f"dbosify:{pid}",)
    ).fetchall()
    return [int(r[0]) for r in rows]


class PhaseCpu:
    """CPU seconds of processes, and of the Postgres sessions serving each, over a phase."""

    def __init__(self, url: str, pids: dict[str, int]) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)  # the sampler thread's only
        groups: dict[str, Any] = {}
        for name, pid in pids.items():
            groups[name] = lambda pid=pid: [pid]
            groups[f"{name}_pg"] = lambda pid=pid: session_pids(self._conn, pid)
        self._sampler = CpuSampler(groups)
        self._sampler.start()

    def stop(self) -> dict[str, float]:
        try:
            return {k: round(v, 2) for k, v in self._sampler.stop().items()}
        finally:
            self._conn.close()
