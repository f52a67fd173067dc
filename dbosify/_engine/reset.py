"""Workflow reset (ResetWorkflowExecution): a new run that resumes an old one from a workflow task.

`reset_run` does it in the caller's transaction, so the RPC (`dbosify._server.reset`) and DBOS's
``fork`` (`dbosify._worker.dbos_fork`) share it.
As on Temporal, resetting run B to the workflow task that finished at event F (a
WorkflowTaskCompleted, or the WorkflowTaskStarted before it) makes a new run R of the same
workflow id whose history is B's events 1..F-1, then

1. the workflow task that was in flight there is failed with cause RESET_WORKFLOW (its
   ``new_run_id`` is R: the worker re-runs that task and gives the workflow a new random seed,
   ``workflow.random_seed()``, exactly once);
2. B's events after F-1, and those of the runs it continued as new into, are reapplied: signals,
   and updates (as UpdateAdmitted, origin REAPPLY) unless excluded by ``reset_reapply_type`` /
   ``reset_reapply_exclude_types``; results of child workflows pending at F-1 too, and a child
   still running reports to R from then on; cancel requests and terminations are not;
3. post-reset signals are appended.

Activities pending at F-1 are scheduled again from attempt 1, timers pending there fire at their
original time. The workflow's current run, if running, is terminated with the reset's reason
(identity ``history-resetter``) in the same transaction, and B records R as its reset run. A
request id seen before returns the run it created.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.enums.v1 import failed_cause_pb2 as wft_cause
from temporalio.api.enums.v1 import reset_pb2
from temporalio.api.enums.v1 import update_pb2 as upd_enums
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.workflow.v1 import message_pb2 as wf_pb

from dbosify._dbos import records
from dbosify._engine import history as h
from dbosify._engine import priorities
from dbosify._engine import runs as _runs
from dbosify._engine.errors import ServiceError
from dbosify._store import Tx

E = et
IDENTITY_RESETTER = "history-resetter"  # Temporal's identity on the terminated current run
IDENTITY_HISTORY = "history-service"  # and on the workflow task it fails

EXCLUDE_SIGNAL = reset_pb2.RESET_REAPPLY_EXCLUDE_TYPE_SIGNAL
EXCLUDE_UPDATE = reset_pb2.RESET_REAPPLY_EXCLUDE_TYPE_UPDATE

_CHILD_RESULTS = {
    E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
    E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
}
_CHILD_CLOSED = _CHILD_RESULTS - {E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED}
_ACTIVITY_DONE = {
    E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    E.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    E.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
}


def exclude_types(exclude: Iterable[int], reapply_type: int) -> set[int]:
    """What is not reapplied: the exclude list plus the deprecated reapply type, as Temporal reads
    them (unspecified and ALL_ELIGIBLE reapply everything eligible)."""
    out = set(exclude)
    if reapply_type == reset_pb2.RESET_REAPPLY_TYPE_SIGNAL:
        out.add(EXCLUDE_UPDATE)
    elif reapply_type == reset_pb2.RESET_REAPPLY_TYPE_NONE:
        out.update((EXCLUDE_SIGNAL, EXCLUDE_UPDATE))
    return out


def workflow_task_points(events: Sequence[hist.HistoryEvent]) -> list[int]:
    """Every event id a run can be reset to: each WorkflowTaskCompleted's (first to last)."""
    return [e.event_id for e in events if e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]


def reset_point(tx: Tx, run_id: str, reset_type: int) -> int:
    """The event id of Temporal's ResetType (first or last workflow task) in a run's history."""
    points = workflow_task_points([e for e, _ in h.load_events(tx, run_id, 0)])
    if not points:
        raise ServiceError.invalid("the run has no completed workflow task to reset to")
    if reset_type == reset_pb2.RESET_TYPE_FIRST_WORKFLOW_TASK:
        return points[0]
    if reset_type == reset_pb2.RESET_TYPE_LAST_WORKFLOW_TASK:
        return points[-1]
    raise ServiceError.invalid(f"unsupported reset type {reset_type}")


@dataclass
class _Kept:
    """What the new run carries over from the base run's history (events 1..cut)."""

    events: list[tuple[hist.HistoryEvent, int | None]]
    pending_activities: dict[int, tuple[hist.HistoryEvent, int]]  # scheduled event id -> (event, seq)
    cancel_requested: set[int]  # scheduled event ids of activities whose cancel was requested
    pending_children: dict[int, str]  # initiated event id -> child workflow id
    accepted_updates: dict[str, int]  # update id -> accepted event id
    completed_updates: dict[str, Any]  # update id -> outcome


def _kept(events: list[tuple[hist.HistoryEvent, int | None]]) -> _Kept:
    k = _Kept(events, {}, set(), {}, {}, {})
    for ev, seq in events:
        t = ev.event_type
        if t == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and seq is not None:
            k.pending_activities[ev.event_id] = (ev, seq)
        elif t in _ACTIVITY_DONE:
            k.pending_activities.pop(h.attrs_of(ev).scheduled_event_id, None)
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED:
            k.cancel_requested.add(ev.activity_task_cancel_requested_event_attributes.scheduled_event_id)
        elif t == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            k.pending_children[ev.event_id] = ev.start_child_workflow_execution_initiated_event_attributes.workflow_id
        elif t in _CHILD_CLOSED:
            k.pending_children.pop(h.attrs_of(ev).initiated_event_id, None)
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            k.accepted_updates[ev.workflow_execution_update_accepted_event_attributes.protocol_instance_id] = ev.event_id
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            a = ev.workflow_execution_update_completed_event_attributes
            k.completed_updates[a.meta.update_id] = a.outcome
    return k


def _check_point(events: list[tuple[hist.HistoryEvent, int | None]], next_event_id: int, finish: int) -> None:
    if finish <= 1 or finish >= next_event_id:
        raise ServiceError.invalid("Workflow task finish ID must be > 1 && <= workflow last event ID.")
    before = events[finish - 2][0]  # event finish-1
    if before.event_type not in (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, E.EVENT_TYPE_WORKFLOW_TASK_STARTED):
        raise ServiceError.invalid(
            "Can only reset workflow to event ID in range [WorkflowTaskScheduled +1,"
            f" WorkflowTaskStarted + 1]: {finish}"
        )


def _chain_after(tx: Tx, base: h.Run, cut: int, events: list[tuple[hist.HistoryEvent, int | None]]) -> list[hist.HistoryEvent]:
    """The base run's events after the cut, then all events of the runs it continued as new into."""
    out = [e for e, _ in events if e.event_id > cut]
    last = events[-1][0] if events else None
    seen = {base.run_id}
    while last is not None and last.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
        nxt = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        if not nxt or nxt in seen:
            break
        seen.add(nxt)
        more = [e for e, _ in h.load_events(tx, nxt, 0)]
        out.extend(more)
        last = more[-1] if more else None
    return out


def _insert_run(tx: Tx, base: h.Run, run_id: str, started: hist.WorkflowExecutionStartedEventAttributes,
                request_id: str, now: float) -> None:
    row = tx.one(
        "SELECT root_workflow_id, root_run_id, memo, search_attributes FROM executions WHERE run_id = %s",
        (base.run_id,),
    )
    assert row is not None
    root_wf, root_run, memo, search_attrs = row
    if root_run == base.run_id:
        root_wf, root_run = base.workflow_id, run_id
    run_deadline = base.execution_deadline
    if started.HasField("workflow_run_timeout") and started.workflow_run_timeout.ToNanoseconds():
        own = now + started.workflow_run_timeout.ToNanoseconds() / 1e9
        run_deadline = own if run_deadline is None else min(own, run_deadline)
    tx.execute(
        "INSERT INTO executions (run_id, workflow_id, workflow_type, task_queue, status,"
        " first_execution_run_id, start_time, next_event_id, parent_namespace, parent_workflow_id,"
        " parent_run_id, parent_seq, request_id, execution_deadline, run_deadline, execution_time,"
        " root_workflow_id, root_run_id, memo, search_attributes, schedule_id, cron_schedule,"
        " reset_request_id)"
        " VALUES (%s, %s, %s, %s, 1, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            run_id, base.workflow_id, base.workflow_type, base.task_queue, base.first_execution_run_id,
            now, base.parent_namespace, base.parent_workflow_id, base.parent_run_id, base.parent_seq,
            base.request_id, base.execution_deadline, run_deadline, now, root_wf, root_run, memo,
            search_attrs, base.schedule_id, base.cron_schedule, request_id or None,
        ),
    )
    tx.execute(
        "INSERT INTO search_attributes (run_id, name, v_text, v_int, v_num)"
        " SELECT %s, name, v_text, v_int, v_num FROM search_attributes WHERE run_id = %s",
        (run_id, base.run_id),
    )


def _copy_history(tx: Tx, base: h.Run, run_id: str, cut: int) -> None:
    tx.execute(
        "INSERT INTO history (run_id, event_id, event_type, seq, dedup, event)"
        " SELECT %s, event_id, event_type, seq, dedup, event FROM history"
        " WHERE run_id = %s AND event_id <= %s",
        (run_id, base.run_id, cut),
    )
    size = tx.one(
        "SELECT COALESCE(sum(length(event)), 0) FROM history WHERE run_id = %s", (run_id,)
    )
    tx.execute(
        "UPDATE executions SET next_event_id = %s, history_size_bytes = %s WHERE run_id = %s",
        (cut + 1, int(size[0]) if size else 0, run_id),
    )


def _fail_task(tx: Tx, base: h.Run, run_id: str, kept: _Kept, reason: str) -> None:
    last = kept.events[-1][0]
    if last.event_type == E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
        sched_id = last.event_id
        started_id = h.append(
            tx, run_id, E.EVENT_TYPE_WORKFLOW_TASK_STARTED,
            hist.WorkflowTaskStartedEventAttributes(scheduled_event_id=sched_id, identity=IDENTITY_HISTORY),
        ) or 0
    else:
        started_id = last.event_id
        sched_id = last.workflow_task_started_event_attributes.scheduled_event_id
    failed = hist.WorkflowTaskFailedEventAttributes(
        scheduled_event_id=sched_id, started_event_id=started_id,
        cause=wft_cause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW,
        failure=failure_pb.Failure(
            message=reason, reset_workflow_failure_info=failure_pb.ResetWorkflowFailureInfo()
        ),
        identity=IDENTITY_HISTORY, base_run_id=base.run_id, new_run_id=run_id,
    )
    h.append(tx, run_id, E.EVENT_TYPE_WORKFLOW_TASK_FAILED, failed)


def _carry_state(tx: Tx, base: h.Run, run_id: str, kept: _Kept, now: float) -> None:
    """Activity tasks, updates and children pending at the reset point, as the new run's."""
    for sched_id, (ev, seq) in kept.pending_activities.items():
        a = ev.activity_task_scheduled_event_attributes
        key, fairness, weight = priorities.effective(
            priorities.merge(priorities.of_run(tx, run_id), a.priority if a.HasField("priority") else None)
        )
        tx.execute(
            "INSERT INTO activity_tasks (run_id, seq, task_queue, attempt, state, available_at,"
            " scheduled_event_id, scheduled_time, cancel_requested, task_priority, fairness_key,"
            " fairness_weight) VALUES (%s, %s, %s, 1, 'scheduled', %s, %s, %s, %s, %s, %s, %s)",
            (run_id, seq, a.task_queue.name, now, sched_id, now, int(sched_id in kept.cancel_requested),
             key, fairness, weight),
        )
        tx.notify(f"act:{a.task_queue.name}")
    for update_id in kept.accepted_updates:
        row = tx.one(
            "SELECT request FROM updates WHERE run_id = %s AND update_id = %s", (base.run_id, update_id)
        )
        if row is None:
            continue
        outcome = kept.completed_updates.get(update_id)
        tx.execute(
            "INSERT INTO updates (run_id, update_id, state, request, outcome) VALUES (%s, %s, %s, %s, %s)",
            (run_id, update_id, "completed" if outcome is not None else "accepted", row[0],
             outcome.SerializeToString() if outcome is not None else None),
        )
    if kept.pending_children:
        # A child still running reports its result to the new run (Temporal follows the reset).
        for child_wf in set(kept.pending_children.values()):
            tx.execute(
                "UPDATE executions SET parent_run_id = %s WHERE workflow_id = %s AND parent_run_id = %s"
                " AND status = 1",
                (run_id, child_wf, base.run_id),
            )


def _reapply(tx: Tx, run_id: str, after: list[hist.HistoryEvent], kept: _Kept, exclude: set[int]) -> None:
    seen_updates: set[str] = set(kept.accepted_updates)
    for ev in after:
        t = ev.event_type
        if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            if EXCLUDE_SIGNAL in exclude:
                continue
            s = ev.workflow_execution_signaled_event_attributes
            a = hist.WorkflowExecutionSignaledEventAttributes(
                signal_name=s.signal_name, identity=s.identity, request_id=s.request_id
            )
            if s.HasField("input"):
                a.input.CopyFrom(s.input)
            if s.HasField("header"):
                a.header.CopyFrom(s.header)
            h.append(tx, run_id, t, a, dedup=f"signal:{s.request_id}" if s.request_id else None)
        elif t in (E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED, E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED):
            if EXCLUDE_UPDATE in exclude:
                continue
            if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED:
                request = ev.workflow_execution_update_admitted_event_attributes.request
            else:
                acc = ev.workflow_execution_update_accepted_event_attributes
                if not acc.HasField("accepted_request"):
                    continue  # its UpdateAdmitted event, earlier, carried the request
                request = acc.accepted_request
            update_id = request.meta.update_id
            if update_id in seen_updates:
                continue
            seen_updates.add(update_id)
            adm = hist.WorkflowExecutionUpdateAdmittedEventAttributes(
                origin=upd_enums.UPDATE_ADMITTED_EVENT_ORIGIN_REAPPLY
            )
            adm.request.CopyFrom(request)
            h.append(tx, run_id, E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED, adm)
            tx.execute(
                "INSERT INTO updates (run_id, update_id, state, request) VALUES (%s, %s, 'requested', %s)",
                (run_id, update_id, request.SerializeToString()),
            )
            tx.notify(f"u:{run_id}")
        elif t in _CHILD_RESULTS:
            attrs = h.attrs_of(ev)
            if attrs.initiated_event_id not in kept.pending_children:
                continue
            seq = _initiated_seq(kept, attrs.initiated_event_id)
            closing = t != E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
            h.append(tx, run_id, t, attrs, seq=seq, dedup=f"child-done:{seq}" if closing else None)


def _initiated_seq(kept: _Kept, initiated_event_id: int) -> int | None:
    for ev, seq in kept.events:
        if ev.event_id == initiated_event_id:
            return seq
    return None


def _post_reset(tx: Tx, run_id: str, operations: Sequence[wf_pb.PostResetOperation], identity: str) -> None:
    for op in operations:
        if op.HasField("signal_workflow"):
            s = op.signal_workflow
            a = hist.WorkflowExecutionSignaledEventAttributes(signal_name=s.signal_name, identity=identity)
            if s.HasField("input"):
                a.input.CopyFrom(s.input)
            if s.HasField("header"):
                a.header.CopyFrom(s.header)
            h.append(tx, run_id, E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, a)
        else:
            raise ServiceError.unimplemented(
                "dbosify supports only the SignalWorkflow post-reset operation (no worker versioning)"
            )


def reset_run(
    tx: Tx,
    *,
    workflow_id: str,
    run_id: str | None,
    finish_event_id: int,
    reason: str,
    request_id: str = "",
    identity: str = "",
    exclude: Iterable[int] = (),
    post_reset_operations: Sequence[wf_pb.PostResetOperation] = (),
    new_run_id: str | None = None,
) -> str:
    """Reset a run (``run_id``, else the workflow's current run) to the workflow task that
    finished at ``finish_event_id``; returns the new run's id (``new_run_id`` when given). See
    the module's docstring."""
    base = h.find_run(tx, workflow_id, run_id or None, lock=True)
    if base is None:
        if run_id:
            raise ServiceError.not_found(
                f"workflow execution not found for workflow ID {workflow_id!r} and run ID {run_id!r}"
            )
        raise ServiceError.not_found(f"workflow not found for ID: {workflow_id}")
    current = h.current_run(tx, workflow_id, lock=True)
    if request_id and current is not None and current.running:
        row = tx.one("SELECT reset_request_id FROM executions WHERE run_id = %s", (current.run_id,))
        if row is not None and row[0] == request_id:
            return current.run_id  # the same request again
    events = h.load_events(tx, base.run_id, 0)
    _check_point(events, base.next_event_id, finish_event_id)
    cut = finish_event_id - 1
    kept = _kept(events[:cut])
    after = _chain_after(tx, base, cut, events)
    if current is not None and current.running:
        attrs = hist.WorkflowExecutionTerminatedEventAttributes(reason=reason, identity=IDENTITY_RESETTER)
        _runs.close_run(tx, current, h.TERMINATED, E.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, attrs)
    now = tx.store.clock.now()
    new_id = new_run_id or h.new_run_id()
    started = events[0][0].workflow_execution_started_event_attributes
    _insert_run(tx, base, new_id, started, request_id, now)
    _copy_history(tx, base, new_id, cut)
    _fail_task(tx, base, new_id, kept, reason)
    _carry_state(tx, base, new_id, kept, now)
    _reapply(tx, new_id, after, kept, set(exclude))
    _post_reset(tx, new_id, post_reset_operations, identity)
    tx.execute("UPDATE executions SET reset_run_id = %s WHERE run_id = %s", (new_id, base.run_id))
    parent = (
        (base.parent_namespace or tx.namespace, base.parent_workflow_id, base.parent_run_id)
        if base.parent_workflow_id and base.parent_run_id else None
    )
    records.on_start(tx, base.workflow_id, new_id, base.workflow_type, base.task_queue, started.input, parent)
    tx.notify(f"wf:{base.task_queue}")
    return new_id
