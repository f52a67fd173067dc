"""Nexus in a worker: the caller's commands and activation jobs, and the handler's task poller.

Caller: ScheduleNexusOperation appends NexusOperationScheduled (with the endpoint's id and a new
request id, as on Temporal) and queues the start request (`_nexus_tasks.schedule_start`) in the
workflow task's transaction; RequestCancelNexusOperation records the request. Outcome events become
Core's ResolveNexusOperationStart / ResolveNexusOperation jobs (`nexus_jobs`).

Handler: `NexusPoller` claims the tasks of the worker's task queue when woken on
``nexus:<task queue>`` (no polling), hands them to temporalio's Nexus worker, and records its
answers.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from temporalio.api.enums.v1 import event_type_pb2 as E
from temporalio.api.enums.v1 import failed_cause_pb2 as WFT_CAUSE
from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.bridge.proto.nexus import nexus_pb2 as core_nx
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc

from dbosify._engine import history as h
from dbosify._engine import nexus_endpoints
from dbosify._engine import nexus_tasks as tasks
from dbosify._worker.applying import Applying, BadCommand

if TYPE_CHECKING:
    from dbosify._worker.interfaces import Core

logger = logging.getLogger("dbosify")

# -- the caller's commands ------------------------------------------------------------------------


def schedule(a: Applying, cmd: wc.WorkflowCommand) -> None:
    s = cmd.schedule_nexus_operation
    tx = a.tx
    ep = nexus_endpoints.lookup_in_tx(tx, s.endpoint)
    if ep is None:
        raise BadCommand(
            WFT_CAUSE.WORKFLOW_TASK_FAILED_CAUSE_BAD_SCHEDULE_NEXUS_OPERATION_ATTRIBUTES,
            f"endpoint not registered: {s.endpoint!r} (create it with `dbosify operator nexus endpoint create`)",
        )
    attrs = hist.NexusOperationScheduledEventAttributes(
        endpoint=s.endpoint, service=s.service, operation=s.operation, workflow_task_completed_event_id=a.wft_id,
        request_id=str(uuid.uuid4()), endpoint_id=ep.id,
    )
    attrs.input.CopyFrom(s.input)
    for k, v in s.nexus_header.items():
        attrs.nexus_header[k] = v
    for f in ("schedule_to_close_timeout", "schedule_to_start_timeout", "start_to_close_timeout"):
        if s.HasField(f) and getattr(s, f).ToNanoseconds() > 0:
            getattr(attrs, f).CopyFrom(getattr(s, f))
    sched_id = h.append(tx, a.run.run_id, E.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED, attrs, seq=s.seq, at=a.ts,
                        metadata=a.meta)
    assert sched_id is not None
    target_ns, target_tq = ep.target
    if target_ns != tx.namespace:
        cause = failure_pb.Failure(
            message=f"dbosify does not yet run Nexus operations across namespaces (endpoint {s.endpoint!r}"
            f" targets namespace {target_ns!r}); see docs/COMPATIBILITY.md"
        )
        cause.nexus_handler_failure_info.type = "NOT_IMPLEMENTED"
        tasks._outcome(tx, a.run.run_id, s.seq, sched_id, attrs, E.EVENT_TYPE_NEXUS_OPERATION_FAILED, cause=cause)
        return
    tasks.schedule_start(tx, a.run, s.seq, sched_id, attrs, target_tq, a.ts)


def request_cancel(a: Applying, cmd: wc.WorkflowCommand) -> None:
    tasks.request_cancel(a.tx, a.run, cmd.request_cancel_nexus_operation.seq, a.wft_id, a.ts)


# -- the handler's task poller ------------------------------------------------------------------------


class PollShutdown(Exception):
    pass


class NexusPoller:
    """Claims this worker's Nexus tasks when woken, one poll at a time, as Core's poller does."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._ready: deque[bytes] = deque()
        self._running = 0

    async def poll(self) -> bytes:
        core = self.core
        store = core.store
        await core.registered()
        while True:
            if self._ready:
                self._running += 1
                return self._ready.popleft()
            if core.shutting_down:
                raise PollShutdown()
            fut = store.waiter(core.ns, [tasks.wake_key(core.tq), f"shutdown:{core.id}"])
            try:
                got, next_at = await store.transact(
                    core.ns, lambda tx: tasks.claim(tx, core.tq, core.id, CLAIM_AHEAD)
                )
                if got:
                    self._ready.extend(got)
                    continue
                if core.shutting_down:
                    raise PollShutdown()
                await store.wait_until(fut, next_at)
            finally:
                fut.cancel()

    async def complete(self, proto: bytes) -> None:
        completion = core_nx.NexusTaskCompletion.FromString(proto)
        self._running = max(0, self._running - 1)
        core = self.core
        await core.store.transact(core.ns, lambda tx: tasks.complete(tx, core.id, completion.task_token, completion))

    def hand_back(self, tx: Any) -> None:
        """This worker stops: tasks it claimed but did not hand out go back at once."""
        tasks.release_owner(tx, self.core.id, tx.store.clock.now())


CLAIM_AHEAD = 1  # tasks claimed per look: one, so that the other workers of the queue get theirs
