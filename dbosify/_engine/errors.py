"""Temporal-shaped errors raised by the in-process service (gRPC status codes and details)."""

from __future__ import annotations

from google.protobuf.message import Message
from temporalio.api.common.v1 import GrpcStatus

OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
ABORTED = 10
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14


class ServiceError(Exception):
    """An RPC failure with a gRPC status code, turned into ``RPCError`` at the bridge."""

    def __init__(self, status: int, message: str, detail: Message | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail

    def grpc_status_bytes(self) -> bytes:
        st = GrpcStatus(code=self.status, message=self.message)
        if self.detail is not None:
            st.details.add().Pack(self.detail)
        return st.SerializeToString()

    @classmethod
    def not_found(cls, message: str, detail: Message | None = None) -> ServiceError:
        return cls(NOT_FOUND, message, detail)

    @classmethod
    def already_exists(cls, message: str, detail: Message | None = None) -> ServiceError:
        return cls(ALREADY_EXISTS, message, detail)

    @classmethod
    def invalid(cls, message: str) -> ServiceError:
        return cls(INVALID_ARGUMENT, message)

    @classmethod
    def unimplemented(cls, message: str) -> ServiceError:
        return cls(UNIMPLEMENTED, message)
