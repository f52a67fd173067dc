"""One workflow task's transaction as each command's applier sees it (`Applying`), and the error
that fails the task when the server refuses a command (`BadCommand`). The appliers are in
`commands`, `command_effects` and `nexus`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from temporalio.api.update.v1 import message_pb2 as upd_pb

from dbosify._engine import activity_tasks as acts
from dbosify._engine import history as h
from dbosify._store import Tx

if TYPE_CHECKING:
    from dbosify._worker.interfaces import Driver


@dataclass
class Applying:
    """One workflow task's transaction, as each command's applier sees it."""

    driver: Driver
    tx: Tx
    run: h.Run
    wft_id: int  # the WorkflowTaskCompleted event's id
    ts: float  # when the task takes effect (its WorkflowTaskCompleted event's time)
    delivered: dict[str, upd_pb.Request]  # updates this task delivered, by id
    scheduled_now: dict[int, Any]  # activities scheduled by this task: seq -> attributes
    meta: Any = None  # the current command's user metadata
    eager_budget: int = 0  # activities this task may hand straight to its worker
    eager: list[acts.Claimed] = field(default_factory=list)  # those it did


class BadCommand(Exception):
    """A command the server refuses: its workflow task fails with ``cause``, as on Temporal."""

    def __init__(self, cause: int, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message
