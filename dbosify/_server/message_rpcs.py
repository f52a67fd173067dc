"""Signals, queries and updates: what a client sends a running workflow and waits to hear back.

A query or an update is a row the run's driver answers (`dbosify._worker`); the caller waits
for the answer's wake-up, which carries a small answer with it. An update-with-start
(ExecuteMultiOperation) starts through `WorkflowRpcs`.

A part of `dbosify._server.service.WorkflowService`: one family of its RPCs.
"""

from __future__ import annotations

import asyncio
import functools
import uuid

from google.protobuf.message import Message
from temporalio.api.enums.v1 import query_pb2 as query_enums
from temporalio.api.enums.v1 import update_pb2 as upd_enums
from temporalio.api.query.v1 import message_pb2 as query_pb
from temporalio.api.update.v1 import message_pb2 as upd_pb
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._engine.errors import ServiceError
from dbosify._server.rpc_base import (
    _UPDATE_ABORTED,
    _completed_error,
    _get_run,
    _not_found_chain,
    _not_found_run,
    _update_row,
)
from dbosify._server.workflow_rpcs import WorkflowRpcs
from dbosify._store import Tx


class MessageRpcs(WorkflowRpcs):
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
