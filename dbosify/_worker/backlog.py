"""A task queue's backlog, for the engine's metrics: ready tasks no worker has claimed yet.

Read only when an exporter collects (`dbosify._metrics.engine`), one short transaction per
watched queue (the queries are `dbosify._engine.task_queues.backlog`, which DescribeTaskQueue
reports too); the workers' claims read nothing more for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbosify._engine import task_queues as queues
from dbosify._metrics import engine
from dbosify._store import Tx

if TYPE_CHECKING:
    from dbosify._worker.interfaces import Core


class _Probe:
    """Held by its worker (the engine keeps a weak reference): gone with it."""

    def __init__(self, core: Core) -> None:
        self.store, self.ns, self.tq = core.store, core.ns, core.tq
        self.workflows, self.activities = core.enable_workflows, core.enable_activities

    def read(self) -> list[tuple[dict[str, str], int, float]]:
        return self.store.transact_sync(self.ns, self._read)

    def _read(self, tx: Tx) -> list[tuple[dict[str, str], int, float]]:
        now = tx.store.clock.now()
        kinds = [queues.WORKFLOW] if self.workflows else []
        kinds += [queues.ACTIVITY] if self.activities else []
        return [self._row(queues.KINDS[kind], queues.backlog(tx, self.tq, kind, now), now) for kind in kinds]

    def _row(self, kind: str, got: queues.Backlog, now: float) -> tuple[dict[str, str], int, float]:
        labels = {"namespace": self.ns, "task_queue": self.tq, "task_type": kind}
        return labels, got.count, max(0.0, now - got.oldest) if got.oldest is not None else 0.0


def watch(core: Core) -> None:
    """Report ``core``'s queue backlog while it lives (only if some runtime exports metrics)."""
    meter = getattr(core.runtime, "meter", None)
    if meter is None or core.store.clock.virtual:  # a time-skipping store: no ages to report,
        return  # and a probe's transaction would hold its virtual clock
    core.backlog_probe = probe = _Probe(core)  # type: ignore[attr-defined]
    engine.watch_backlog((id(core.store), core.ns, core.tq), probe, "read", getattr(meter, "sink", None))
