"""Completed activity attempts recorded in one Postgres statement, sent from the worker's loop.

An activity's result must be durable within milliseconds of its return: a worker that dies
before then leaves a finished attempt to be run again. What costs time under load is not the
database (a commit takes a fraction of a millisecond) but every hand-off inside the worker
process: waking a thread, then waiting for the interpreter lock after each round trip while the
busy event loop holds it. So completed attempts take this path:

- Each attempt's two events (ActivityTaskStarted and ActivityTaskCompleted) are built in Python
  without their event ids. The statement appends the id as a trailing protobuf field 1 (a parser
  keeps the last value of a scalar field, so the stored event reads exactly as one serialized
  with its id), which lets one statement both take the ids and insert the events.
- That one statement locks the runs and the attempts (runs first, as drivers do), checks that
  each attempt is still current (the fence: a taken-over or timed-out attempt is refused, as a
  stale task token is on Temporal), appends the events, removes the tasks, makes dormant runs
  claimable and sends the wake-ups. In autocommit it is its own transaction: one round trip.
- `DirectWriter` sends it from the event loop on which the completion arrives, on the worker's
  `LoopPool`, in the same step as the completion: no thread, no wait for the lock before the
  commit reaches the server. Completions that arrive while every connection is busy
  are sent together next (group commit).

Anything this path cannot settle (an event already recorded, a scheduled event id that does not
match, SQLite, a lost connection) is answered with None, and the caller records it the general
way (`_activity_tasks.finish`), with that path's retries.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.history.v1 import message_pb2 as hist

from dbosify._dbos import records
from dbosify._engine import history as h
from dbosify._store import dbos_ids as ids

if TYPE_CHECKING:
    from temporalio.api.common.v1 import message_pb2 as common

    from dbosify._store import Store
    from dbosify._store.loop_pool import LoopPool
    from dbosify._store.store import Tx

logger = logging.getLogger("dbosify")

CONNECTIONS = 2  # batches in flight at once per worker; more completions wait and go together
_DRAIN_ROUNDS = 4  # batches one completion's coroutine sends before a task takes over
_ID_BYTES = 4  # the estimated size of an event id field, for HistorySizeBytes


@dataclass
class Completed:
    """One completed attempt, with its events built but for their ids."""

    run_id: str
    seq: int
    attempt: int
    scheduled_event_id: int
    started: bytes
    completed: bytes
    output: str  # the result as the run's DBOS step output (`_dbos.steps`)


def build(
    run_id: str, seq: int, attempt: int, scheduled_event_id: int,
    payload: common.Payloads | None, identity: str, now_ns: int,
) -> Completed:
    started = hist.HistoryEvent()
    started.event_time.FromNanoseconds(now_ns)
    h.set_attrs(started, et.EVENT_TYPE_ACTIVITY_TASK_STARTED, hist.ActivityTaskStartedEventAttributes(
        scheduled_event_id=scheduled_event_id, identity=identity, attempt=attempt
    ))
    done = hist.HistoryEvent()
    done.event_time.FromNanoseconds(now_ns)
    attrs = hist.ActivityTaskCompletedEventAttributes(scheduled_event_id=scheduled_event_id, identity=identity)
    if payload is not None:
        attrs.result.CopyFrom(payload)
    h.set_attrs(done, et.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, attrs)
    first = payload.payloads[0] if payload is not None and payload.payloads else None
    return Completed(
        run_id, seq, attempt, scheduled_event_id, started.SerializeToString(), done.SerializeToString(),
        json.dumps(records.payload_json(first) if first is not None else None),
    )


def varint_field_sql(expr: str) -> str:
    """SQL for the bytes of protobuf field 1 (varint) holding ``expr`` (0 <= expr < 2**28)."""
    x = f"({expr})"

    def byte(shift: int, more: bool) -> str:
        part = f"(({x} >> {shift}) & 127)" if shift else f"({x} & 127)"
        return f"({part} | 128)::int" if more else f"{part}::int"

    one = f"set_byte('\\x0800'::bytea, 1, {byte(0, False)})"
    two = f"set_byte(set_byte('\\x080000'::bytea, 1, {byte(0, True)}), 2, {byte(7, False)})"
    three = (
        f"set_byte(set_byte(set_byte('\\x08000000'::bytea, 1, {byte(0, True)}), 2, {byte(7, True)}),"
        f" 3, {byte(14, False)})"
    )
    four = (
        f"set_byte(set_byte(set_byte(set_byte('\\x0800000000'::bytea, 1, {byte(0, True)}), 2,"
        f" {byte(7, True)}), 3, {byte(14, True)}), 4, {byte(21, False)})"
    )
    return (
        f"CASE WHEN {x} < 128 THEN {one} WHEN {x} < 16384 THEN {two}"
        f" WHEN {x} < 2097152 THEN {three} ELSE {four} END"
    )


@functools.lru_cache(maxsize=64)
def statement(schema: str, steps_table: str | None = None) -> str:
    """The statement for ``schema`` (a namespace's Postgres schema, quoted here); with
    ``steps_table`` (DBOS's `operation_outputs`), it completes each attempt's DBOS step too
    (`_dbos.steps`: the step's `function_id` is the scheduled event's id)."""
    s = f'"{schema}"'
    op = (
        f" op AS (UPDATE {steps_table} o SET output = ids.output, completed_at_epoch_ms ="
        "  (extract(epoch FROM clock_timestamp()) * 1000)::bigint FROM ids JOIN u ON u.run_id = ids.run_id"
        "  WHERE o.workflow_uuid = %s || replace(replace(u.workflow_id, '%%', '%%25'), '/', '%%2F')"
        "   || '/' || ids.run_id AND o.function_id = ids.sched),"
        if steps_table else ""
    )
    return (
        "WITH k AS MATERIALIZED (SELECT DISTINCT ON (run_id, seq, attempt) * FROM unnest(%s::text[],"
        "  %s::int[], %s::int[], %s::bigint[], %s::bytea[], %s::bytea[], %s::text[])"
        "  AS k(run_id, seq, attempt, sched, started, completed, output)),"
        # The runs first, in a fixed order (drivers lock a run before its tasks), then the attempts.
        f" e AS MATERIALIZED (SELECT run_id FROM {s}.executions WHERE run_id = ANY(%s)"
        "  ORDER BY run_id FOR UPDATE),"
        " a AS MATERIALIZED (SELECT a.run_id, a.seq, a.attempt, a.state, a.scheduled_event_id,"
        f"  EXISTS (SELECT 1 FROM {s}.history h WHERE h.run_id = a.run_id"
        "   AND h.dedup IN ('act-start:' || a.seq, 'act-done:' || a.seq)) AS recorded"
        f"  FROM {s}.activity_tasks a WHERE (a.run_id, a.seq) IN (SELECT run_id, seq FROM k)"
        "  AND (SELECT count(*) FROM e) >= 0 ORDER BY a.run_id, a.seq FOR UPDATE OF a),"
        # The attempts still current (the fence) and not yet in history, two event ids each.
        " live AS MATERIALIZED (SELECT k.*, 2 * (row_number() OVER (PARTITION BY k.run_id"
        "  ORDER BY k.seq) - 1) AS off FROM k JOIN a ON a.run_id = k.run_id AND a.seq = k.seq"
        "  WHERE a.attempt = k.attempt AND a.state = 'running' AND NOT a.recorded"
        "  AND a.scheduled_event_id = k.sched),"
        # A result is work for its run: a dormant one becomes claimable (as `_engine.history.append` does).
        f" u AS (UPDATE {s}.executions x SET next_event_id = x.next_event_id + n.n, dormant = 0,"
        "  history_size_bytes = x.history_size_bytes + n.size"
        "  FROM (SELECT run_id, 2 * count(*) AS n,"
        f"   sum(octet_length(started) + octet_length(completed) + {2 * _ID_BYTES}) AS size"
        "   FROM live GROUP BY run_id) n WHERE x.run_id = n.run_id"
        "  RETURNING x.run_id, x.next_event_id - n.n AS first, x.owner IS NULL AND x.status = 1"
        "   AS unowned, x.task_queue, x.workflow_id),"
        " ids AS MATERIALIZED (SELECT l.*, u.first + l.off AS eid FROM live l JOIN u ON u.run_id = l.run_id),"
        f" ins AS (INSERT INTO {s}.history (run_id, event_id, event_type, seq, dedup, event)"
        f"  SELECT run_id, eid, {et.EVENT_TYPE_ACTIVITY_TASK_STARTED}, NULL, 'act-start:' || seq,"
        f"   started || {varint_field_sql('eid')} FROM ids"
        f"  UNION ALL SELECT run_id, eid + 1, {et.EVENT_TYPE_ACTIVITY_TASK_COMPLETED}, seq,"
        f"   'act-done:' || seq, completed || {varint_field_sql('eid + 1')} FROM ids),"
        f" del AS (DELETE FROM {s}.activity_tasks t USING ids WHERE t.run_id = ids.run_id AND t.seq = ids.seq),"
        f"{op}"
        # The wake-ups for other processes: the run's driver, history long-polls, and the claim
        # loops of its queue when no worker holds it.
        " keys AS (SELECT 'run:' || run_id AS key FROM u UNION SELECT 'hist:' || run_id FROM u"
        "  UNION SELECT 'wf:' || task_queue FROM u WHERE unowned)"
        " SELECT k.run_id, k.seq, k.attempt, CASE WHEN ids.run_id IS NOT NULL THEN 'done'"
        "  WHEN a.run_id IS NOT NULL AND a.attempt = k.attempt AND a.state = 'running' THEN 'recheck'"
        "  ELSE 'stale' END, u.unowned, u.task_queue,"
        "  (SELECT string_agg(pg_notify(%s, key)::text, '') FROM keys)"
        " FROM k LEFT JOIN ids ON ids.run_id = k.run_id AND ids.seq = k.seq AND ids.attempt = k.attempt"
        " LEFT JOIN a ON a.run_id = k.run_id AND a.seq = k.seq"
        " LEFT JOIN u ON u.run_id = k.run_id"
    )


def params(items: Sequence[Completed], channel: str, steps_prefix: str | None = None) -> tuple[Any, ...]:
    """The statement's values; ``steps_prefix``: the namespace's part of DBOS IDs plus ``/``
    when the statement completes DBOS steps."""
    return (
        [i.run_id for i in items], [i.seq for i in items], [i.attempt for i in items],
        [i.scheduled_event_id for i in items], [i.started for i in items],
        [i.completed for i in items], [i.output for i in items], sorted({i.run_id for i in items}),
        *([steps_prefix] if steps_prefix is not None else []), channel,
    )


def statement_for(store: Store, namespace: str, items: Sequence[Completed]) -> tuple[str, tuple[Any, ...]]:
    """The statement and its values for ``namespace``."""
    channel = store.ident(namespace)
    if not store.dbos_on(namespace):
        return statement(channel), params(items, channel)
    dbos_schema = store.dbos_schema_of(namespace)
    return (
        statement(channel, f'"{dbos_schema}".operation_outputs'),
        params(items, channel, f"{ids.quote(namespace)}/"),
    )


def verdicts(items: Sequence[Completed], rows: Sequence[Sequence[Any]]) -> tuple[list[bool | None], set[str]]:
    """Per item: True (recorded now), False (no longer current), None (record it the general
    way); and the wake-up keys to fire in this process."""
    by_key = {(str(r[0]), int(r[1]), int(r[2])): r for r in rows}
    out: list[bool | None] = []
    keys: set[str] = set()
    seen: set[tuple[str, int, int]] = set()
    for i in items:
        key = (i.run_id, i.seq, i.attempt)
        r = by_key.get(key)
        verdict = None if r is None else r[3]
        if key in seen:
            out.append(False if verdict == "done" else None)  # the same attempt twice: once
        elif verdict == "done":
            out.append(True)
            keys.update((f"run:{i.run_id}", f"hist:{i.run_id}"))
            if r is not None and r[4]:
                keys.add(f"wf:{r[5]}")
        else:
            out.append(False if verdict == "stale" else None)
        seen.add(key)
    return out, keys


def record_in(tx: Tx, items: Sequence[Completed]) -> list[bool | None]:
    """The statement inside ``tx`` (the general path's transaction, on Postgres)."""
    rows = tx.all(*statement_for(tx.store, tx.namespace, items))
    out, keys = verdicts(items, rows)
    for key in keys:
        tx.notify(key)
    tx.published.update(keys)  # the statement sent them
    return out


class DirectWriter:
    """Sends completed attempts from the worker's event loop (see the module's docstring)."""

    def __init__(self, store: Store, namespace: str, pool: LoopPool) -> None:
        self.store = store
        self.ns = namespace
        self.pool = pool
        self._sending = 0
        self._pending: list[tuple[Completed, asyncio.Future[bool | None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(self, item: Completed) -> bool | None:
        if not self.pool.usable():
            return None  # another loop's completion, or shutting down: the general path takes it
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool | None] = loop.create_future()
        self._pending.append((item, done))
        if self._sending < CONNECTIONS:
            # Sent in this step: no thread, no later turn of a busy loop before the commit.
            self._sending += 1
            try:
                await self._drain(_DRAIN_ROUNDS)
            finally:
                self._sending -= 1
                self._hand_over(loop)
        return await done

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """What is still pending goes on in a task of its own."""
        if self._pending and self._sending < CONNECTIONS:
            self._sending += 1
            task = loop.create_task(self._drain_task())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain_task(self) -> None:
        try:
            await self._drain(None)
        finally:
            self._sending -= 1

    async def _drain(self, rounds: int | None) -> None:
        while self._pending and (rounds is None or rounds > 0):
            if rounds is not None:
                rounds -= 1
            batch, self._pending = self._pending, []
            items = [b[0] for b in batch]
            try:
                rows = await self.pool.fetch(*statement_for(self.store, self.ns, items))
                values, keys = verdicts(items, rows)
            except Exception as err:
                logger.debug("dbosify: direct result write failed (%s); the general path records them", err)
                values, keys = [None] * len(items), set()
            except BaseException:  # cancelled: the others' completions go the general way
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
                raise
            for key in keys:
                self.store.hub.fire(f"{self.ns}\x00{key}")
            for (_, fut), value in zip(batch, values, strict=True):
                if not fut.done():
                    fut.set_result(value)
