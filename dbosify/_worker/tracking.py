"""What a run's driver knows between workflow tasks: its timers, activities, local activities
and children, tracked from history on replay and from each task's commands when live."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import event_type_pb2 as E
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify._worker import activations as A
from dbosify._worker import nexus_jobs
from dbosify._worker.activations import ACTIVITY_CANCEL_TRY, ACTIVITY_CANCEL_WAIT


@dataclass
class DriverState:
    consumed: int = 0
    timers: dict[int, float] = field(default_factory=dict)  # seq -> when it fires
    timer_floor: float = 0.0  # the store clock's `timer_floor`
    activity_cancel_type: dict[int, int] = field(default_factory=dict)
    activity_cancelled: set[int] = field(default_factory=set)  # cancelled with TRY_CANCEL / ABANDON
    # Activities with a schedule-to-start or schedule-to-close timeout: when to check whether the
    # task is still waiting in its queue (a running attempt's timeouts are its worker's watchdog's).
    queued_checks: dict[int, float] = field(default_factory=dict)
    activity_open: set[int] = field(default_factory=set)
    scheduled: dict[int, Any] = field(default_factory=dict)
    local_pending: dict[int, wc.ScheduleLocalActivity] = field(default_factory=dict)
    local_done: set[int] = field(default_factory=set)
    local_meta: dict[int, Any] = field(default_factory=dict)
    patches: list[str] = field(default_factory=list)
    flags: set[int] = field(default_factory=set)
    children: dict[int, str] = field(default_factory=dict)  # seq -> child workflow id
    nexus: nexus_jobs.CallerState = field(default_factory=nexus_jobs.CallerState)  # the Nexus caller's


def timer_due(st: DriverState, started: float, duration: float) -> float:
    """When a timer started at ``started`` (its TimerStarted event's time: when the workflow
    task that started it took effect) fires: never sooner than the clock's floor."""
    return started + max(duration, st.timer_floor)


def history_outputs(st: DriverState, events: list[tuple[hist.HistoryEvent, int | None]]) -> None:
    """Timers, activities, local activities and children started by the history's commands."""
    for ev, seq in events:
        t = ev.event_type
        if t == E.EVENT_TYPE_TIMER_STARTED and seq is not None:
            dur = ev.timer_started_event_attributes.start_to_fire_timeout.ToNanoseconds() / 1e9
            st.timers.setdefault(seq, timer_due(st, ev.event_time.ToNanoseconds() / 1e9, dur))
        elif t in (E.EVENT_TYPE_TIMER_FIRED, E.EVENT_TYPE_TIMER_CANCELED) and seq is not None:
            st.timers.pop(seq, None)
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and seq is not None:
            st.scheduled[seq] = ev.activity_task_scheduled_event_attributes
            st.activity_open.add(seq)
        elif t in (
            E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            E.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
            E.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
        ) and seq is not None:
            st.activity_open.discard(seq)
        elif t == E.EVENT_TYPE_MARKER_RECORDED and seq is not None:
            st.local_done.add(seq)
            st.local_pending.pop(seq, None)
        elif t == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED and seq is not None:
            st.children[seq] = ev.start_child_workflow_execution_initiated_event_attributes.workflow_id

def inputs(st: DriverState, inputs: list[tuple[hist.HistoryEvent, int | None]]) -> None:
    """What a workflow task's input events resolve."""
    for ev, seq in inputs:
        if ev.event_type == E.EVENT_TYPE_TIMER_FIRED and seq is not None:
            st.timers.pop(seq, None)
        elif ev.event_type == E.EVENT_TYPE_MARKER_RECORDED and seq is not None:
            st.local_done.add(seq)
            st.local_pending.pop(seq, None)
        elif A.is_activity_outcome(ev) and seq is not None:
            st.queued_checks.pop(seq, None)


def commands(st: DriverState, completion: wcomp.WorkflowActivationCompletion, ts: float) -> None:
    """Update in-memory state from a workflow task's commands (live and replayed alike).

    ``ts``: when the task's commands took effect (its WorkflowTaskCompleted event's time).
    """
    for cmd in completion.successful.commands:
        if cmd.HasField("start_timer"):
            st.timers[cmd.start_timer.seq] = timer_due(
                st, ts, cmd.start_timer.start_to_fire_timeout.ToNanoseconds() / 1e9
            )
        elif cmd.HasField("cancel_timer"):
            st.timers.pop(cmd.cancel_timer.seq, None)
        elif cmd.HasField("schedule_activity"):
            sa = cmd.schedule_activity
            st.activity_cancel_type[sa.seq] = sa.cancellation_type
            st.activity_open.add(sa.seq)
            limits = [
                d.ToNanoseconds() / 1e9
                for d in (sa.schedule_to_start_timeout, sa.schedule_to_close_timeout)
                if d.ToNanoseconds() > 0
            ]
            if limits:
                st.queued_checks[sa.seq] = ts + min(limits)
        elif cmd.HasField("schedule_local_activity"):
            la = cmd.schedule_local_activity
            if la.seq not in st.local_done:
                st.local_pending[la.seq] = la
                if cmd.HasField("user_metadata"):
                    st.local_meta[la.seq] = cmd.user_metadata
        elif cmd.HasField("schedule_nexus_operation"):
            sn = cmd.schedule_nexus_operation
            if sn.cancellation_type == nexus_jobs.WAIT_CANCELLATION_REQUESTED:
                st.nexus.wait_requested[sn.seq] = (sn.endpoint, sn.service, sn.operation)
        elif cmd.HasField("request_cancel_activity"):
            seq = cmd.request_cancel_activity.seq
            if st.activity_cancel_type.get(seq, ACTIVITY_CANCEL_TRY) != ACTIVITY_CANCEL_WAIT:
                st.activity_cancelled.add(seq)
        elif cmd.HasField("request_cancel_local_activity"):
            pass
    st.flags.update(completion.successful.used_internal_flags)
