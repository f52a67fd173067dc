"""What the modules of `_worker` know of the worker core and of a run's driver, as protocols.

`core.WorkerCore` builds run drivers (`driver.RunDriver`), which call back into it; the command
appliers and the cache see a driver. Typing those calls with the classes themselves would make
the modules import one another; these protocols name what each side uses, and mypy checks that
the classes provide it. `Snapshot` (what a driver reads of its run in one transaction) is here
for the same reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.api.query.v1 import message_pb2 as query_pb
from temporalio.api.update.v1 import message_pb2 as upd_pb
from temporalio.bridge.proto.activity_result import activity_result_pb2 as ar
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as wc
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify._engine import activity_tasks as acts
from dbosify._engine import history as h
from dbosify._store import Store, Tx
from dbosify._store.loop_pool import LoopPool
from dbosify._worker.replay_gate import ReplayGate
from dbosify._worker.tracking import DriverState


@dataclass
class Snapshot:
    run: h.Run
    events: list[tuple[hist.HistoryEvent, int | None]]
    updates: list[upd_pb.Request]
    queries: list[tuple[str, query_pb.WorkflowQuery]]


class ClientRef(Protocol):
    """What a worker uses of the client it was built with (`dbosify._native._client.ClientRef`)."""

    store: Store
    config: Any
    runtime: Any
    identity: str


class RunCache(Protocol):
    """The worker's cache of runs (`dormancy.Cache`), as a driver sees it."""

    @property
    def capacity(self) -> int: ...

    def touch(self, run_id: str) -> None: ...


class Core(Protocol):
    """What run drivers, eager starts and the backlog probe use of `core.WorkerCore`."""

    @property
    def store(self) -> Store: ...

    @property
    def ns(self) -> str: ...

    @property
    def tq(self) -> str: ...

    @property
    def id(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def build_id(self) -> str: ...

    @property
    def deployment(self) -> str | None: ...

    @property
    def default_versioning_behavior(self) -> int: ...

    @property
    def runtime(self) -> Any: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def loop_pool(self) -> LoopPool: ...

    @property
    def cache(self) -> RunCache: ...

    @property
    def replay_gate(self) -> ReplayGate: ...

    @property
    def _replay_priority(self) -> dict[str, int]: ...

    @property
    def enable_workflows(self) -> bool: ...

    @property
    def enable_activities(self) -> bool: ...

    @property
    def payload_error_limit(self) -> bool: ...

    @property
    def payloads_warn_size(self) -> int: ...

    @property
    def shutting_down(self) -> bool: ...

    @property
    def started(self) -> bool: ...

    def ensure_started(self) -> None: ...

    async def registered(self) -> None: ...

    async def activate(self, act: wa.WorkflowActivation) -> wcomp.WorkflowActivationCompletion: ...

    def start_driver(self, run_id: str, gen: int) -> None: ...

    def _driver_idle(self, driver: Driver | None) -> None: ...

    def _run_sleeps(self, wake: float | None) -> None: ...

    def eager_activity_budget(self) -> int: ...

    def release_slots(self, n: int) -> None: ...

    def adopt_eager(self, claimed: list[acts.Claimed]) -> None: ...

    def recheck_owned_attempts(self) -> None: ...

    async def run_local_activity(
        self, run: h.Run, la: wc.ScheduleLocalActivity, attempt: int, scheduled: float
    ) -> ar.ActivityExecutionResult: ...


class Driver(Protocol):
    """What the command appliers and the cache use of a run's driver (`driver_base.DriverBase`)."""

    core: Core
    sleep_requested: bool

    @property
    def ns(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def store(self) -> Store: ...

    @property
    def state(self) -> DriverState: ...

    @property
    def idle(self) -> bool: ...

    @property
    def local_tasks(self) -> dict[int, asyncio.Task[None]]: ...

    def _owned(self, tx: Tx) -> h.Run | None: ...

    def _snapshot(self, tx: Tx, after: int) -> Snapshot: ...
