"""A run's history: Temporal-shaped events appended in the same transaction as their effect.

The history table is the checkpoint of every nondeterministic fact a workflow sees
(activity results, timer firings, signals, accepted updates, cancel requests).
Workers build activations from it and replay it on recovery; clients read it as
``fetch_history()`` does on Temporal.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.history.v1 import message_pb2 as hist

from dbosify._store import Tx

RUNNING = wfenums.WORKFLOW_EXECUTION_STATUS_RUNNING
COMPLETED = wfenums.WORKFLOW_EXECUTION_STATUS_COMPLETED
FAILED = wfenums.WORKFLOW_EXECUTION_STATUS_FAILED
CANCELED = wfenums.WORKFLOW_EXECUTION_STATUS_CANCELED
TERMINATED = wfenums.WORKFLOW_EXECUTION_STATUS_TERMINATED
CONTINUED_AS_NEW = wfenums.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW
TIMED_OUT = wfenums.WORKFLOW_EXECUTION_STATUS_TIMED_OUT

# Event type -> the attributes field of HistoryEvent that holds its attributes.
ATTR_FIELD: dict[int, str] = {}
for _name, _value in et.EventType.items():
    if _value:
        ATTR_FIELD[_value] = _name[len("EVENT_TYPE_") :].lower() + "_event_attributes"

CLOSE_EVENT_TYPES = {
    et.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    et.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    et.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    et.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    et.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    et.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
}


def new_run_id() -> str:
    """A time-ordered UUIDv7, like the run ids Temporal assigns."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


@dataclass
class Run:
    """One row of the executions table."""

    run_id: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    status: int
    first_execution_run_id: str
    start_time: float
    close_time: float | None
    next_event_id: int
    owner: str | None
    parent_namespace: str | None
    parent_workflow_id: str | None
    parent_run_id: str | None
    parent_seq: int | None
    request_id: str | None
    wft_failure: bytes | None
    wft_attempt: int
    execution_deadline: float | None
    run_deadline: float | None
    not_before: float | None
    claim_gen: int  # incremented by every claim: the fence a driver's writes check
    schedule_id: str | None = None  # the schedule whose action started this run (and its chain)
    cron_schedule: str | None = None  # the start option: when the run closes, the next one starts
    dormant: int = 0  # evicted and unowned: claimed again when it has work or wake_at passes
    wake_at: float | None = None  # its earliest due timer or timeout, as its driver last recorded
    # Its priority as started (merged with its parent's; 0 and '' unset): what its activities inherit.
    priority_key: int = 0
    fairness_key: str = ""
    fairness_weight: float = 0.0


    @property
    def running(self) -> bool:
        return self.status == RUNNING


RUN_COLUMNS = (
    "run_id, workflow_id, workflow_type, task_queue, status, first_execution_run_id, start_time,"
    " close_time, next_event_id, owner, parent_namespace, parent_workflow_id, parent_run_id,"
    " parent_seq, request_id, wft_failure, wft_attempt, execution_deadline, run_deadline, not_before,"
    " claim_gen, schedule_id, cron_schedule, dormant, wake_at, priority_key, fairness_key, fairness_weight"
)

# Events that give a run work: appending one clears `dormant`, so a live worker claims it again.
WAKING_EVENT_TYPES = frozenset({
    et.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    et.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    et.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED,
    et.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    et.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    et.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    et.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
    et.EVENT_TYPE_TIMER_FIRED,
    et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED,
    et.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED,
    et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED,
    et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
    et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED,
    et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
    et.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
    et.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
    et.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED,
    et.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
    et.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED,
    et.EVENT_TYPE_MARKER_RECORDED,
    et.EVENT_TYPE_NEXUS_OPERATION_STARTED,
    et.EVENT_TYPE_NEXUS_OPERATION_COMPLETED,
    et.EVENT_TYPE_NEXUS_OPERATION_FAILED,
    et.EVENT_TYPE_NEXUS_OPERATION_CANCELED,
    et.EVENT_TYPE_NEXUS_OPERATION_TIMED_OUT,
})


def wake(tx: Tx, run: Run) -> None:
    """``run`` (read under its row lock) has new work that is not an event (an update, a query):
    if it is dormant, make it claimable; if no worker owns it, wake its task queue's workers."""
    if run.dormant:
        tx.execute("UPDATE executions SET dormant = 0 WHERE run_id = %s", (run.run_id,))
    if run.owner is None and run.running:
        tx.notify(f"wf:{run.task_queue}")


def _run(row: Any) -> Run | None:
    if row is None:
        return None
    r = Run(*row)
    if r.wft_failure is not None:
        r.wft_failure = bytes(r.wft_failure)
    return r


def get_run(tx: Tx, run_id: str, *, lock: bool = False) -> Run | None:
    sql = f"SELECT {RUN_COLUMNS} FROM executions WHERE run_id = %s"
    if lock and not tx.store.is_sqlite:
        sql += " FOR UPDATE"
    return _run(tx.one(sql, (run_id,)))


def current_run(tx: Tx, workflow_id: str, *, lock: bool = False) -> Run | None:
    """The running run of ``workflow_id``, else its latest run."""
    sql = (
        f"SELECT {RUN_COLUMNS} FROM executions WHERE workflow_id = %s"
        " ORDER BY (status = 1) DESC, start_time DESC LIMIT 1"
    )
    if lock and not tx.store.is_sqlite:
        sql += " FOR UPDATE"
    run = _run(tx.one(sql, (workflow_id,)))
    if lock and not tx.store.is_sqlite:
        # Postgres (READ COMMITTED): a row lock waited for gives the row as its holder committed
        # it, but not the rows that holder inserted, which are outside this statement's snapshot.
        # A run that closed into a successor (continue-as-new, a retry, the next cron run) while
        # we waited comes back closed with its successor unseen; a new statement sees it, so a
        # signal or update racing the close reaches the new run, as on Temporal.
        for _ in range(8):
            if run is None or run.running:
                break
            again = _run(tx.one(sql, (workflow_id,)))
            if again is None or again.run_id == run.run_id:
                return again
            run = again
    return run


def find_run(tx: Tx, workflow_id: str, run_id: str | None, *, lock: bool = False) -> Run | None:
    if run_id:
        run = get_run(tx, run_id, lock=lock)
        if run is None or run.workflow_id != workflow_id:
            return None
        return run
    return current_run(tx, workflow_id, lock=lock)


def set_attrs(event: hist.HistoryEvent, event_type: int, attrs: Message | None) -> None:
    event.event_type = event_type  # type: ignore[assignment]
    field = getattr(event, ATTR_FIELD[event_type])
    if attrs is not None:
        field.CopyFrom(attrs)
    else:
        field.SetInParent()


_ENVELOPE_BYTES = 24


def append(
    tx: Tx,
    run_id: str,
    event_type: int,
    attrs: Message | None = None,
    *,
    seq: int | None = None,
    dedup: str | None = None,
    at: float | None = None,
    metadata: Message | None = None,
    links: Sequence[Message] = (),
) -> int | None:
    """Append one event to a run's history and wake its driver.

    Returns the new event id, or None when an event with the same ``dedup`` key
    is already there (so effects that may be retried append once).
    """
    if dedup is not None and tx.one(
        "SELECT 1 FROM history WHERE run_id = %s AND dedup = %s", (run_id, dedup)
    ):
        return None
    # HistorySizeBytes, kept without a second statement: the event's size but for the few bytes
    # of its envelope (id, time, type), which are estimated.
    size = _ENVELOPE_BYTES + (attrs.ByteSize() if attrs is not None else 0)
    if metadata is not None:
        size += metadata.ByteSize()
    if event_type in WAKING_EVENT_TYPES:
        # Work for the run: a dormant one becomes claimable, in the same statement; the claim
        # loops of its task queue are woken when no worker owns it (a driver hears `run:`).
        row = tx.one(
            "UPDATE executions SET next_event_id = next_event_id + 1, dormant = 0,"
            " history_size_bytes = history_size_bytes + %s WHERE run_id = %s"
            " RETURNING next_event_id - 1, owner IS NULL AND status = 1, task_queue, workflow_id",
            (size, run_id),
        )
        if row is not None and row[1]:
            tx.notify(f"wf:{row[2]}")
    else:
        row = tx.one(
            "UPDATE executions SET next_event_id = next_event_id + 1,"
            " history_size_bytes = history_size_bytes + %s WHERE run_id = %s"
            " RETURNING next_event_id - 1, NULL, NULL, workflow_id",
            (size, run_id),
        )
    if row is None:
        raise KeyError(run_id)
    event_id = int(row[0])
    event = hist.HistoryEvent(event_id=event_id)
    event.event_time.FromNanoseconds(int((at if at is not None else tx.store.clock.now()) * 1e9))
    set_attrs(event, event_type, attrs)
    if metadata is not None and metadata.ByteSize():
        event.user_metadata.CopyFrom(metadata)  # type: ignore[arg-type]
    if links:
        event.links.extend(links)  # type: ignore[arg-type]
    tx.execute(
        "INSERT INTO history (run_id, event_id, event_type, seq, dedup, event)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (run_id, event_id, event_type, seq, dedup, event.SerializeToString()),
    )
    if event_type in steps.WATCHED:  # the run's DBOS steps, in this transaction
        steps.on_event(tx, run_id, str(row[3]), event_id, event_type, attrs, seq)
    tx.notify(f"run:{run_id}")  # the run's driver
    tx.notify(f"hist:{run_id}")  # history long-polls
    return event_id


def load_events(tx: Tx, run_id: str, after: int = 0) -> list[tuple[hist.HistoryEvent, int | None]]:
    rows = tx.all(
        "SELECT event, seq FROM history WHERE run_id = %s AND event_id > %s ORDER BY event_id",
        (run_id, after),
    )
    return [(hist.HistoryEvent.FromString(bytes(r[0])), r[1]) for r in rows]


def attrs_of(event: hist.HistoryEvent) -> Any:
    return getattr(event, ATTR_FIELD[event.event_type])


def execution(run: Run) -> common.WorkflowExecution:
    return common.WorkflowExecution(workflow_id=run.workflow_id, run_id=run.run_id)


from dbosify._dbos import steps  # noqa: E402  (it reads this module's names)
