"""The liveness rows a claim checks: the engine's side of `dbosify._worker.liveness`.

Each worker keeps a row in its namespace's ``workers`` table, beaten by `_worker.liveness`; a
reaper deletes the rows of dead workers and hands their work back. A claim (of a workflow task or
an activity attempt) checks its own worker's row in the claim's transaction with `owns_row`, and
`RETRY_SET` is how an attempt handed back is rescheduled.
"""

from __future__ import annotations

from dbosify._store import Tx

# An attempt handed back to the queue (its worker died or lost its claim) is followed by the next
# attempt; a reset asked of the attempt while it ran applies to that one instead.
RETRY_SET = (
    "state = 'scheduled', owner = NULL, fair_pass = NULL,"
    " attempt = CASE WHEN attempts_reset = 1 THEN 2 ELSE attempt + 1 END,"
    " details = CASE WHEN reset_heartbeats = 1 THEN NULL ELSE details END,"
    " reset_requested = 0, reset_heartbeats = 0, attempts_reset = 0"
)


def owns_row(tx: Tx, worker_id: str) -> bool:
    """Whether ``worker_id``'s liveness row exists, locked against a reaper until commit.

    A claim checks it in its own transaction: a worker presumed dead (and reaped) a moment ago
    must not claim work that no reaper would ever release. FOR KEY SHARE blocks the reaper's
    DELETE of the row but not the beat's UPDATE of its time.
    """
    lock = "" if tx.store.is_sqlite else " FOR KEY SHARE"
    return tx.one(f"SELECT 1 FROM workers WHERE worker_id = %s{lock}", (worker_id,)) is not None
