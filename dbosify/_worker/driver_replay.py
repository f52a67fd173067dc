"""Replay: the run's history fed back to the workflow, one recorded activation at a time.

Each WorkflowTaskCompleted event marks the inputs its activation consumed, so a replay on any
worker gives the workflow the same activations it had live. Replays take a slot of the worker's
`ReplayGate` (runs with waiting work first).
"""

from __future__ import annotations

from dbosify._worker import activations as A
from dbosify._worker import tracking
from dbosify._worker.driver_base import (
    DriverBase,
    E,
    _build_id_of,
)
from dbosify._worker.interfaces import Snapshot
from dbosify._worker.replay_gate import IDLE, rank
from dbosify._worker.tracking import DriverState


class Replaying(DriverBase):
    """Rebuilding the workflow from its history."""

    async def _replay(self, closed_ok: bool = False) -> None:
        """Rebuild the workflow from history, one recorded activation at a time.

        A worker replays a few runs at once, runs with waiting work first (`ReplayGate`): when it
        takes over hundreds of runs, those move on first instead of all finishing together.
        """
        priority = self.core._replay_priority.pop(self.run_id, rank(IDLE))
        async with self.core.replay_gate.slot(priority):
            await self._replay_now(closed_ok)

    async def _replay_now(self, closed_ok: bool) -> None:
        self.state = DriverState(timer_floor=self.store.clock.timer_floor)
        if self._first_look is not None:
            self._first_look[0].cancel()
            self._first_look = None
        # Registered before the load, so `_live` can start from this snapshot without another look.
        fut = None if closed_ok else self.store.waiter(self.ns, self._live_keys())
        try:
            snap = await self._load(0)
        except BaseException:
            if fut is not None:
                fut.cancel()
            raise
        if fut is not None:
            self._first_look = (fut, Snapshot(snap.run, [], snap.updates, snap.queries))
        self.run = snap.run
        self.wake_written = snap.run.wake_at
        self.events = list(snap.events)
        st = self.state
        # Patches recorded anywhere in history are announced with the first activation.
        for ev, _ in self.events:
            if ev.event_type == E.EVENT_TYPE_MARKER_RECORDED:
                m = ev.marker_recorded_event_attributes
                if m.marker_name == A.PATCH_MARKER and "patch_data" in m.details:
                    pid = m.details["patch_data"].payloads[0].data.decode().strip('"')
                    if pid not in st.patches:
                        st.patches.append(pid)
        started_times = {
            e.event_id: e.event_time.ToNanoseconds() / 1e9
            for e, _ in self.events
            if e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_STARTED
        }
        for ev, seq in self.events:
            if ev.event_type != E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                continue
            consumed = seq or 0
            inputs = [
                (e, s)
                for e, s in self.events
                if st.consumed < e.event_id <= consumed and A.is_input(e)
            ]
            updates = []
            for e, s in self.events:
                if (
                    e.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
                    and s == ev.event_id
                ):
                    updates.append(
                        (e.workflow_execution_update_accepted_event_attributes.accepted_request, False)
                    )
            flags = list(ev.workflow_task_completed_event_attributes.sdk_metadata.lang_used_flags)
            tracking.inputs(self.state, inputs)
            jobs = A.jobs_for(
                self.run_id, inputs, updates, st.patches, st.scheduled, st.activity_cancelled,
                st.nexus,
            )
            # workflow.now() is the task's started time; its commands took effect at its completion
            # (the same moment in histories written before the two were told apart).
            done = ev.event_time.ToNanoseconds() / 1e9
            wft = ev.workflow_task_completed_event_attributes
            ts = self.task_time = started_times.get(wft.scheduled_event_id + 1, done)
            self.task_build_id = _build_id_of(wft)
            st.flags.update(flags)
            completion = await self._activate_task(jobs, ts, replaying=True, history_length=consumed)
            self._check_completion(completion)
            tracking.commands(st, completion, done)
            st.consumed = consumed
        # Timers and activities recorded in history but started after the last boundary
        # (i.e. by this run's last live activation) are tracked from their events.
        tracking.history_outputs(st, self.events)
