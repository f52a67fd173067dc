"""A workflow's activities answered by token or by id: heartbeats and completions sent from outside
a worker (async activity completion). Standalone activities are `activities`.

A part of `dbosify._server.service.WorkflowService`: one family of its RPCs.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import activity_tasks as acts
from dbosify._engine import limits as engine_limits
from dbosify._server import activities
from dbosify._server.rpc_base import (
    RpcBase,
)


class ActivityTaskRpcs(RpcBase):
    async def _token_by_id(self, req: Any) -> bytes:
        """A by-id request's task token: no workflow id names a standalone activity."""
        if not req.workflow_id:
            return await activities.token_by_id(self.store, req.namespace, req.activity_id, req.run_id)
        return await acts.token_by_id(
            self.store, req.namespace, req.workflow_id, req.run_id, req.activity_id
        )

    async def _heartbeat_too_large(self, req: Any, token: bytes) -> bool:
        """Details over the blob limit fail the attempt, and the heartbeat answers "cancel", as on Temporal."""
        failure = engine_limits.heartbeat_failure(
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
        kind, payload = engine_limits.activity_outcome(self.store.limits_for(ns), kind, payload, worker=False)
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
