"""Workflows: starting (plain, eager, signal-with-start), cancelling, terminating, describing a
run and reading its history (long polls pushed by the store's wake-ups, never timed).

A part of `dbosify._server.service.WorkflowService`: one family of its RPCs.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.message import Message
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.enums.v1.common_pb2 import CALLBACK_STATE_STANDBY, CALLBACK_STATE_SUCCEEDED
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import core_logs, deployments, listing, priorities
from dbosify._engine import history as h
from dbosify._engine import nexus_tasks as _nexus_tasks
from dbosify._engine import runs as _runs
from dbosify._engine.errors import ServiceError
from dbosify._server import activity_ops, visibility
from dbosify._server.rpc_base import (
    RpcBase,
    _not_found_chain,
    _not_found_run,
)
from dbosify._store import Tx


class WorkflowRpcs(RpcBase):
    @staticmethod
    def _started_attrs(req: Any) -> hist.WorkflowExecutionStartedEventAttributes:
        a = hist.WorkflowExecutionStartedEventAttributes(identity=req.identity, attempt=1)
        a.workflow_type.CopyFrom(req.workflow_type)
        a.task_queue.CopyFrom(req.task_queue)
        for f in (
            "input",
            "workflow_execution_timeout",
            "workflow_run_timeout",
            "workflow_task_timeout",
            "retry_policy",
            "memo",
            "search_attributes",
            "header",
            "priority",
            "versioning_override",
        ):
            if hasattr(req, f) and req.HasField(f):
                getattr(a, f).CopyFrom(getattr(req, f))
        a.cron_schedule = req.cron_schedule
        if hasattr(req, "completion_callbacks"):  # a workflow-run Nexus operation's callback
            a.completion_callbacks.extend(req.completion_callbacks)
        for f in ("continued_failure", "last_completion_result"):
            if hasattr(req, f) and req.HasField(f):
                getattr(a, f).CopyFrom(getattr(req, f))
        return a

    def _check_start(self, req: Any) -> None:
        if not req.workflow_id:
            raise ServiceError.invalid("WorkflowId is not set on request.")
        if not req.workflow_type.name:
            raise ServiceError.invalid("WorkflowType is not set on request.")
        if not req.task_queue.name:
            raise ServiceError.invalid("TaskQueue is not set on request.")
        if req.cron_schedule and req.HasField("workflow_start_delay") and req.workflow_start_delay.ToNanoseconds():
            raise ServiceError.invalid("CronSchedule and WorkflowStartDelay may not be used together")
        if req.HasField("priority"):
            priorities.check(req.priority)

    def _warn_memo_size(self, req: Any) -> None:
        """Core warns when a request's memo is over the client's memo_warn_size ([TMPRL1103])."""
        if req.HasField("memo") and req.memo.ByteSize() > self.memo_warn_size:
            core_logs.emit(
                self.runtime, logging.WARNING, core_logs.PAYLOADS_TARGET,
                "[TMPRL1103] Attempted to upload memo with size that exceeded the warning limit.",
                memo_size=req.memo.ByteSize(), limit=self.memo_warn_size,
            )

    def _start_in_tx(self, tx: Tx, req: Any) -> _runs.StartResult:
        return _runs.start_run(
            tx,
            workflow_id=req.workflow_id,
            workflow_type=req.workflow_type.name,
            task_queue=req.task_queue.name,
            started=self._started_attrs(req),
            request_id=req.request_id,
            reuse_policy=req.workflow_id_reuse_policy,
            conflict_policy=req.workflow_id_conflict_policy,
            identity=req.identity,
            metadata=req.user_metadata if req.HasField("user_metadata") else None,
            cron_schedule=req.cron_schedule,
            delay=(
                _runs.cron_delay(req.cron_schedule, tx.store.clock.now())
                if req.cron_schedule
                else req.workflow_start_delay.ToNanoseconds() / 1e9
                if req.HasField("workflow_start_delay")
                else 0.0
            ),
        )

    async def start_workflow_execution(self, req: rr.StartWorkflowExecutionRequest) -> Message:
        self._check_start(req)
        self._warn_memo_size(req)
        eager = self.eager
        worker = (
            eager.local_worker(self.store, req.namespace, req.task_queue.name)
            if eager is not None and req.request_eager_execution else None
        )
        if worker is not None and not await eager.ready(worker):
            worker = None

        def fn(tx: Tx) -> tuple[_runs.StartResult, int | None]:
            res = self._start_in_tx(tx, req)
            gen = eager.claim(tx, worker, req.workflow_id, res.run_id) if worker is not None and res.started else None
            return res, gen

        res, gen = await self.store.transact(req.namespace, fn)
        resp = rr.StartWorkflowExecutionResponse(
            run_id=res.run_id,
            started=res.started,
            status=wfenums.WORKFLOW_EXECUTION_STATUS_RUNNING,
        )
        if req.completion_callbacks and res.started:  # a Nexus handler's start: the link to its event
            resp.link.CopyFrom(_nexus_tasks.started_link(req.namespace, req.workflow_id, res.run_id))
        if worker is not None and gen is not None:
            eager.dispatch(worker, res.run_id, gen)
            task = resp.eager_workflow_task
            task.task_token = res.run_id.encode()
            task.workflow_execution.workflow_id = req.workflow_id
            task.workflow_execution.run_id = res.run_id
            task.workflow_type.CopyFrom(req.workflow_type)
        return resp

    async def signal_with_start_workflow_execution(
        self, req: rr.SignalWithStartWorkflowExecutionRequest
    ) -> Message:
        self._check_start(req)
        if req.workflow_id_conflict_policy == wfenums.WORKFLOW_ID_CONFLICT_POLICY_UNSPECIFIED:
            req.workflow_id_conflict_policy = wfenums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING

        def fn(tx: Tx) -> _runs.StartResult:
            res = self._start_in_tx(tx, req)
            run = h.get_run(tx, res.run_id, lock=True)
            assert run is not None
            _runs.signal(
                tx,
                run,
                req.signal_name,
                req.signal_input if req.HasField("signal_input") else None,
                req.header if req.HasField("header") else None,
                req.identity,
            )
            return res

        res = await self.store.transact(req.namespace, fn)
        return rr.SignalWithStartWorkflowExecutionResponse(run_id=res.run_id, started=res.started)

    async def request_cancel_workflow_execution(
        self, req: rr.RequestCancelWorkflowExecutionRequest
    ) -> Message:
        def fn(tx: Tx) -> None:
            ex = req.workflow_execution
            run = h.find_run(tx, ex.workflow_id, ex.run_id or None, lock=True)
            if run is None:
                raise _not_found_run(ex.workflow_id, ex.run_id or None)
            if req.first_execution_run_id and run.first_execution_run_id != req.first_execution_run_id:
                raise _not_found_chain(ex.workflow_id, req.first_execution_run_id)
            if run.running:  # cancelling a closed run is accepted and does nothing, as on Temporal
                _runs.request_cancel(tx, run, req.reason, req.identity)

        await self.store.transact(req.namespace, fn)
        return rr.RequestCancelWorkflowExecutionResponse()

    async def terminate_workflow_execution(
        self, req: rr.TerminateWorkflowExecutionRequest
    ) -> Message:
        def fn(tx: Tx) -> None:
            run = self._running(tx, req.workflow_execution)
            if req.first_execution_run_id and run.first_execution_run_id != req.first_execution_run_id:
                raise _not_found_chain(req.workflow_execution.workflow_id, req.first_execution_run_id)
            _runs.terminate(
                tx, run, req.reason, req.identity, req.details if req.HasField("details") else None
            )

        await self.store.transact(req.namespace, fn)
        return rr.TerminateWorkflowExecutionResponse()

    async def describe_workflow_execution(
        self, req: rr.DescribeWorkflowExecutionRequest
    ) -> Message:
        def fn(tx: Tx) -> tuple[h.Run, hist.HistoryEvent, list[Any], Any]:
            run = h.find_run(tx, req.execution.workflow_id, req.execution.run_id or None)
            if run is None:
                raise _not_found_run(req.execution.workflow_id, req.execution.run_id or None)
            first = h.load_events(tx, run.run_id, 0)[:1]
            vis = visibility.run_info(tx, run.run_id)
            pend = tx.all(
                "SELECT t.seq, t.attempt, t.state, t.heartbeat_at, t.details, t.last_failure,"
                " t.scheduled_event_id, e.event, t.cancel_requested, t.paused, t.pause_info,"
                " t.attempts_reset FROM activity_tasks t JOIN history e"
                " ON e.run_id = t.run_id AND e.event_id = t.scheduled_event_id"
                " WHERE t.run_id = %s ORDER BY t.seq",
                (run.run_id,),
            )
            return run, first[0][0], pend, (vis, deployments.versioning_info(tx, run.run_id))

        run, started_event, pending, (vis, versioning) = await self.store.transact(req.namespace, fn)
        started = started_event.workflow_execution_started_event_attributes
        resp = rr.DescribeWorkflowExecutionResponse()
        info = resp.workflow_execution_info
        info.CopyFrom(vis)
        if versioning is not None:
            info.versioning_info.CopyFrom(versioning)
        info.first_run_id = run.first_execution_run_id
        if run.parent_run_id:
            info.parent_namespace_id = run.parent_namespace or ""
        cfg = resp.execution_config
        cfg.task_queue.name = run.task_queue
        if started_event.HasField("user_metadata"):
            cfg.user_metadata.CopyFrom(started_event.user_metadata)
        if started.HasField("workflow_execution_timeout"):
            cfg.workflow_execution_timeout.CopyFrom(started.workflow_execution_timeout)
        if started.HasField("workflow_run_timeout"):
            cfg.workflow_run_timeout.CopyFrom(started.workflow_run_timeout)
        for (
            seq, attempt, state, hb_at, details, last_failure, sched_id, sched_event,
            cancel_requested, paused, pause_info, attempts_reset,
        ) in pending:
            sched = hist.HistoryEvent.FromString(bytes(sched_event)).activity_task_scheduled_event_attributes
            pa = resp.pending_activities.add(
                activity_id=sched.activity_id or str(seq), attempt=1 if attempts_reset else attempt
            )
            pa.activity_type.CopyFrom(sched.activity_type)
            del sched_id
            activity_ops.describe_pending(
                pa, state, bool(cancel_requested), bool(paused),
                bytes(pause_info) if pause_info is not None else None,
            )
            if hb_at:
                pa.last_heartbeat_time.FromNanoseconds(int(hb_at * 1e9))
            if details:
                pa.heartbeat_details.ParseFromString(bytes(details))
            if last_failure:
                pa.last_failure.ParseFromString(bytes(last_failure))
        for cb in started.completion_callbacks:
            # Completion callbacks (a Nexus operation's, attached by its start): waiting while the
            # run is open; delivered in the transaction that closes it.
            ci = resp.callbacks.add()
            ci.callback.CopyFrom(cb)
            ci.trigger.workflow_closed.SetInParent()
            ci.registration_time.CopyFrom(started_event.event_time)
            if run.running:
                ci.state = CALLBACK_STATE_STANDBY  # type: ignore[assignment]
            else:
                ci.state = CALLBACK_STATE_SUCCEEDED  # type: ignore[assignment]
                ci.attempt = 1
                if info.HasField("close_time"):
                    ci.last_attempt_complete_time.CopyFrom(info.close_time)
        if run.running and run.wft_failure:
            # Surface a failing workflow task (e.g. an unknown workflow type) like Temporal does.
            pwt = resp.pending_workflow_task
            pwt.state = 1  # type: ignore[assignment]
            pwt.attempt = max(run.wft_attempt, 1)
        return resp

    async def get_workflow_execution_history(
        self, req: rr.GetWorkflowExecutionHistoryRequest
    ) -> Message:
        ns = req.namespace
        wid = req.execution.workflow_id
        close_only = req.history_event_filter_type == 2  # HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT
        after = listing.read_int_token(req.next_page_token)
        page = req.maximum_page_size or 1000

        def read(tx: Tx, run: h.Run) -> tuple[bool, list[Any]]:
            cur = h.get_run(tx, run.run_id)
            running = cur is not None and cur.running
            if close_only:
                if running or cur is None:
                    return running, []
                # The close event itself, not merely the last event: a client that gets no close
                # event (WorkflowHandle.result) asks again at once, forever.
                types = sorted(h.CLOSE_EVENT_TYPES)
                return running, tx.all(
                    "SELECT event FROM history WHERE run_id = %s AND event_type IN"
                    f" ({', '.join(['%s'] * len(types))}) ORDER BY event_id DESC LIMIT 1",
                    (run.run_id, *types),
                )
            return running, tx.all(
                "SELECT event FROM history WHERE run_id = %s AND event_id > %s ORDER BY event_id LIMIT %s",
                (run.run_id, after, page),
            )

        def first(tx: Tx) -> tuple[h.Run, tuple[bool, list[Any]]]:
            run = h.find_run(tx, wid, req.execution.run_id or None)
            if run is None:
                raise _not_found_run(wid, req.execution.run_id or None)
            return run, read(tx, run)

        # Long poll: wait for the close event (or any new event) to be pushed, never on a timer.
        # Waiting for a result, the waiter can be registered before the first look.
        # A small close event comes with its wake-up (`_engine.runs.close_run`): no read after it.
        waited = f"closed-wf:{wid}"
        fut = self.store.waiter(ns, [waited], value=True) if close_only and req.wait_new_event else None
        try:
            run, (running, rows) = await self.store.transact(ns, first)
            key = f"closed:{run.run_id}" if close_only else f"hist:{run.run_id}"
            while not rows and req.wait_new_event and running:
                if fut is not None:
                    await self.store.wait_future(fut)
                    fut.cancel()
                    carried = self.store.take_value(ns, waited)
                    if carried is not None and waited != key:  # closed-wf: the run id, then the event
                        closed_run, _, carried = carried.partition(b"\x00")
                        carried = carried if closed_run.decode() == run.run_id else None
                    if carried is not None:
                        rows = [(carried,)]
                        break
                waited = key
                fut = self.store.waiter(ns, [key], value=close_only)
                running, rows = await self.store.transact(ns, lambda tx: read(tx, run))
        finally:
            if fut is not None:
                fut.cancel()
                self.store.take_value(ns, waited)
        resp = rr.GetWorkflowExecutionHistoryResponse()
        last = after
        for (ev,) in rows:
            e = resp.history.events.add()
            e.ParseFromString(bytes(ev))
            last = e.event_id
        # A follower (wait_new_event) of a run still running gets a token to ask again, as on
        # Temporal; without one it would stop after the first page.
        if not close_only and (len(rows) == page or (req.wait_new_event and running)):
            resp.next_page_token = str(last).encode()
        return resp

    async def get_workflow_execution_history_reverse(
        self, req: rr.GetWorkflowExecutionHistoryReverseRequest
    ) -> Message:
        def fn(tx: Tx) -> list[Any]:
            run = h.find_run(tx, req.execution.workflow_id, req.execution.run_id or None)
            if run is None:
                raise _not_found_run(req.execution.workflow_id)
            return tx.all(
                "SELECT event FROM history WHERE run_id = %s ORDER BY event_id DESC", (run.run_id,)
            )

        rows = await self.store.transact(req.namespace, fn)
        resp = rr.GetWorkflowExecutionHistoryReverseResponse()
        for (ev,) in rows:
            resp.history.events.add().ParseFromString(bytes(ev))
        return resp

    async def reset_sticky_task_queue(self, req: rr.ResetStickyTaskQueueRequest) -> Message:
        # No sticky queues here: a run that loses its worker is claimed by any other of its queue.
        return rr.ResetStickyTaskQueueResponse()
