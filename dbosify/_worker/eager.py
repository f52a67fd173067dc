"""Eager workflow start: a run started with ``request_eager_start`` by a client whose process runs
a worker of its task queue is claimed by that worker in the start's own transaction, and its
driver starts at once, with no claim round trip, as Temporal hands the first workflow task back
to the starting process. Without such a worker the start is an ordinary one.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

from dbosify._dbos import records
from dbosify._engine.liveness import owns_row
from dbosify._store import Store, Tx

if TYPE_CHECKING:
    from dbosify._worker.interfaces import Core

_workers: dict[tuple[int, str, str], weakref.WeakSet[Core]] = {}


def register(core: Core) -> None:
    _workers.setdefault((id(core.store), core.ns, core.tq), weakref.WeakSet()).add(core)


def unregister(core: Core) -> None:
    found = _workers.get((id(core.store), core.ns, core.tq))
    if found is not None:
        found.discard(core)


def local_worker(store: Store, namespace: str, task_queue: str) -> Core | None:
    for core in list(_workers.get((id(store), namespace, task_queue), ())):
        if not core.shutting_down and core.enable_workflows and core.deployment is None:
            return core
    return None


async def ready(core: Core, within: float = 1.0) -> bool:
    """Whether ``core`` can take a run now: started, and registered (its liveness row written)."""
    try:
        if not core.started:
            core.ensure_started()  # (a worker is built and run on its client's loop)
        await asyncio.wait_for(core.registered(), within)
    except (asyncio.TimeoutError, RuntimeError):
        return False
    return True


def claim(tx: Tx, core: Core, workflow_id: str, run_id: str) -> int | None:
    """Claim a run just started in ``tx`` for ``core``; its claim generation, or None."""
    if not owns_row(tx, core.id):
        return None  # not registered yet (or presumed dead): an ordinary start
    got = tx.one(
        "UPDATE executions SET owner = %s, claim_gen = claim_gen + 1"
        " WHERE run_id = %s AND owner IS NULL AND status = 1 AND not_before IS NULL RETURNING claim_gen",
        (core.id, run_id),
    )
    if got is None:
        return None
    records.on_claim(tx, [(workflow_id, run_id)], core.id)
    return int(got[0])


def dispatch(core: Core, run_id: str, gen: int) -> None:
    """After the start committed: the worker drives the run now (from any thread)."""
    core.loop.call_soon_threadsafe(core.start_driver, run_id, gen)
