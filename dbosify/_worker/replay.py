"""``temporalio.worker.Replayer`` without a server: histories in, activations out, commands checked.

This is the replay half of Temporal's core. It reads a Temporal-shaped history (from
Temporal itself or from dbosify's ``fetch_history()``), cuts it into the activations the
workflow saw (a workflow task consumed the input events up to its ``started_event_id``),
derives each command's sequence number from the command events, and reports a
nondeterminism error when the workflow's commands no longer match the history.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify._engine.history import attrs_of
from dbosify._worker import activations as A
from dbosify._worker import nexus_jobs
from dbosify._worker.activations import ACTIVITY_CANCEL_TRY, ACTIVITY_CANCEL_WAIT
from dbosify._worker.core import PollShutdownError

E = et
EVICT = wa.RemoveFromCache.EvictionReason

# Workflow command -> the history event it produces.
COMMAND_EVENT = {
    "start_timer": E.EVENT_TYPE_TIMER_STARTED,
    "cancel_timer": E.EVENT_TYPE_TIMER_CANCELED,
    "schedule_activity": E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    "request_cancel_activity": E.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED,
    "start_child_workflow_execution": E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    "cancel_child_workflow_execution": E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    "request_cancel_external_workflow_execution": E.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    "signal_external_workflow_execution": E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    "complete_workflow_execution": E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    "fail_workflow_execution": E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    "cancel_workflow_execution": E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    "continue_as_new_workflow_execution": E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    "upsert_workflow_search_attributes": E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    "modify_workflow_properties": E.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED,
    "set_patch_marker": E.EVENT_TYPE_MARKER_RECORDED,
    "schedule_nexus_operation": E.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED,
    "request_cancel_nexus_operation": E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUESTED,
}
COMMAND_EVENT_TYPES = set(COMMAND_EVENT.values())


class Nondeterminism(Exception):
    pass


@dataclass
class _Seqs:
    by_event: dict[int, int] = field(default_factory=dict)  # command event id -> seq
    scheduled: dict[int, Any] = field(default_factory=dict)  # activity seq -> scheduled attrs
    cancel_type: dict[int, int] = field(default_factory=dict)  # activity seq -> cancellation type
    cancelled: set[int] = field(default_factory=set)  # activities cancelled without waiting
    nexus: nexus_jobs.CallerState = field(default_factory=lambda: nexus_jobs.CallerState())  # Nexus calls


def _initiating_event_id(event: hist.HistoryEvent) -> int | None:
    """The command event a resolution event refers to."""
    a = getattr(event, A._child_attr(event.event_type), None) if event.event_type else None
    if a is None:
        return None
    for name in ("scheduled_event_id", "initiated_event_id", "started_event_id"):
        if hasattr(a, name) and getattr(a, name):
            return int(getattr(a, name))
    return None


def _seq_of(event: hist.HistoryEvent, seqs: _Seqs) -> int | None:
    if event.event_type in (E.EVENT_TYPE_TIMER_FIRED, E.EVENT_TYPE_TIMER_CANCELED):
        tid = event.timer_fired_event_attributes.timer_id or event.timer_canceled_event_attributes.timer_id
        return int(tid) if tid.isdigit() else None
    if event.event_type == E.EVENT_TYPE_MARKER_RECORDED:
        return None
    ref = _initiating_event_id(event)
    return seqs.by_event.get(ref) if ref is not None else None


def _command_blocks(events: list[hist.HistoryEvent]) -> list[tuple[hist.HistoryEvent, list[hist.HistoryEvent]]]:
    """Each WorkflowTaskCompleted event with the command events it produced."""
    blocks: list[tuple[hist.HistoryEvent, list[hist.HistoryEvent]]] = []
    for ev in events:
        if ev.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            blocks.append((ev, []))
        elif blocks and (
            ev.event_type in COMMAND_EVENT_TYPES
            or ev.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
            or ev.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
        ):
            wft_ref = getattr(attrs_of(ev), "workflow_task_completed_event_id", 0)
            if not wft_ref or wft_ref == blocks[-1][0].event_id:
                blocks[-1][1].append(ev)
    return blocks


def _check(
    commands: list[wc.WorkflowCommand], expected: list[hist.HistoryEvent], seqs: _Seqs
) -> None:
    """Match commands against the history's command events; record sequence numbers."""
    want = [
        e
        for e in expected
        if e.event_type in COMMAND_EVENT_TYPES
        and not (
            e.event_type == E.EVENT_TYPE_MARKER_RECORDED
            and e.marker_recorded_event_attributes.marker_name != A.PATCH_MARKER
        )
    ]
    i = 0
    for cmd in commands:
        kind = cmd.WhichOneof("variant")
        if kind not in COMMAND_EVENT:
            continue
        etype = COMMAND_EVENT[kind]
        if kind == "set_patch_marker":
            if i < len(want) and want[i].event_type == etype:
                i += 1
            continue
        if i >= len(want):
            raise Nondeterminism(
                f"Nondeterminism error: the workflow produced a {kind} command that is not in the history"
            )
        ev = want[i]
        # A patch marker in history that the code no longer sets is tolerated only if deprecated.
        while ev.event_type == E.EVENT_TYPE_MARKER_RECORDED and etype != ev.event_type:
            i += 1
            if i >= len(want):
                raise Nondeterminism(f"Nondeterminism error: {kind} command does not match history")
            ev = want[i]
        if ev.event_type != etype:
            raise Nondeterminism(
                f"Nondeterminism error: the workflow produced a {kind} command, but history event"
                f" {ev.event_id} is {E.EventType.Name(ev.event_type)}"
            )
        if kind == "schedule_activity":
            a = ev.activity_task_scheduled_event_attributes
            if a.activity_type.name != cmd.schedule_activity.activity_type:
                raise Nondeterminism(
                    f"Nondeterminism error: activity type of scheduled event {ev.event_id}"
                    f" '{a.activity_type.name}' does not match '{cmd.schedule_activity.activity_type}'"
                )
            seqs.by_event[ev.event_id] = cmd.schedule_activity.seq
            seqs.scheduled[cmd.schedule_activity.seq] = a
            seqs.cancel_type[cmd.schedule_activity.seq] = cmd.schedule_activity.cancellation_type
        elif kind == "request_cancel_activity":
            seq = cmd.request_cancel_activity.seq
            if seqs.cancel_type.get(seq, ACTIVITY_CANCEL_TRY) != ACTIVITY_CANCEL_WAIT:
                seqs.cancelled.add(seq)
        elif kind == "start_timer":
            tid = ev.timer_started_event_attributes.timer_id
            if tid != str(cmd.start_timer.seq):
                raise Nondeterminism(
                    f"Nondeterminism error: timer {tid} in history does not match timer {cmd.start_timer.seq}"
                )
            seqs.by_event[ev.event_id] = cmd.start_timer.seq
        elif kind == "start_child_workflow_execution":
            c = ev.start_child_workflow_execution_initiated_event_attributes
            if c.workflow_type.name != cmd.start_child_workflow_execution.workflow_type:
                raise Nondeterminism(
                    f"Nondeterminism error: child workflow type '{c.workflow_type.name}' in history"
                    f" does not match '{cmd.start_child_workflow_execution.workflow_type}'"
                )
            seqs.by_event[ev.event_id] = cmd.start_child_workflow_execution.seq
        elif kind == "signal_external_workflow_execution":
            seqs.by_event[ev.event_id] = cmd.signal_external_workflow_execution.seq
        elif kind == "request_cancel_external_workflow_execution":
            seqs.by_event[ev.event_id] = cmd.request_cancel_external_workflow_execution.seq
        elif kind == "schedule_nexus_operation":
            # The operation, not the endpoint: an endpoint's name may differ between where a
            # history was recorded and where it is replayed, as a task queue's may.
            n, nc = ev.nexus_operation_scheduled_event_attributes, cmd.schedule_nexus_operation
            if (n.service, n.operation) != (nc.service, nc.operation):
                raise Nondeterminism(
                    f"Nondeterminism error: Nexus operation {n.service}/{n.operation} in history"
                    f" does not match {nc.service}/{nc.operation}"
                )
            seqs.by_event[ev.event_id] = nc.seq
            if nc.cancellation_type == nexus_jobs.WAIT_CANCELLATION_REQUESTED:
                seqs.nexus.wait_requested[nc.seq] = (nc.endpoint, nc.service, nc.operation)
        i += 1
    rest = [e for e in want[i:] if e.event_type != E.EVENT_TYPE_MARKER_RECORDED]
    if rest:
        raise Nondeterminism(
            f"Nondeterminism error: history has {E.EventType.Name(rest[0].event_type)} (event"
            f" {rest[0].event_id}) that the workflow did not produce"
        )


class ReplayWorker:
    """The worker temporalio's Replayer polls: one history at a time."""

    def __init__(self, config: Any) -> None:
        self.ns = config.namespace
        self.tq = config.task_queue
        self._queue: asyncio.Queue[wa.WorkflowActivation | None] | None = None
        self._pending: asyncio.Future[wcomp.WorkflowActivationCompletion] | None = None
        self._closed = False
        self._replays = 0

    def _q(self) -> asyncio.Queue[wa.WorkflowActivation | None]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    async def validate(self) -> bytes:
        from temporalio.bridge.proto import NamespaceInfo

        return bytes(NamespaceInfo().SerializeToString())

    async def poll_workflow_activation(self) -> bytes:
        while True:
            if self._closed and self._replays == 0 and self._q().empty():
                raise PollShutdownError()
            act = await self._q().get()
            if act is not None:
                return bytes(act.SerializeToString())

    async def poll_activity_task(self) -> bytes:
        raise PollShutdownError()

    async def poll_nexus_task(self) -> bytes:
        raise PollShutdownError()

    async def complete_workflow_activation(self, proto: bytes) -> None:
        fut, self._pending = self._pending, None
        if fut is not None and not fut.done():
            fut.set_result(wcomp.WorkflowActivationCompletion.FromString(proto))

    async def complete_activity_task(self, proto: bytes) -> None:
        pass

    def record_activity_heartbeat(self, proto: bytes) -> None:
        pass

    def request_workflow_eviction(self, run_id: str) -> None:
        pass

    def replace_client(self, client: Any) -> None:
        pass

    def initiate_shutdown(self) -> None:
        self.close()

    async def finalize_shutdown(self) -> None:
        pass

    def close(self) -> None:
        self._closed = True
        self._q().put_nowait(None)

    async def _activate(self, act: wa.WorkflowActivation) -> wcomp.WorkflowActivationCompletion:
        fut: asyncio.Future[wcomp.WorkflowActivationCompletion] = asyncio.get_running_loop().create_future()
        self._pending = fut
        self._q().put_nowait(act)
        return await fut

    async def replay(self, history: hist.History) -> None:
        self._replays += 1
        events = list(history.events)
        run_id = "replay-run"
        if events and events[0].HasField("workflow_execution_started_event_attributes"):
            a = events[0].workflow_execution_started_event_attributes
            run_id = a.original_execution_run_id or a.first_execution_run_id or run_id
        reason, message = EVICT.LANG_REQUESTED, "replay complete"
        try:
            await self._replay_events(run_id, events)
        except Nondeterminism as err:
            reason, message = EVICT.NONDETERMINISM, str(err)
        except Exception as err:  # a failed workflow task during replay
            reason, message = EVICT.FATAL, str(err)
        finally:
            act = wa.WorkflowActivation(run_id=run_id)
            act.jobs.add(remove_from_cache=wa.RemoveFromCache(message=message, reason=reason))
            try:
                await self._activate(act)
            finally:
                self._replays -= 1
                if self._closed:
                    self._q().put_nowait(None)

    async def _replay_events(self, run_id: str, events: list[hist.HistoryEvent]) -> None:
        seqs = _Seqs()
        patches = [
            e.marker_recorded_event_attributes.details["patch_data"].payloads[0].data.decode().strip('"')
            for e in events
            if e.event_type == E.EVENT_TYPE_MARKER_RECORDED
            and e.marker_recorded_event_attributes.marker_name == A.PATCH_MARKER
            and "patch_data" in e.marker_recorded_event_attributes.details
        ]
        started_times = {
            e.event_id: e.event_time for e in events if e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_STARTED
        }
        consumed = 0
        flags: set[int] = set()
        blocks = _command_blocks(events)
        for n, (done, commands) in enumerate(blocks):
            boundary = done.workflow_task_completed_event_attributes.started_event_id or done.event_id
            inputs = [(e, _seq_of(e, seqs)) for e in events if consumed < e.event_id <= boundary and A.is_input(e)]
            updates = [
                (e.workflow_execution_update_accepted_event_attributes.accepted_request, False)
                for e in commands
                if e.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
            ]
            jobs = A.jobs_for(run_id, inputs, updates, patches if consumed == 0 else [], seqs.scheduled, seqs.cancelled, seqs.nexus)
            flags.update(done.workflow_task_completed_event_attributes.sdk_metadata.lang_used_flags)
            act = wa.WorkflowActivation(
                run_id=run_id,
                is_replaying=True,
                history_length=boundary,
                available_internal_flags=sorted(flags),
            )
            act.timestamp.CopyFrom(started_times.get(boundary, done.event_time))
            act.jobs.extend(jobs)
            sent: list[wc.WorkflowCommand] = []
            while True:
                completion = await self._activate(act)
                if completion.HasField("failed"):
                    raise Nondeterminism(completion.failed.failure.message) if "ondetermin" in (
                        completion.failed.failure.message
                    ) else RuntimeError(completion.failed.failure.message)
                flags.update(completion.successful.used_internal_flags)
                local = A.elide_unsent(completion.successful.commands, sent)
                if not local:
                    break
                nxt = wa.WorkflowActivation(run_id=run_id, is_replaying=True, history_length=boundary)
                nxt.timestamp.CopyFrom(act.timestamp)
                nxt.jobs.extend(local)
                act = nxt
            _check(A.closing_last(sent), commands, seqs)
            consumed = boundary
            del n
        # A workflow task that history started but never completed is replayed too.
        tail = [(e, _seq_of(e, seqs)) for e in events if e.event_id > consumed and A.is_input(e)]
        last_started = max(started_times, default=0)
        if tail and last_started > consumed:
            act = wa.WorkflowActivation(run_id=run_id, is_replaying=True, history_length=last_started)
            act.timestamp.CopyFrom(started_times[last_started])
            act.jobs.extend(A.jobs_for(run_id, [t for t in tail if t[0].event_id < last_started], [], patches if consumed == 0 else [], seqs.scheduled, seqs.cancelled, seqs.nexus))
            if act.jobs:
                completion = await self._activate(act)
                if completion.HasField("failed"):
                    raise RuntimeError(completion.failed.failure.message)


class HistoryPusher:
    """What the Replayer pushes histories into."""

    def __init__(self, worker: ReplayWorker) -> None:
        self._worker = worker
        self._tasks: set[asyncio.Task[None]] = set()

    async def push_history(self, workflow_id: str, history_proto: bytes) -> None:
        task = asyncio.create_task(self._worker.replay(hist.History.FromString(history_proto)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self._worker.close()
