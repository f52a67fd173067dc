"""Payload size limits on a workflow task's commands, as Core and the server apply them.

- Warning: payloads over the client's ``payloads_warn_size`` (temporalio's `PayloadLimitsConfig`,
  512 KiB by default) are logged as a warning through the worker's runtime ([TMPRL1103]).
- Error: the namespace's blob size limit (2 MiB, or the dev server's ``limit.blobSize.error``)
  makes the worker fail the workflow task itself (cause PAYLOADS_TOO_LARGE, logged as an error),
  as Core does. With ``disable_payload_error_limit`` the commands reach the "server", which
  terminates the run with the command's attribute named, as Temporal does.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import failed_cause_pb2 as causes
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc

from dbosify._engine import core_logs

DEFAULT_BLOB_ERROR = 2 * 1024 * 1024
PAYLOADS_TOO_LARGE = causes.WORKFLOW_TASK_FAILED_CAUSE_PAYLOADS_TOO_LARGE
WARN_MESSAGE = "[TMPRL1103] Attempted to upload payloads with size that exceeded the warning limit."
ERROR_MESSAGE = "[TMPRL1103] Attempted to upload payloads with size that exceeded the error limit."

# What the server names when a command's payloads are too large.
_SERVER_NAMES: dict[str, tuple[str, str]] = {
    "schedule_activity": ("BadScheduleActivityAttributes", "ScheduleActivityTaskCommandAttributes.Input"),
    "complete_workflow_execution": (
        "BadCompleteWorkflowExecutionAttributes", "CompleteWorkflowExecutionCommandAttributes.Result"),
    "fail_workflow_execution": ("BadFailWorkflowExecutionAttributes", "FailWorkflowExecutionCommandAttributes.Failure"),
    "continue_as_new_workflow_execution": (
        "BadContinueAsNewAttributes", "ContinueAsNewWorkflowExecutionCommandAttributes.Input"),
    "start_child_workflow_execution": (
        "BadStartChildExecutionAttributes", "StartChildWorkflowExecutionCommandAttributes.Input"),
    "signal_external_workflow_execution": (
        "BadSignalWorkflowExecutionAttributes", "SignalExternalWorkflowExecutionCommandAttributes.Input"),
}


class TooLarge(Exception):
    """The commands' payloads are over the error limit."""

    def __init__(self, message: str, *, terminate: bool, cause: int = PAYLOADS_TOO_LARGE) -> None:
        super().__init__(message)
        self.message = message
        self.terminate = terminate
        self.cause = cause


def payload_bytes(msg: Message) -> int:
    """The size of every `Payload` inside ``msg``."""
    if isinstance(msg, common.Payload):
        return msg.ByteSize()
    total = 0
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if isinstance(v, Message)]
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        total += sum(payload_bytes(v) for v in values)
    return total


def check(commands: list[wc.WorkflowCommand], *, warn_at: int, error_at: int, error_enabled: bool,
          runtime: Any, run_id: str) -> None:
    """Warn about, or refuse, one workflow task's commands by the size of their payloads."""
    if sum(c.ByteSize() for c in commands) <= min(warn_at, error_at):
        return  # nothing could be over either limit (the common case: no walk)
    sizes = [(c, payload_bytes(c)) for c in commands]
    total = sum(size for _, size in sizes)
    for cmd, size in sizes:
        if size > error_at:
            if error_enabled:
                core_logs.emit(runtime, logging.ERROR, core_logs.PAYLOADS_TARGET, ERROR_MESSAGE,
                               run_id=run_id, payloads_size=size, limit=error_at)
                raise TooLarge(f"{ERROR_MESSAGE} Size: {size}, limit: {error_at}", terminate=False)
            kind = cmd.WhichOneof("variant") or ""
            cause, attribute = _SERVER_NAMES.get(kind, ("BadCommandAttributes", f"{kind} payloads"))
            raise TooLarge(f"{cause}: {attribute} exceeds size limit.", terminate=True)
    if total > warn_at:
        core_logs.emit(runtime, logging.WARNING, core_logs.PAYLOADS_TARGET, WARN_MESSAGE,
                       run_id=run_id, payloads_size=total, limit=warn_at)
