"""Dormant runs: evicted from the cache, unowned, and claimed again only when they have work.

A run whose driver is idle (nothing to deliver, nothing due, no local activity in flight) may
be evicted to keep a worker's cache within ``max_cached_workflows`` (least recently used
first). Eviction gives up the claim: the run becomes *dormant* (``owner`` NULL, ``dormant`` 1,
``wake_at`` its earliest due timer or timeout). A dormant run is not claimable until:
- an event that is work for it is appended (`_engine.history.append` clears ``dormant`` in the same
  statement and wakes the task queue's claim loops), or an update or query is recorded for it
  (`_engine.history.wake`), or
- its ``wake_at`` passes: claim loops wait for the earliest ``wake_at`` of their task queue,
  one indexed lookup, whatever the number of dormant runs.

Drivers also keep ``wake_at`` of the runs they own (written in the workflow task's transaction,
only when it changes), so that when a worker dies or shuts down its runs with nothing due go
dormant (`release`) instead of being claimed and replayed by the survivors.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc

from dbosify._dbos import records
from dbosify._engine import history as h
from dbosify._store import Tx
from dbosify._worker.tracking import timer_due

if TYPE_CHECKING:
    from dbosify._worker.interfaces import Driver
    from dbosify._worker.tracking import DriverState

# The reason temporalio is given when a run leaves the cache to make room (Core's CacheFull).
CACHE_FULL = 1


def wake_at(st: DriverState, run_deadline: float | None, now: float) -> float | None:
    """When the run next needs a worker with no new event: its earliest timer, queued-activity
    check or run deadline; ``now`` while a local activity is in flight (its driver runs it)."""
    if st.local_pending:
        return now
    times = [*st.timers.values(), *st.queued_checks.values()]
    if run_deadline is not None:
        times.append(run_deadline)
    return min(times, default=None)


def wake_after_commands(
    st: DriverState, commands: Iterable[wc.WorkflowCommand], ts: float, run_deadline: float | None
) -> float | None:
    """`wake_at` of the state these commands lead to (they are tracked once they commit)."""
    timers = dict(st.timers)
    queued = list(st.queued_checks.values())
    local = bool(st.local_pending)
    for cmd in commands:
        if cmd.HasField("start_timer"):
            timers[cmd.start_timer.seq] = timer_due(
                st, ts, cmd.start_timer.start_to_fire_timeout.ToNanoseconds() / 1e9
            )
        elif cmd.HasField("cancel_timer"):
            timers.pop(cmd.cancel_timer.seq, None)
        elif cmd.HasField("schedule_activity"):
            sa = cmd.schedule_activity
            queued.extend(
                ts + d.ToNanoseconds() / 1e9
                for d in (sa.schedule_to_start_timeout, sa.schedule_to_close_timeout)
                if d.ToNanoseconds() > 0
            )
        elif cmd.HasField("schedule_local_activity") and cmd.schedule_local_activity.seq not in st.local_done:
            local = True
    if local:
        return ts
    times = [*timers.values(), *queued]
    if run_deadline is not None:
        times.append(run_deadline)
    return min(times, default=None)


def put_to_sleep(tx: Tx, driver: Driver, last_seen: int, wake: float | None) -> Any:
    """The driver's run becomes dormant, unless something arrived since ``last_seen``: then the
    fresh snapshot is returned instead (and the driver goes on). Under the run's row lock, so an
    event appended concurrently either comes first (and is seen here) or finds the run dormant
    (and wakes it)."""
    run = driver._owned(tx)
    if run is None:
        return driver._snapshot(tx, last_seen)  # closed: the driver finds out from the snapshot
    snap = driver._snapshot(tx, last_seen)
    if snap.events or snap.updates or snap.queries:
        return snap
    tx.execute(
        "UPDATE executions SET owner = NULL, dormant = 1, wake_at = %s WHERE run_id = %s",
        (wake, run.run_id),
    )
    records.on_release(tx, [(run.workflow_id, run.run_id)])
    return None


_MARKER = et.EVENT_TYPE_MARKER_RECORDED
_INPUTS = ", ".join(str(int(t)) for t in sorted(h.WAKING_EVENT_TYPES) if t != _MARKER)
_WFT_COMPLETED = int(et.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)

# True for a run (the row being updated) that has nothing to do until its `wake_at`: no failed
# workflow task to retry, no requested update or pending query, and no input event after the
# last one a workflow task consumed (a local activity's marker carries its seq; a patch marker,
# written by the task itself, does not).
_IDLE_SQL = f"""(
    executions.wft_attempt = 0
    AND (executions.wake_at IS NULL OR executions.wake_at > %s)
    AND NOT EXISTS (SELECT 1 FROM updates u WHERE u.run_id = executions.run_id AND u.state = 'requested')
    AND NOT EXISTS (SELECT 1 FROM queries q WHERE q.run_id = executions.run_id AND q.state = 'pending')
    AND NOT EXISTS (
        SELECT 1 FROM history i WHERE i.run_id = executions.run_id
        AND i.event_id > COALESCE((
            SELECT c.seq FROM history c WHERE c.run_id = executions.run_id
            AND c.event_type = {_WFT_COMPLETED} ORDER BY c.event_id DESC LIMIT 1), 0)
        AND (i.event_type IN ({_INPUTS}) OR (i.event_type = {int(_MARKER)} AND i.seq IS NOT NULL))
    )
)"""


def release(tx: Tx, where: str, params: tuple[Any, ...]) -> list[tuple[str, str, str]]:
    """Hand back the running runs selected by ``where`` (a condition on ``executions``): those
    with nothing to do until their `wake_at` become dormant, the others claimable at once.

    Wakes the claim loops of the task queues that have claimable runs now, or dormant ones
    (whose earliest `wake_at` may have moved). Returns (task queue, workflow id, run id) of each.
    """
    # Lock first: every transaction appending to one of these runs has then committed, and the
    # next statement (a new snapshot, on Postgres) sees its events; later ones find the run
    # released, and wake it themselves.
    lock = "" if tx.store.is_sqlite else " FOR UPDATE"
    if not tx.all(f"SELECT run_id FROM executions WHERE status = 1 AND {where}{lock}", params):
        return []
    now = tx.store.clock.now()
    rows = tx.all(
        f"UPDATE executions SET owner = NULL, dormant = CASE WHEN {_IDLE_SQL} THEN 1 ELSE 0 END"
        f" WHERE status = 1 AND {where} RETURNING task_queue, workflow_id, run_id",
        (now, *params),
    )
    released = [(str(q), str(w), str(r)) for q, w, r in rows]
    records.on_release(tx, [(w, r) for _, w, r in released])
    for q in {q for q, _, _ in released}:
        tx.notify(f"wf:{q}")
    return released


class Cache:
    """A worker's cache of runs, least recently used first: which idle runs to evict."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._order: OrderedDict[str, None] = OrderedDict()
        self._asked: set[str] = set()  # runs asked to sleep whose driver has not ended yet

    def touch(self, run_id: str) -> None:
        self._order[run_id] = None
        self._order.move_to_end(run_id)

    def forget(self, run_id: str) -> None:
        self._order.pop(run_id, None)
        self._asked.discard(run_id)

    def to_evict(self, drivers: Mapping[str, Driver]) -> list[Driver]:
        """Idle drivers to put to sleep so that at most ``capacity`` remain, least recently
        used first (drivers already asked count as gone); each is marked as asked."""
        over = len(drivers) - self.capacity - len(self._asked)
        out: list[Driver] = []
        if over <= 0:
            return out
        for run_id in self._order:
            d = drivers.get(run_id)
            if d is not None and d.idle and run_id not in self._asked:
                out.append(d)
                if len(out) >= over:
                    break
        for d in out:
            self._asked.add(d.run_id)
            d.sleep_requested = True
        return out
