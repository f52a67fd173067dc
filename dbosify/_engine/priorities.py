"""Task queue priority and fairness: Temporal's ``Priority`` as the claims order work by.

A workflow or activity carries ``priority_key`` (1 first; unset means the middle of 5 levels,
3), ``fairness_key`` and ``fairness_weight``. As on Temporal, an unset field (0, or an empty
key) inherits from the workflow that scheduled the activity or started the child, field by
field; a child's started event carries the merged priority, an activity's scheduled event its
own. Keys above 5 are dispatched as 5; weights are clamped to [0.001, 1000], 1.0 by default.

Dispatch: activity tasks and workflow tasks are claimed by priority key, then (activity tasks)
by pass, the virtual time at which their fairness key is served: each key's tasks are spaced
by 1/weight, so that within one priority key, keys are served in proportion to their weights
(stride scheduling), and a key that shows up starts at the head of the queue, not behind the
backlog of the others. A task gets its pass when it is first ready, in the claim that sees it
(`assign_passes`), so a claim stays one index lookup however long the backlog.
"""

from __future__ import annotations

import math
from typing import Any

from temporalio.api.common.v1 import message_pb2 as common

from dbosify._engine.errors import ServiceError
from dbosify._store import Tx

LEVELS = 5  # Temporal's default number of priority levels (matching.priorityLevels)
DEFAULT_KEY = (1 + LEVELS) // 2  # an unset key: the middle, 3
MIN_WEIGHT, MAX_WEIGHT = 0.001, 1000.0
FAIRNESS_KEY_MAX = 64  # bytes
PASS_BATCH = 500  # ready tasks given a pass per claim (the rest in the next ones)


def problem(p: common.Priority | None) -> str | None:
    """What Temporal refuses in a Priority (``INVALID_ARGUMENT`` with these texts), if anything."""
    if p is None:
        return None
    if p.priority_key < 0:
        return "priority key can't be negative"
    if len(p.fairness_key.encode("utf-8", "surrogatepass")) > FAIRNESS_KEY_MAX:
        return "fairness key length exceeds limit"
    if "\x00" in p.fairness_key:  # Temporal takes it; no store can hold it
        return "fairness key contains a NUL character, which cannot be stored"
    if p.fairness_weight < 0 or not math.isfinite(p.fairness_weight):
        return "must be greater than zero"
    return None


def check(p: common.Priority | None) -> None:
    """Raise Temporal's ``INVALID_ARGUMENT`` for a Priority it refuses."""
    msg = problem(p)
    if msg is not None:
        raise ServiceError.invalid(msg)


def merge(base: common.Priority | None, own: common.Priority | None) -> common.Priority:
    """``own``'s fields, each unset one taken from ``base`` (the scheduling workflow's)."""
    out = common.Priority()
    for p in (base, own):
        if p is None:
            continue
        if p.priority_key:
            out.priority_key = p.priority_key
        if p.fairness_key:
            out.fairness_key = p.fairness_key
        if p.fairness_weight:
            out.fairness_weight = p.fairness_weight
    return out


def dispatch_key(p: common.Priority | None) -> int:
    """The priority key a task is dispatched by: 1..LEVELS, DEFAULT_KEY when unset."""
    key = p.priority_key if p is not None else 0
    return DEFAULT_KEY if key <= 0 else min(key, LEVELS)


def weight(p: common.Priority | None) -> float:
    w = p.fairness_weight if p is not None else 0.0
    return 1.0 if w <= 0 else min(max(float(w), MIN_WEIGHT), MAX_WEIGHT)


def effective(p: common.Priority | None) -> tuple[int, str, float]:
    """(priority key, fairness key, weight) as dispatch uses them."""
    return dispatch_key(p), (p.fairness_key if p is not None else ""), weight(p)


def of(run: Any) -> common.Priority:
    """A loaded run's (`history.Run`) priority: what its activities and children inherit."""
    return from_row((run.priority_key, run.fairness_key, run.fairness_weight))


def of_run(tx: Tx, run_id: str) -> common.Priority:
    """A run's priority (merged with its parent's at start): what its activities inherit."""
    row = tx.one(
        "SELECT priority_key, fairness_key, fairness_weight FROM executions WHERE run_id = %s", (run_id,)
    )
    return from_row(row)


def from_row(row: Any) -> common.Priority:
    p = common.Priority()
    if row is not None:
        p.priority_key, p.fairness_key, p.fairness_weight = int(row[0] or 0), str(row[1] or ""), float(row[2] or 0)
    return p


def assign_passes(tx: Tx, task_queue: str, now: float) -> None:
    """Give the activity tasks of ``task_queue`` that became ready since the last claim their
    pass: after the last pass of their fairness key still queued (or, for a key with nothing
    queued, after the head of their priority key's queue), spaced by 1/weight, oldest first.

    On Postgres one statement, whose rows are locked with SKIP LOCKED, so concurrent claims
    give passes to different tasks instead of waiting; its subqueries read the passes as they
    were before it. On SQLite (one writer at a time) a read, then the writes.
    """
    passes = (
        "SELECT d.run_id, d.seq, COALESCE("
        "(SELECT max(k.fair_pass) FROM activity_tasks k WHERE k.task_queue = %s"
        " AND k.task_priority = d.task_priority AND k.fairness_key = d.fairness_key"
        " AND k.state = 'scheduled' AND k.fair_pass IS NOT NULL),"
        " (SELECT min(b.fair_pass) FROM activity_tasks b WHERE b.task_queue = %s"
        " AND b.task_priority = d.task_priority"
        " AND b.state = 'scheduled' AND b.paused = 0 AND b.fair_pass IS NOT NULL), 0)"
        " + SUM(1.0 / d.fairness_weight) OVER (PARTITION BY d.task_priority, d.fairness_key"
        " ORDER BY d.available_at, d.run_id, d.seq ROWS UNBOUNDED PRECEDING) AS pass"
        " FROM ({due}) d"
    )
    # The ready tasks without a pass, oldest first within each priority key (one index range
    # each): a backlog of one key never keeps a higher key's new tasks from their pass.
    band = (
        "SELECT * FROM (SELECT run_id, seq, task_priority, fairness_key, fairness_weight, available_at"
        " FROM activity_tasks WHERE task_queue = %s AND task_priority = {key} AND state = 'scheduled'"
        " AND fair_pass IS NULL AND available_at <= %s ORDER BY available_at LIMIT {batch}{lock}) p{key}"
    )
    due = " UNION ALL ".join(band.replace("{key}", str(key)) for key in range(1, LEVELS + 1))
    passes = passes.replace("{due}", due)
    params = (task_queue, task_queue, *[task_queue, now] * LEVELS)
    if not tx.store.is_sqlite:
        tx.execute(
            "UPDATE activity_tasks t SET fair_pass = v.pass FROM ("
            + passes.format(batch=PASS_BATCH, lock=" FOR UPDATE SKIP LOCKED")
            + ") v WHERE t.run_id = v.run_id AND t.seq = v.seq",
            params,
        )
        return
    rows = tx.all(passes.format(batch=PASS_BATCH, lock=""), params)
    if rows:
        tx.executemany(
            "UPDATE activity_tasks SET fair_pass = %s WHERE run_id = %s AND seq = %s",
            [(float(p), r, s) for r, s, p in rows],
        )
