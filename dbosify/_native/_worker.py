"""The native worker surface: ``new_worker`` and the slot-supplier types temporalio imports."""

from __future__ import annotations

import logging
from typing import Any

from dbosify._worker import eager
from dbosify._worker.core import PollShutdownError, WorkerCore
from dbosify._worker.replay import HistoryPusher, ReplayWorker

logger = logging.getLogger("dbosify")
_warned: set[str] = set()

WorkerRef = WorkerCore


def _note_ignored(config: Any) -> None:
    """Log once per option that is accepted but not honoured (see docs/COMPATIBILITY.md)."""
    checks = {
        "legacy build-id versioning": type(config.versioning_strategy).__name__ == "WorkerVersioningStrategyLegacyBuildIdBased",
    }
    for name, used in checks.items():
        if used and name not in _warned:
            _warned.add(name)
            logger.warning("dbosify: Worker option %s is accepted but not honoured yet", name)


def new_worker(runtime_ref: Any, client: Any, config: Any) -> WorkerCore:
    if runtime_ref is not None:
        runtime_ref.assert_same_process("create worker")
    _note_ignored(config)
    core = WorkerCore(client, config)
    core.runtime = runtime_ref
    client.service.eager = eager  # this process runs workers: a start may hand one its run
    return core


def new_replay_worker(runtime_ref: Any, config: Any) -> list[Any]:
    worker = ReplayWorker(config)
    return [worker, HistoryPusher(worker)]


class CustomSlotSupplier:
    """Wraps a user's custom slot supplier; dbosify does not call it yet."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner


class SlotReserveCtx:
    pass


class SlotReleaseCtx:
    pass


class SlotMarkUsedCtx:
    pass


class WorkflowSlotInfo:
    pass


class ActivitySlotInfo:
    pass


class LocalActivitySlotInfo:
    pass


__all__ = ["HistoryPusher", "PollShutdownError", "WorkerRef", "new_worker", "new_replay_worker"]
