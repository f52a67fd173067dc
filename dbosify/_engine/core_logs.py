"""Core's logs, forwarded as the Rust runtime forwards them.

temporalio's `Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(forwarding=...)))` asks Core
to hand its log lines to a Python logger. Core's stand-in here logs the same events (a failing
workflow task, payloads over a size limit, the runtime's test lines) through the runtime a client
or worker was built with: each entry names Core's target and carries its fields, and the
runtime's filter decides per target which levels pass, as Core's does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

_LEVELS = {"TRACE": 9, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR, "OFF": logging.CRITICAL + 10}

# Core's targets for the events logged here.
WORKFLOW_TARGET = "temporalio_sdk_core::worker::workflow"
RUNTIME_TARGET = "temporal_sdk_bridge::runtime"
PAYLOADS_TARGET = "temporalio_common::payload_limits"


class LogEntry:
    """One forwarded line, shaped like the native ``BufferedLogEntry``."""

    __slots__ = ("target", "message", "time", "level", "_fields")

    def __init__(self, level: int, target: str, message: str, fields: dict[str, Any]) -> None:
        self.level = level
        self.target = target
        self.message = message
        self.time = time.time()
        self._fields = fields

    @property
    def fields(self) -> dict[str, Any]:
        return dict(self._fields)


class Forwarder:
    """A runtime's forwarding: its callback and its per-target level filter."""

    def __init__(self, forward_to: Callable[[Sequence[LogEntry]], None] | None, filter_spec: str) -> None:
        self.forward_to = forward_to
        self.default = logging.ERROR
        self.by_target: dict[str, int] = {}
        for part in (filter_spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            target, eq, level = part.rpartition("=")
            value = _LEVELS.get((level if eq else part).upper())
            if value is None:
                continue
            if eq:
                self.by_target[target] = value
            else:
                self.default = value

    @classmethod
    def of(cls, runtime_options: Any) -> Forwarder | None:
        logging_config = getattr(getattr(runtime_options, "telemetry", None), "logging", None)
        if logging_config is None or logging_config.forward_to is None:
            return None
        return cls(logging_config.forward_to, logging_config.filter)

    def enabled(self, level: int, target: str) -> bool:
        crate = target.split("::", 1)[0]
        return level >= self.by_target.get(crate, self.default)

    def emit(self, level: int, target: str, message: str, **fields: Any) -> None:
        if self.forward_to is not None and self.enabled(level, target):
            self.forward_to([LogEntry(level, target, message, fields)])


def emit(runtime: Any, level: int, target: str, message: str, **fields: Any) -> None:
    """Log a Core event through ``runtime`` (a `RuntimeRef`, or None: not forwarded)."""
    forwarder = getattr(runtime, "log_forwarder", None)
    if forwarder is not None:
        forwarder.emit(level, target, message, **fields)
