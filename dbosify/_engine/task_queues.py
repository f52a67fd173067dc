"""What a task queue holds and who polls it: the engine's side of DescribeTaskQueue
(`dbosify._server.task_queues`) and of the backlog metrics (`dbosify._worker.backlog`).

- **Backlog**: the tasks of a type that are ready and that no worker has claimed yet, and when the
  oldest of them became ready. Workflow tasks are runs with no owner that have work now (a new
  run, a delayed start that is due, a dormant run whose wake-up time has passed); activity tasks
  are attempts scheduled and due and not paused; Nexus tasks, start and cancel requests due. A
  run's tasks while a worker holds it are not counted, as Temporal does not count a sticky
  queue's.
- **Pollers**: a worker polls its queue from its first poll until it shuts down, and its liveness
  row (`dbosify._worker.liveness`) is beaten every second: a live worker's last access is its
  last beat. When a worker leaves or is reaped, `depart` keeps who it was in ``pollers`` for
  `POLLER_TTL` after its last beat, as a Temporal server lists a poller for five minutes after
  its last poll. One entry per identity, as on Temporal (two workers of one process share one).

Queue types are temporalio's ``TaskQueueType`` numbers; a worker's row holds them as bits
(`type_bits`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dbosify._store import Tx

WORKFLOW, ACTIVITY, NEXUS = 1, 2, 3  # temporalio's TaskQueueType
KINDS = {WORKFLOW: "workflow", ACTIVITY: "activity", NEXUS: "nexus"}
POLLER_TTL = 300.0  # seconds a poller stays listed after its last access, as on Temporal


def type_bits(types: Iterable[int]) -> int:
    return sum(1 << (t - 1) for t in set(types) if t in KINDS)


@dataclass(frozen=True)
class Backlog:
    count: int
    oldest: float | None  # the store's clock: when the oldest ready task became ready


@dataclass(frozen=True)
class Poller:
    identity: str
    last_access: float  # wall-clock seconds
    build_id: str


def backlog(tx: Tx, task_queue: str, task_type: int, now: float) -> Backlog:
    """``task_queue``'s ready, unclaimed tasks of ``task_type`` at ``now`` (the store's clock)."""
    if task_type == WORKFLOW:
        got = tx.one(
            "SELECT count(*), min(CASE WHEN dormant = 1 THEN wake_at ELSE COALESCE(not_before, start_time) END)"
            " FROM executions WHERE task_queue = %s AND status = 1 AND owner IS NULL"
            " AND ((dormant = 0 AND (not_before IS NULL OR not_before <= %s))"
            " OR (dormant = 1 AND wake_at <= %s))",
            (task_queue, now, now),
        )
    elif task_type == ACTIVITY:
        got = tx.one(
            "SELECT count(*), min(available_at) FROM activity_tasks WHERE task_queue = %s"
            " AND state = 'scheduled' AND available_at <= %s AND paused = 0",
            (task_queue, now),
        )
    elif task_type == NEXUS:
        got = tx.one(
            "SELECT count(*), min(available_at) FROM nexus_tasks WHERE task_queue = %s"
            " AND state = 'scheduled' AND available_at <= %s",
            (task_queue, now),
        )
    else:
        return Backlog(0, None)
    count, oldest = got or (0, None)
    return Backlog(int(count or 0), None if oldest is None else float(oldest))


def pollers(tx: Tx, task_queue: str, task_type: int, wall_now: float) -> list[Poller]:
    """Who polled ``task_queue`` for ``task_type`` within `POLLER_TTL`, most recent first."""
    if task_type not in KINDS:
        return []
    bit, since = 1 << (task_type - 1), wall_now - POLLER_TTL
    rows = tx.all(
        "SELECT identity, worker_id, heartbeat_at, build_id FROM workers WHERE task_queue = %s"
        " AND (task_types & %s) <> 0 AND heartbeat_at >= %s"
        " UNION ALL SELECT identity, worker_id, last_access, build_id FROM pollers WHERE task_queue = %s"
        " AND (task_types & %s) <> 0 AND last_access >= %s",
        (task_queue, bit, since, task_queue, bit, since),
    )
    latest: dict[str, Poller] = {}
    for identity, worker_id, seen, build_id in rows:
        who = str(identity or worker_id)  # a row written before identities were kept: its id
        if who not in latest or float(seen) > latest[who].last_access:
            latest[who] = Poller(who, float(seen), str(build_id or ""))
    return sorted(latest.values(), key=lambda p: (-p.last_access, p.identity))


def depart(
    tx: Tx, worker_id: str, wall_now: float, *, reaped: bool = False, beat_before: float | None = None
) -> bool:
    """Delete ``worker_id``'s liveness row (only if its last beat is older than ``beat_before``,
    when given) and keep it listed as a poller until `POLLER_TTL` after its last access: now if
    it left, its last beat if it was ``reaped``. True if a row was deleted.
    """
    stale = "" if beat_before is None else " AND heartbeat_at < %s"
    got = tx.one(
        f"DELETE FROM workers WHERE worker_id = %s{stale}"
        " RETURNING task_queue, identity, task_types, build_id, heartbeat_at",
        (worker_id,) if beat_before is None else (worker_id, beat_before),
    )
    if got is None:
        return False
    task_queue, identity, types, build_id, beat = got
    seen = float(beat) if reaped else wall_now
    tx.execute("DELETE FROM pollers WHERE last_access < %s", (wall_now - POLLER_TTL,))
    if types and seen >= wall_now - POLLER_TTL:
        tx.execute(
            "INSERT INTO pollers (worker_id, task_queue, identity, task_types, build_id, last_access)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (worker_id) DO UPDATE SET"
            " last_access = EXCLUDED.last_access",
            (worker_id, task_queue, identity, types, build_id, seen),
        )
    return True
