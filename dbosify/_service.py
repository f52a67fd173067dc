"""Temporal's WorkflowService, answered from the database instead of a server.

The wheel's ``temporalio.client`` turns every user call into one of these RPCs
(protobuf in, protobuf out); we answer them with transactions on the store. RPC
names and messages are Temporal's own, so the client above is used unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import DecodeError, Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import query_pb2 as query_enums
from temporalio.api.enums.v1 import update_pb2 as upd_enums
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.errordetails.v1 import message_pb2 as errdetails
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.query.v1 import message_pb2 as query_pb
from temporalio.api.update.v1 import message_pb2 as upd_pb
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify import _activity_tasks as acts
from dbosify import _history as h
from dbosify import _nexus_tasks, _runs
from dbosify._errors import ServiceError
from dbosify._native import _core_logs as core_logs
from dbosify._server import (
    activities,
    activity_ops,
    limits,
    listing,
    namespace_info,
    routes,
    search_attributes,
    visibility,
)
from dbosify._server.visibility_sql import SYSTEM_ATTRIBUTES
from dbosify._store import Store, Tx, namespaces
from dbosify._store.threads import in_thread

Handler = Callable[[Any], Awaitable[Message]]


def _camel(rpc: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in rpc.split("_"))


def _not_found_run(workflow_id: str, run_id: str | None = None) -> ServiceError:
    if run_id:
        return ServiceError.not_found(
            f"workflow execution not found for workflow ID {workflow_id!r} and run ID {run_id!r}"
        )
    return ServiceError.not_found(f"workflow not found for ID: {workflow_id}")


def _not_found_chain(workflow_id: str, first_execution_run_id: str) -> ServiceError:
    """The running run of ``workflow_id`` belongs to another chain than the caller's handle."""
    return ServiceError.not_found(
        f"workflow execution not found for workflow ID {workflow_id!r} in the chain started by"
        f" run ID {first_execution_run_id!r}"
    )


# An update admitted but not accepted when its run closed with no run to continue into (Temporal's
# words, status NOT_FOUND; an update sent to a closed run is "workflow execution already completed").
_UPDATE_ABORTED = "workflow update was aborted by closing workflow"


def _update_row(run_id: str, update_id: str, tx: Tx) -> Any:
    return tx.one("SELECT state, outcome FROM updates WHERE run_id = %s AND update_id = %s", (run_id, update_id))


def _get_run(run_id: str, tx: Tx) -> h.Run | None:
    return h.get_run(tx, run_id)


def _completed_error() -> ServiceError:
    return ServiceError.not_found("workflow execution already completed")


class WorkflowService:
    """The WorkflowService RPCs on one store."""

    def __init__(self, store: Store, identity: str = "") -> None:
        self.store = store
        self.identity = identity
        self.runtime: Any = None  # the client's RuntimeRef (Core's logs)
        self.eager: Any = None  # dbosify._worker.eager, once this client has a worker (new_worker)
        self.memo_warn_size = 2 * 1024
        self._background: set[asyncio.Task[Any]] = set()

    async def call(self, rpc: str, req_bytes: bytes, timeout: float | None) -> bytes:
        method = getattr(self, rpc, None)
        route = routes.ROUTES.get(rpc)
        if method is None and route is not None:
            method = lambda req, route=route: route(self.store, req, self.identity)  # noqa: E731
        req_type = getattr(rr, _camel(rpc) + "Request", None)
        if method is None or req_type is None:
            raise ServiceError.unimplemented(
                f"dbosify does not implement the WorkflowService RPC {rpc!r}; see docs/COMPATIBILITY.md"
            )
        try:
            req = req_type.FromString(req_bytes)
        except DecodeError:  # e.g. a string that is not valid UTF-8
            raise ServiceError.invalid(f"{_camel(rpc)}Request could not be decoded (invalid UTF-8?)") from None
        # Temporal's frontend limits (ids, names, payloads), before any transaction.
        limits.check_request(self.store.limits_for(getattr(req, "namespace", "")), rpc, req)
        if timeout is not None:
            try:
                resp = await asyncio.wait_for(method(req), timeout)
            except asyncio.TimeoutError:
                raise ServiceError(4, "context deadline exceeded") from None
        else:
            resp = await method(req)
        return bytes(resp.SerializeToString())

    # -- cluster ---------------------------------------------------------------------------

    async def get_system_info(self, req: rr.GetSystemInfoRequest) -> Message:
        resp = rr.GetSystemInfoResponse(server_version="dbosify")
        c = resp.capabilities
        c.signal_and_query_header = True
        c.internal_error_differentiation = True
        c.activity_failure_include_heartbeat = True
        c.supports_schedules = True
        c.encoded_failure_attributes = True
        c.upsert_memo = True
        c.eager_workflow_start = True
        c.sdk_metadata = True
        c.count_group_by_execution_status = True
        return resp

    async def _namespace_names(self) -> list[str]:
        names = await in_thread(self.store.namespace_names)
        return sorted({namespaces.DEFAULT, *names})  # "default" exists from the start, as on Temporal

    async def describe_namespace(self, req: rr.DescribeNamespaceRequest) -> Message:
        name = req.namespace or namespaces.DEFAULT
        if name != namespaces.DEFAULT:
            # Registered (or adopted from before the catalog), else NamespaceNotFound: NOT_FOUND.
            await in_thread(self.store.ident, name)
        return namespace_info.describe(name, self.store.limits_for(name).blob_error)

    async def register_namespace(self, req: rr.RegisterNamespaceRequest) -> Message:
        """Register a namespace, as Temporal does before one can be used (its options, such as
        the retention period, are accepted and not kept: see docs/COMPATIBILITY.md)."""
        name = req.namespace
        created = await in_thread(self.store.register_namespace, name)
        if not created or name == namespaces.DEFAULT:
            raise ServiceError.already_exists(
                "Namespace already exists.", errdetails.NamespaceAlreadyExistsFailure()
            )
        return rr.RegisterNamespaceResponse()

    async def list_namespaces(self, req: rr.ListNamespacesRequest) -> Message:
        resp = rr.ListNamespacesResponse()
        for name in await self._namespace_names():
            resp.namespaces.append(namespace_info.describe(name, self.store.limits_for(name).blob_error))
        return resp

    # -- starting ---------------------------------------------------------------------------

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
        ):
            if req.HasField(f):
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

    # -- signals, cancel, terminate ---------------------------------------------------------

    def _running(self, tx: Tx, execution: common.WorkflowExecution) -> h.Run:
        run = h.find_run(tx, execution.workflow_id, execution.run_id or None, lock=True)
        if run is None:
            raise _not_found_run(execution.workflow_id, execution.run_id or None)
        if not run.running:
            raise _completed_error()
        return run

    async def signal_workflow_execution(self, req: rr.SignalWorkflowExecutionRequest) -> Message:
        def fn(tx: Tx) -> None:
            run = self._running(tx, req.workflow_execution)
            _runs.signal(
                tx,
                run,
                req.signal_name,
                req.input if req.HasField("input") else None,
                req.header if req.HasField("header") else None,
                req.identity,
                req.request_id,
            )

        await self.store.transact(req.namespace, fn)
        return rr.SignalWorkflowExecutionResponse()

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

    # -- reading ------------------------------------------------------------------------------

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
            return run, first[0][0], pend, vis

        run, started_event, pending, vis = await self.store.transact(req.namespace, fn)
        started = started_event.workflow_execution_started_event_attributes
        resp = rr.DescribeWorkflowExecutionResponse()
        info = resp.workflow_execution_info
        info.CopyFrom(vis)
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
        # A small close event comes with its wake-up (`_runs.close_run`): no read after it.
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

    async def get_search_attributes(self, req: rr.GetSearchAttributesRequest) -> Message:
        resp = rr.GetSearchAttributesResponse()
        for name, value_type in {**SYSTEM_ATTRIBUTES, **search_attributes.SERVER_SET}.items():
            resp.keys[name] = value_type  # type: ignore[assignment]
        return resp

    # -- queries --------------------------------------------------------------------------------

    async def query_workflow(self, req: rr.QueryWorkflowRequest) -> Message:
        ns = req.namespace
        query_id = str(uuid.uuid4())

        def fn(tx: Tx) -> h.Run:
            # The lock orders this after a closing transaction, so the query reaches either the
            # live run's driver or the closed-run replay, never neither.
            run = h.find_run(tx, req.execution.workflow_id, req.execution.run_id or None, lock=True)
            if run is None:
                raise _not_found_run(req.execution.workflow_id, req.execution.run_id or None)
            cond = req.query_reject_condition
            if cond == query_enums.QUERY_REJECT_CONDITION_NOT_OPEN and not run.running:
                return run
            if cond == query_enums.QUERY_REJECT_CONDITION_NOT_COMPLETED_CLEANLY and run.status not in (
                h.RUNNING,
                h.COMPLETED,
            ):
                return run
            tx.defer(  # with the COMMIT (the transaction is coalesced on Postgres)
                "INSERT INTO queries (query_id, run_id, state, request) VALUES (%s, %s, 'pending', %s)",
                (query_id, run.run_id, req.query.SerializeToString()),
            )
            tx.notify(f"q:{run.run_id}" if run.running else f"q-tq:{run.task_queue}")
            h.wake(tx, run)  # an evicted run is claimed and replayed to answer, as on Temporal
            return run

        # Waiting before the query is recorded: its answer's wake-up cannot be missed, and a
        # small answer comes with it, so the usual query takes one transaction here.
        key = f"qr:{query_id}"
        fut = self.store.waiter(ns, [key], value=True)
        try:
            run = await self.store.transact(ns, fn, coalesced=True)
        except BaseException:
            fut.cancel()
            raise
        cond = req.query_reject_condition
        if (cond == query_enums.QUERY_REJECT_CONDITION_NOT_OPEN and not run.running) or (
            cond == query_enums.QUERY_REJECT_CONDITION_NOT_COMPLETED_CLEANLY
            and run.status not in (h.RUNNING, h.COMPLETED)
        ):
            fut.cancel()
            resp = rr.QueryWorkflowResponse()
            resp.query_rejected.status = run.status  # type: ignore[assignment]
            return resp
        row = None
        deleted = False
        try:
            while True:
                try:
                    await self.store.wait_future(fut)
                finally:
                    fut.cancel()
                answer = self.store.take_value(ns, key)
                if answer is not None:
                    row = ("answered", answer)
                    break
                # Woken without the answer (a large one, or a re-check after a reconnect).
                fut = self.store.waiter(ns, [key], value=True)
                row = await self.store.transact(ns, lambda tx: tx.one(
                    "DELETE FROM queries WHERE query_id = %s AND state <> 'pending'"
                    " RETURNING state, response", (query_id,),
                ))
                if row is not None:
                    fut.cancel()
                    deleted = True
                    break
        finally:
            self.store.take_value(ns, key)
            if not deleted:
                self._forget_query(ns, query_id)  # off the caller's path
        state, response = row
        if state == "answered":
            result = query_pb.WorkflowQueryResult.FromString(bytes(response))
            if result.result_type == query_enums.QUERY_RESULT_TYPE_ANSWERED:
                out = rr.QueryWorkflowResponse()
                out.query_result.CopyFrom(result.answer)
                return out
            raise ServiceError(3, result.error_message or "query failed")  # INVALID_ARGUMENT
        if state == "closed":
            raise ServiceError(9, "workflow closed before the query was answered")
        raise ServiceError(9, bytes(response).decode() if response else "query failed")

    def _forget_query(self, ns: str, query_id: str) -> None:
        """Delete a query's row in the background (its caller has the answer, or has gone)."""
        task = asyncio.get_running_loop().create_task(self.store.transact(
            ns, lambda tx: tx.execute("DELETE FROM queries WHERE query_id = %s", (query_id,))
        ))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- updates ------------------------------------------------------------------------------

    async def update_workflow_execution(self, req: rr.UpdateWorkflowExecutionRequest) -> Message:
        ns = req.namespace
        update_id = req.request.meta.update_id or str(uuid.uuid4())
        req.request.meta.update_id = update_id

        def fn(tx: Tx) -> h.Run:
            run = self._running(tx, req.workflow_execution)
            if req.first_execution_run_id and run.first_execution_run_id != req.first_execution_run_id:
                raise _not_found_chain(req.workflow_execution.workflow_id, req.first_execution_run_id)
            exists = tx.one(
                "SELECT 1 FROM updates WHERE run_id = %s AND update_id = %s", (run.run_id, update_id)
            )
            if not exists:
                tx.execute(
                    "INSERT INTO updates (run_id, update_id, state, request) VALUES (%s, %s, 'requested', %s)",
                    (run.run_id, update_id, req.request.SerializeToString()),
                )
                tx.notify(f"u:{run.run_id}")
                h.wake(tx, run)
            return run

        run = await self.store.transact(ns, fn)
        return await self._wait_update(ns, run, update_id, req.wait_policy.lifecycle_stage)

    async def poll_workflow_execution_update(
        self, req: rr.PollWorkflowExecutionUpdateRequest
    ) -> Message:
        ns = req.namespace
        ref = req.update_ref

        def fn(tx: Tx) -> h.Run:
            run = h.find_run(tx, ref.workflow_execution.workflow_id, ref.workflow_execution.run_id or None)
            if run is None:
                raise _not_found_run(ref.workflow_execution.workflow_id)
            if not tx.one(
                "SELECT 1 FROM updates WHERE run_id = %s AND update_id = %s", (run.run_id, ref.update_id)
            ):
                raise ServiceError.not_found(f"update {ref.update_id!r} not found")
            return run

        run = await self.store.transact(ns, fn)
        return await self._wait_update(
            ns, run, ref.update_id, req.wait_policy.lifecycle_stage, poll=True
        )

    async def _wait_update(
        self, ns: str, run: h.Run, update_id: str, stage: int, poll: bool = False
    ) -> Message:
        want_completed = stage == upd_enums.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED
        while True:
            fut = self.store.waiter(ns, [f"upd:{run.run_id}:{update_id}", f"upd-run:{run.run_id}"])
            row = await self.store.transact(ns, functools.partial(_update_row, run.run_id, update_id))
            state, outcome = row if row else ("gone", None)
            if state == "continued":  # carried to the run this one continued into: follow it
                fut.cancel()
                successor = bytes(outcome or b"").decode()
                nxt = await self.store.transact(ns, functools.partial(_get_run, successor))
                if nxt is None:
                    raise ServiceError.not_found(_UPDATE_ABORTED)
                run = nxt
                continue
            done = (
                state in ("rejected", "completed", "aborted", "closed", "gone")
                or (state == "accepted" and not want_completed)
                # No wait policy, or ADMITTED: answer with the stage reached so far, at once.
                or stage
                in (
                    upd_enums.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_UNSPECIFIED,
                    upd_enums.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED,
                )
            )
            if done:
                fut.cancel()
                break
            try:
                await self.store.wait_future(fut)
            finally:
                fut.cancel()
        cls = rr.PollWorkflowExecutionUpdateResponse if poll else rr.UpdateWorkflowExecutionResponse
        resp = cls()
        resp.update_ref.workflow_execution.CopyFrom(h.execution(run))
        resp.update_ref.update_id = update_id
        if state == "closed":
            raise ServiceError.not_found(_UPDATE_ABORTED)
        if state == "gone":
            raise _completed_error()
        if state in ("rejected", "completed", "aborted"):
            resp.outcome.CopyFrom(upd_pb.Outcome.FromString(bytes(outcome)))  # type: ignore
            resp.stage = upd_enums.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED  # type: ignore[assignment]
        elif state == "accepted":
            resp.stage = upd_enums.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ACCEPTED  # type: ignore[assignment]
        else:
            resp.stage = upd_enums.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED  # type: ignore[assignment]
        return resp

    async def execute_multi_operation(self, req: rr.ExecuteMultiOperationRequest) -> Message:
        if len(req.operations) != 2:
            raise ServiceError.invalid("ExecuteMultiOperation needs a start and an update")
        start = req.operations[0].start_workflow
        update = req.operations[1].update_workflow
        self._check_start(start)
        update_id = update.request.meta.update_id or str(uuid.uuid4())
        update.request.meta.update_id = update_id

        def fn(tx: Tx) -> tuple[_runs.StartResult, h.Run]:
            # An update with this id in the latest run is attached to, whatever the id policies say,
            # when that run is still running or the update has completed.
            latest = h.current_run(tx, start.workflow_id, lock=True)
            if latest is not None:
                known = tx.one(
                    "SELECT state FROM updates WHERE run_id = %s AND update_id = %s",
                    (latest.run_id, update_id),
                )
                if known is not None and (latest.running or known[0] == "completed"):
                    return _runs.StartResult(latest.run_id, False), latest
            res = self._start_in_tx(tx, start)
            run = h.get_run(tx, res.run_id, lock=True)
            assert run is not None
            if not tx.one(
                "SELECT 1 FROM updates WHERE run_id = %s AND update_id = %s", (run.run_id, update_id)
            ):
                tx.execute(
                    "INSERT INTO updates (run_id, update_id, state, request) VALUES (%s, %s, 'requested', %s)",
                    (run.run_id, update_id, update.request.SerializeToString()),
                )
                tx.notify(f"u:{run.run_id}")
                h.wake(tx, run)
            return res, run

        try:
            res, run = await self.store.transact(req.namespace, fn)
        except ServiceError as err:
            from temporalio.api.errordetails.v1 import message_pb2 as errdetails

            detail = errdetails.MultiOperationExecutionFailure()
            st = detail.statuses.add(code=err.status, message=err.message)
            if err.detail is not None:
                st.details.add().Pack(err.detail)
            detail.statuses.add(code=10, message="Operation was aborted.")
            raise ServiceError(10, err.message, detail) from None
        resp = rr.ExecuteMultiOperationResponse()
        sr = resp.responses.add().start_workflow
        sr.run_id = res.run_id
        sr.started = res.started
        ur = await self._wait_update(
            req.namespace, run, update_id, update.wait_policy.lifecycle_stage
        )
        resp.responses.add().update_workflow.CopyFrom(ur)  # type: ignore
        return resp

    # -- async activity completion ---------------------------------------------------------------

    async def _token_by_id(self, req: Any) -> bytes:
        """A by-id request's task token: no workflow id names a standalone activity."""
        if not req.workflow_id:
            return await activities.token_by_id(self.store, req.namespace, req.activity_id, req.run_id)
        return await acts.token_by_id(
            self.store, req.namespace, req.workflow_id, req.run_id, req.activity_id
        )

    async def _heartbeat_too_large(self, req: Any, token: bytes) -> bool:
        """Details over the blob limit fail the attempt, and the heartbeat answers "cancel", as on Temporal."""
        failure = limits.heartbeat_failure(
            self.store.limits_for(req.namespace), req.details if req.HasField("details") else None
        )
        if failure is not None:
            await self._respond(req.namespace, token, "failed", failure)
        return failure is not None

    async def record_activity_task_heartbeat(self, req: Any) -> Message:
        if await self._heartbeat_too_large(req, req.task_token):
            return rr.RecordActivityTaskHeartbeatResponse(cancel_requested=True)
        a = await acts.heartbeat_by_token(
            self.store, req.namespace, req.task_token,
            req.details if req.HasField("details") else None,
        )
        return rr.RecordActivityTaskHeartbeatResponse(
            cancel_requested=a.cancel_requested, activity_paused=a.paused, activity_reset=a.reset
        )

    async def record_activity_task_heartbeat_by_id(self, req: Any) -> Message:
        token = await self._token_by_id(req)
        if await self._heartbeat_too_large(req, token):
            return rr.RecordActivityTaskHeartbeatByIdResponse(cancel_requested=True)
        a = await acts.heartbeat_by_token(
            self.store, req.namespace, token, req.details if req.HasField("details") else None
        )
        return rr.RecordActivityTaskHeartbeatByIdResponse(
            cancel_requested=a.cancel_requested, activity_paused=a.paused, activity_reset=a.reset
        )

    async def _respond(self, ns: str, token: bytes, kind: str, payload: Message | None) -> None:
        # An outcome over the blob limit is recorded as a failure, as Temporal's frontend does.
        kind, payload = limits.activity_outcome(self.store.limits_for(ns), kind, payload, worker=False)
        await acts.finish_by_token(self.store, ns, token, kind, payload, self.identity)

    async def respond_activity_task_completed(self, req: Any) -> Message:
        await self._respond(req.namespace, req.task_token, "completed", req.result)
        return rr.RespondActivityTaskCompletedResponse()

    async def respond_activity_task_failed(self, req: Any) -> Message:
        await self._respond(req.namespace, req.task_token, "failed", req.failure)
        return rr.RespondActivityTaskFailedResponse()

    async def respond_activity_task_canceled(self, req: Any) -> Message:
        await self._respond(req.namespace, req.task_token, "canceled", req.details)
        return rr.RespondActivityTaskCanceledResponse()

    async def respond_activity_task_completed_by_id(self, req: Any) -> Message:
        token = await self._token_by_id(req)
        await self._respond(req.namespace, token, "completed", req.result)
        return rr.RespondActivityTaskCompletedByIdResponse()

    async def respond_activity_task_failed_by_id(self, req: Any) -> Message:
        token = await self._token_by_id(req)
        await self._respond(req.namespace, token, "failed", req.failure)
        return rr.RespondActivityTaskFailedByIdResponse()

    async def respond_activity_task_canceled_by_id(self, req: Any) -> Message:
        token = await self._token_by_id(req)
        await self._respond(req.namespace, token, "canceled", req.details)
        return rr.RespondActivityTaskCanceledByIdResponse()
