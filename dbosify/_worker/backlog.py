"""A task queue's backlog, for the engine's metrics: ready tasks no worker has claimed yet.

Read only when an exporter collects (`dbosify._metrics.engine`), one short transaction per
watched queue; the workers' claims read nothing more for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
        out = []
        if self.workflows:
            got = tx.one(
                "SELECT count(*), min(CASE WHEN dormant = 1 THEN wake_at ELSE COALESCE(not_before, start_time) END)"
                " FROM executions WHERE task_queue = %s AND status = 1 AND owner IS NULL"
                " AND ((dormant = 0 AND (not_before IS NULL OR not_before <= %s))"
                " OR (dormant = 1 AND wake_at <= %s))",
                (self.tq, now, now),
            )
            out.append(self._row("workflow", got, now))
        if self.activities:
            got = tx.one(
                "SELECT count(*), min(available_at) FROM activity_tasks WHERE task_queue = %s"
                " AND state = 'scheduled' AND available_at <= %s AND paused = 0",
                (self.tq, now),
            )
            out.append(self._row("activity", got, now))
        return out

    def _row(self, kind: str, got: tuple[int, float | None] | None, now: float) -> tuple[dict[str, str], int, float]:
        count, oldest = (got or (0, None))
        labels = {"namespace": self.ns, "task_queue": self.tq, "task_type": kind}
        return labels, int(count or 0), max(0.0, now - float(oldest)) if oldest is not None else 0.0


def watch(core: Core) -> None:
    """Report ``core``'s queue backlog while it lives (only if some runtime exports metrics)."""
    meter = getattr(core.runtime, "meter", None)
    if meter is None or core.store.clock.virtual:  # a time-skipping store: no ages to report,
        return  # and a probe's transaction would hold its virtual clock
    core.backlog_probe = probe = _Probe(core)  # type: ignore[attr-defined]
    engine.watch_backlog((id(core.store), core.ns, core.tq), probe, "read", getattr(meter, "sink", None))
