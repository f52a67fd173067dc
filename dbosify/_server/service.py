"""Temporal's WorkflowService, answered from the database instead of a server.

The wheel's ``temporalio.client`` turns every user call into one of these RPCs
(protobuf in, protobuf out); we answer them with transactions on the store. RPC
names and messages are Temporal's own, so the client above is used unchanged.

One module per family of RPCs, each a class this service is built from:

- `namespace_rpcs`: the cluster and namespaces;
- `workflow_rpcs`: starting, cancelling, terminating, describing runs and reading history;
- `message_rpcs`: signals, queries, updates and update-with-start;
- `activity_task_rpcs`: a workflow's activities completed or heartbeated from outside a worker;
- `routes`: the RPCs answered by a function of another module (visibility, task queues, schedules,
  reset and delete, pausing and resetting activities, standalone activities).

`call` decodes the request, applies Temporal's frontend limits (`limits`) and dispatches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import DecodeError, Message
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine.errors import ServiceError
from dbosify._server import limits, routes
from dbosify._server.activity_task_rpcs import ActivityTaskRpcs
from dbosify._server.message_rpcs import MessageRpcs
from dbosify._server.namespace_rpcs import NamespaceRpcs
from dbosify._server.rpc_base import _camel

Handler = Callable[[Any], Awaitable[Message]]


class WorkflowService(MessageRpcs, NamespaceRpcs, ActivityTaskRpcs):
    """The WorkflowService RPCs on one store."""

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
