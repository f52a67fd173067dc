"""Namespaces and the cluster: GetSystemInfo, DescribeNamespace, RegisterNamespace, ListNamespaces,
GetSearchAttributes.

A part of `dbosify._server.service.WorkflowService`: one family of its RPCs.
"""

from __future__ import annotations

from google.protobuf.message import Message
from temporalio.api.errordetails.v1 import message_pb2 as errdetails
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import search_attributes
from dbosify._engine.errors import ServiceError
from dbosify._engine.visibility_sql import SYSTEM_ATTRIBUTES
from dbosify._server import namespace_info
from dbosify._server.rpc_base import (
    RpcBase,
)
from dbosify._store import namespaces
from dbosify._store.threads import in_thread


class NamespaceRpcs(RpcBase):
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

    async def get_search_attributes(self, req: rr.GetSearchAttributesRequest) -> Message:
        resp = rr.GetSearchAttributesResponse()
        for name, value_type in {**SYSTEM_ATTRIBUTES, **search_attributes.SERVER_SET}.items():
            resp.keys[name] = value_type  # type: ignore[assignment]
        return resp
