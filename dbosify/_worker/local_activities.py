"""Local activities: run in the worker's process, each result recorded as a marker event in the
run's history (one transaction per result, under the claim's check), which wakes the driver.
"""

from __future__ import annotations

import functools

from temporalio.api.failure.v1 import message_pb2 as failure_pb
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc

from dbosify._engine import activity_tasks as acts
from dbosify._engine import history as h
from dbosify._store import Tx
from dbosify._store.clock import busy_task
from dbosify._worker import activations as A
from dbosify._worker.driver_base import (
    DriverBase,
    E,
    Fenced,
)


class LocalActivities(DriverBase):
    """Running the run's local activities in the worker's process."""

    def _start_pending_local_activities(self) -> None:
        for seq, la in list(self.state.local_pending.items()):
            if seq not in self.local_tasks and seq not in self.state.local_done:
                self.local_tasks[seq] = busy_task(self.store.clock, functools.partial(self._run_local, la))

    async def _run_local(self, la: wc.ScheduleLocalActivity) -> None:
        assert self.run is not None
        clock = self.store.clock
        attempt = la.attempt or 1
        scheduled = clock.now()
        while True:
            outcome = await self.core.run_local_activity(self.run, la, attempt, scheduled)
            kind = outcome.WhichOneof("status")
            if kind == "failed":
                policy = la.retry_policy
                delay = acts._retry_delay(policy, attempt, outcome.failed.failure)
                s2c = la.schedule_to_close_timeout.ToNanoseconds() / 1e9 if la.HasField("schedule_to_close_timeout") else 0
                if delay is not None and (not s2c or clock.now() + delay < scheduled + s2c):
                    await clock.sleep_until(clock.now() + delay)
                    attempt += 1
                    continue
            break
        m = hist.MarkerRecordedEventAttributes(marker_name=A.LOCAL_ACTIVITY_MARKER)
        if kind == "completed":
            m.details["data"].payloads.add().CopyFrom(outcome.completed.result)
        elif kind == "failed":
            wrapped = failure_pb.Failure(message="Local Activity task failed")
            wrapped.activity_failure_info.activity_id = la.activity_id
            wrapped.activity_failure_info.activity_type.name = la.activity_type
            wrapped.cause.CopyFrom(outcome.failed.failure)
            m.failure.CopyFrom(wrapped)
        else:
            m.failure.CopyFrom(outcome.cancelled.failure)
        seq = la.seq

        def fn(tx: Tx) -> None:
            if self._owned(tx) is None:
                return
            h.append(
                tx, self.run_id, E.EVENT_TYPE_MARKER_RECORDED, m, seq=seq, dedup=f"la:{seq}",
                metadata=self.state.local_meta.get(seq),
            )

        try:
            await self.store.transact(self.ns, fn)
        except Fenced:
            self.fence()  # the driver notices at its next step
        else:
            # Recorded: its marker is the run's next input. Until a workflow task consumes it,
            # the activity is no longer pending, so a task that began before the marker was
            # written (a signal's) does not start it again when it ends.
            self.state.local_pending.pop(seq, None)
        self.local_tasks.pop(seq, None)
