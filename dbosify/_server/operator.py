"""The operator service: a namespace's custom search attributes (add, remove, list), and Nexus
endpoints (`nexus_endpoints`)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from temporalio.api.operatorservice.v1 import request_response_pb2 as ops

from dbosify._engine import nexus_endpoints
from dbosify._engine import search_attributes as sa
from dbosify._engine.errors import ServiceError
from dbosify._engine.visibility_sql import SYSTEM_ATTRIBUTES
from dbosify._store import Store, Tx


class OperatorService(nexus_endpoints.NexusEndpointRPCs):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def call(self, rpc: str, req_bytes: bytes) -> bytes:
        handler = _HANDLERS.get(rpc)
        if handler is None:
            raise ServiceError.unimplemented(
                f"dbosify does not implement the operator service RPC {rpc!r}; see docs/COMPATIBILITY.md"
            )
        request_type, method = handler
        resp: Message = await method(self, request_type.FromString(req_bytes))
        return bytes(resp.SerializeToString())

    async def list_search_attributes(self, req: ops.ListSearchAttributesRequest) -> Message:
        custom = await self.store.transact(req.namespace, sa.registry)
        resp = ops.ListSearchAttributesResponse(storage_schema={})
        for name, value_type in custom.items():
            resp.custom_attributes[name] = value_type  # type: ignore[assignment]
        for name, value_type in {**SYSTEM_ATTRIBUTES, **sa.SERVER_SET}.items():
            resp.system_attributes[name] = value_type  # type: ignore[assignment]
        return resp

    async def add_search_attributes(self, req: ops.AddSearchAttributesRequest) -> Message:
        attrs = {name: int(t) for name, t in req.search_attributes.items()}

        def fn(tx: Tx) -> None:
            sa.add(tx, attrs, SYSTEM_ATTRIBUTES)

        await self.store.transact(req.namespace, fn)
        return ops.AddSearchAttributesResponse()

    async def remove_search_attributes(self, req: ops.RemoveSearchAttributesRequest) -> Message:
        names = list(req.search_attributes)
        await self.store.transact(req.namespace, lambda tx: sa.remove(tx, names))
        return ops.RemoveSearchAttributesResponse()


_HANDLERS: dict[str, tuple[Any, Any]] = {
    "list_search_attributes": (ops.ListSearchAttributesRequest, OperatorService.list_search_attributes),
    "add_search_attributes": (ops.AddSearchAttributesRequest, OperatorService.add_search_attributes),
    "remove_search_attributes": (ops.RemoveSearchAttributesRequest, OperatorService.remove_search_attributes),
    **nexus_endpoints.HANDLERS,
}
