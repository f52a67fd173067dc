"""A task queue's activity rate: the Worker option ``max_task_queue_activities_per_second``.

On Temporal the matching service dispatches a task queue's activity tasks at most at the rate
its pollers ask for, whichever worker polls; with different values, the last poller's wins.
Here the rate is a token bucket row of ``task_queue_rates``, taken in the activity claim's own
transaction, so it holds across every worker and process of the queue: a claim by a worker
given the option sets the rate (``set_by``), and every claim on the queue honours it while that
worker is alive. With no token left, the claim takes nothing and answers when the next token
comes, and the claimer sleeps until exactly then.
"""

from __future__ import annotations

from typing import Any

from dbosify._store import Tx

# Columns a claim reads with its candidate task (no extra round trip on a queue with no rate):
# the queue's rate, who set it, and whether that worker is alive.
PEEK = (
    "(SELECT r.rate FROM task_queue_rates r WHERE r.task_queue = activity_tasks.task_queue),"
    " (SELECT r.set_by FROM task_queue_rates r WHERE r.task_queue = activity_tasks.task_queue),"
    " (SELECT 1 FROM task_queue_rates r JOIN workers w ON w.worker_id = r.set_by"
    " WHERE r.task_queue = activity_tasks.task_queue)"
)


def burst(rate: float) -> float:
    """Tokens a bucket holds at most: a second's worth (at least one), so that workers slowed
    for a moment catch up, and the rate holds on average over any few seconds. A bucket starts
    with one token, not full."""
    return max(1.0, rate)


def take(tx: Tx, task_queue: str, owner: str, rate: float | None, peek: Any, now: float) -> float | None:
    """Take a token for one activity start on ``task_queue``; None if taken (or no rate applies),
    else when the next token comes. ``rate``: the claimer's own option, ``peek``: `PEEK`'s values.
    """
    current, set_by, alive = peek
    if rate is not None and rate > 0:
        if current is None or float(current) != rate or (set_by != owner and not alive):
            tx.execute(
                "INSERT INTO task_queue_rates (task_queue, rate, set_by, tokens, updated_at)"
                " VALUES (%s, %s, %s, 1.0, %s) ON CONFLICT (task_queue)"
                " DO UPDATE SET rate = excluded.rate, set_by = excluded.set_by",
                (task_queue, rate, owner, now),
            )
        effective = rate
    elif current is not None and alive:
        effective = float(current)
    else:
        return None
    lock = "" if tx.store.is_sqlite else " FOR UPDATE"
    row = tx.one(f"SELECT tokens, updated_at FROM task_queue_rates WHERE task_queue = %s{lock}", (task_queue,))
    # Read the clock once the row is ours: another claim may have taken a token meanwhile, and
    # the bucket's time never goes back (each process reads its own clock).
    now = max(tx.store.clock.now(), float(row[1]))
    tokens = min(burst(effective), float(row[0]) + (now - float(row[1])) * effective)
    if tokens >= 1.0:
        tokens -= 1.0
        wait = None
    else:
        wait = now + (1.0 - tokens) / effective
    tx.execute(
        "UPDATE task_queue_rates SET tokens = %s, updated_at = %s WHERE task_queue = %s",
        (tokens, now, task_queue),
    )
    return wait
