"""The native client surface: ``connect_client`` and ``ClientRef``, answered by the store."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dbosify._engine.errors import FAILED_PRECONDITION, INTERNAL, UNAVAILABLE, ServiceError
from dbosify._metrics import core as core_metrics
from dbosify._server.operator import OperatorService
from dbosify._server.service import WorkflowService
from dbosify._server.time_skipping import TestService
from dbosify._store import ENV_NAMESPACES, Store, StoreError, get_store, resolve_url
from dbosify._store.errors import InvalidData
from dbosify._store.namespaces import ForeignStore, InvalidNamespace, NamespaceNotFound
from dbosify._store.threads import in_thread

logger = logging.getLogger("dbosify")
_announced: set[str] = set()


_HEALTH_SERVICES = ("", "temporal.api.workflowservice.v1.WorkflowService")


class RPCError(RuntimeError):
    """An RPC failure; ``args`` are ``(status, message, grpc_status_bytes)`` like the native one."""


class ClientRef:
    """What temporalio's bridge client holds: one store and the service on it."""

    def __init__(self, store: Store, config: Any, runtime: Any = None) -> None:
        self.store = store
        self.config = config
        self.runtime = runtime  # the temporalio Runtime's RuntimeRef: where Core's logs go
        self.identity: str = getattr(config, "identity", "") or ""
        self.service = WorkflowService(store, self.identity)
        self.service.runtime = runtime
        self.service.memo_warn_size = int(getattr(config, "memo_warn_size", 0) or 2 * 1024)
        self.operator = OperatorService(store)
        self.test = TestService(store)
        self.metrics = core_metrics.for_client(getattr(runtime, "meter", None))  # Core's request metrics

    def update_metadata(self, headers: Mapping[str, str | bytes]) -> None:
        self.config.metadata = headers

    def update_api_key(self, api_key: str | None) -> None:
        self.config.api_key = api_key

    async def _call(self, service: str, call: Any) -> bytes:
        timeout = call.timeout_millis / 1000 if call.timeout_millis else None
        try:
            if service == "workflow":
                return await self.service.call(call.rpc, call.req, timeout)
            if service == "health":
                from temporalio.bridge.proto.health.v1 import health_pb2

                asked = health_pb2.HealthCheckRequest.FromString(call.req).service  # type: ignore[attr-defined]
                if asked not in _HEALTH_SERVICES:
                    raise ServiceError.not_found(f"unknown service {asked!r}")
                return bytes(health_pb2.HealthCheckResponse(status=1).SerializeToString())  # type: ignore
            if service == "operator":
                return await self.operator.call(call.rpc, call.req)
            if service == "test":
                return await self.test.call(call.rpc, call.req)
            raise ServiceError.unimplemented(
                f"dbosify does not implement the {service} service RPC {call.rpc!r}; see docs/COMPATIBILITY.md"
            )
        except InvalidNamespace as err:  # an empty or too long name: refused as Temporal does
            err2 = ServiceError.invalid(str(err))
            raise RPCError(err2.status, err2.message, err2.grpc_status_bytes()) from None
        except NamespaceNotFound as err:  # not registered: NOT_FOUND, as Temporal answers
            err2 = namespace_not_found(err)
            raise RPCError(err2.status, err2.message, err2.grpc_status_bytes()) from None
        except ServiceError as err:
            raise RPCError(err.status, err.message, err.grpc_status_bytes()) from None
        except InvalidData as err:  # the database refused a value: the request is at fault
            err2 = ServiceError.invalid(f"invalid argument: {err}")
            raise RPCError(err2.status, err2.message, err2.grpc_status_bytes()) from None
        except ForeignStore as err:  # a schema or file dbosify did not create: not retried
            err2 = ServiceError(FAILED_PRECONDITION, str(err))
            raise RPCError(err2.status, err2.message, err2.grpc_status_bytes()) from None
        except StoreError as err:
            err2 = ServiceError(UNAVAILABLE, str(err))
            raise RPCError(err2.status, err2.message, err2.grpc_status_bytes()) from None
        except Exception as err:  # a fault of ours: INTERNAL, never a driver's exception class
            err2 = internal_error(service, call.rpc, err)
            raise RPCError(err2.status, err2.message, err2.grpc_status_bytes()) from None

    def _same_process(self) -> None:
        if self.runtime is not None:
            self.runtime.assert_same_process("use client")

    def call_workflow_service(self, call: Any) -> Any:
        self._same_process()
        return self._call("workflow", call) if self.metrics is None else self.metrics.call(call.rpc, self._call("workflow", call))

    def call_operator_service(self, call: Any) -> Any:
        self._same_process()
        return self._call("operator", call) if self.metrics is None else self.metrics.call(call.rpc, self._call("operator", call))

    def call_cloud_service(self, call: Any) -> Any:
        return self._call("cloud", call)

    def call_test_service(self, call: Any) -> Any:
        return self._call("test", call)

    def call_health_service(self, call: Any) -> Any:
        return self._call("health", call)


def internal_error(service: str, rpc: str, err: Exception) -> ServiceError:
    """INTERNAL with one line for an exception nothing expected; its traceback goes to the log."""
    logger.error("dbosify: %s RPC %s failed unexpectedly", service, rpc, exc_info=err)
    return ServiceError(
        INTERNAL,
        f"internal error in {rpc} ({type(err).__name__}); the traceback is logged on the 'dbosify' logger",
    )


def namespace_not_found(err: NamespaceNotFound) -> ServiceError:
    from temporalio.api.errordetails.v1 import message_pb2 as errdetails

    return ServiceError.not_found(str(err), errdetails.NamespaceNotFoundFailure(namespace=err.name))


async def connect_client(runtime_ref: Any, config: Any) -> ClientRef:
    """Resolve the store for ``config.target_url`` and check it can be reached.

    A target or ``DBOSIFY_DATABASE_URL`` that is not a database URL dbosify can use (nor a
    plain ``host:port``) raises a `ValueError` saying what is accepted, as the native client
    does for an invalid target URL; a database that cannot be reached, a `RuntimeError`
    ("Failed client connect: ..."). Neither shows a password. The namespaces listed in
    ``DBOSIFY_NAMESPACES`` are registered here (once per process and store).
    """
    if runtime_ref is not None:
        runtime_ref.assert_same_process("create client")
    url = resolve_url(getattr(config, "target_url", None))  # InvalidURL, a ValueError
    store = get_store(url)
    try:
        await in_thread(store.check)
    except StoreError as err:
        raise RuntimeError(f"Failed client connect: {err}") from None
    try:
        await in_thread(store.register_env_namespaces)
    except InvalidNamespace as err:
        raise ValueError(f"{ENV_NAMESPACES} lists a name that cannot be a namespace: {err}") from None
    except StoreError as err:
        raise RuntimeError(f"Failed client connect: {err}") from None
    if url not in _announced:
        _announced.add(url)
        logger.info("dbosify: using %s", store.describe())
    return ClientRef(store, config, runtime_ref)
