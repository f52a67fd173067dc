"""DBOS's management verbs, carried out on Temporal runs.

A DBOS tool (``dbos workflow cancel|resume|fork``, `DBOSClient`, Conductor) changes a run's DBOS
row; a trigger wakes the workers of its task queue (`setup`), and one of them acts in one
transaction:
- CANCELLED: the run is terminated, with a reason naming DBOS. (A DBOS cancel gives the
  workflow no chance to clean up, which is Temporal's terminate, not its cancel request.)
- ENQUEUED while a worker owns the run (a resume of a PENDING run): the run is released, so a
  live worker of its task queue claims it now and replays it; the old owner, if it still runs,
  is fenced by the new claim. A resume of a dormant run (ENQUEUED, no owner) makes it
  claimable now: a live worker claims it and replays it.
- a new row ``forked_from`` a run: the run is reset (`fork`).
- a deleted row: the run is deleted as DeleteWorkflowExecution does (terminated first if
  running, then removed with everything stored for it).
Each worker also looks once when it starts, for commands given while none was running.
"""

from __future__ import annotations

import logging

from dbosify._dbos import records
from dbosify._engine import delete
from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._store import Tx
from dbosify._store import dbos_ids as ids
from dbosify._store import dbos_setup as setup
from dbosify._store.dbos_inbound_triggers import ALIAS_VERSION, queue_name
from dbosify._worker import dbos_fork as fork

logger = logging.getLogger("dbosify")

CANCEL_REASON = "cancelled through DBOS (workflow cancel)"


def _join(tx: Tx) -> tuple[str, tuple[str, ...]]:
    """`executions e` joined to its DBOS row `w` (`ids.quote` in SQL), and its parameters."""
    ws = records.table(tx, "workflow_status")
    return (
        f"executions e JOIN {ws} w ON w.workflow_uuid = %s"
        " || replace(replace(e.workflow_id, %s, %s), %s, %s) || '/' || e.run_id",
        (f"{ids.quote(tx.namespace)}/", "%", "%25", "/", "%2F"),
    )


def apply(tx: Tx, task_queue: str, identity: str) -> int:
    """Carry out the DBOS commands given to runs of ``task_queue``; returns how many."""
    if not records.enabled(tx):
        return 0
    join, params = _join(tx)
    rows = tx.all(
        f"SELECT e.run_id, w.status FROM {join}"
        " WHERE e.task_queue = %s AND e.status = 1"
        " AND (w.status = 'CANCELLED' OR (w.status = 'ENQUEUED' AND (e.owner IS NOT NULL"
        "      OR (e.dormant = 1 AND w.recovery_attempts = 0))))",
        (*params, task_queue),
    )
    done = 0
    for run_id, status in rows:
        run = h.get_run(tx, run_id, lock=True)
        if run is None or not run.running:
            continue
        if status == "CANCELLED":
            logger.info("dbosify: run %s was cancelled through DBOS; terminating it", run_id)
            _runs.terminate(tx, run, CANCEL_REASON, identity)
        else:
            _resume(tx, run)
        done += 1
    return done + _aliases(tx, task_queue, identity) + _forks(tx, task_queue, identity) + _deletes(tx, identity)


def _aliases(tx: Tx, task_queue: str, identity: str) -> int:
    """A cancel or resume given to the row of the DBOS enqueue that started a workflow (its DBOS
    ID is the workflow ID): carried out on the workflow's running run, as on the run's own row.
    A resumed request's row goes back to PENDING, to be closed with the workflow's outcome."""
    ws = records.table(tx, "workflow_status")
    # A cancel not yet carried out has no executor ID (`records._close_alias` marks the row when
    # its workflow closes, however it closes).
    rows = tx.all(
        f"SELECT w.workflow_uuid, w.status, e.run_id FROM {ws} w"
        " JOIN executions e ON e.workflow_id = w.workflow_uuid AND e.status = 1"
        " WHERE w.queue_name = %s AND w.application_version = %s"
        " AND (w.status = 'ENQUEUED' OR (w.status = 'CANCELLED' AND w.executor_id IS NULL))",
        (queue_name(tx.namespace, task_queue), ALIAS_VERSION),
    )
    for alias, status, run_id in rows:
        run = h.get_run(tx, run_id, lock=True)
        if run is None or not run.running:
            continue
        if status == "CANCELLED":
            logger.info("dbosify: workflow %s was cancelled through DBOS; terminating run %s", alias, run_id)
            _runs.terminate(tx, run, CANCEL_REASON, identity)  # its close marks the row done
            continue
        # Once: another worker of the queue may be looking at the same resume.
        if tx.one(
            f"UPDATE {ws} SET status = 'PENDING', updated_at = %s WHERE workflow_uuid = %s"
            " AND status = 'ENQUEUED' RETURNING workflow_uuid",
            (records._ms(), alias),
        ) is None:
            continue
        _resume(tx, run)
    return len(rows)


def _resume(tx: Tx, run: h.Run) -> None:
    """A DBOS resume of a running run (read locked): a run a worker holds is handed to a live
    worker of its task queue (its old driver, if any, finds itself fenced); a dormant one is
    made claimable now."""
    if run.owner is not None:
        logger.info("dbosify: run %s was resumed through DBOS; handing it to a live worker", run.run_id)
        tx.execute("UPDATE executions SET owner = NULL WHERE run_id = %s", (run.run_id,))
        tx.notify(f"run:{run.run_id}")
    else:
        logger.info("dbosify: dormant run %s was resumed through DBOS; waking it", run.run_id)
        tx.execute("UPDATE executions SET dormant = 0 WHERE run_id = %s", (run.run_id,))
    tx.notify(f"wf:{run.task_queue}")


def _forks(tx: Tx, task_queue: str, identity: str) -> int:
    ws = records.table(tx, "workflow_status")
    prefix = f"{ids.quote(tx.namespace)}/"
    rows = tx.all(
        f"SELECT f.workflow_uuid, f.forked_from FROM {ws} f WHERE f.application_name = %s"
        " AND f.status = 'ENQUEUED' AND substr(f.forked_from, 1, %s) = %s AND f.queue_name = %s",
        (records.APP, len(prefix), prefix, queue_name(tx.namespace, task_queue)),
    )
    for fork_uuid, source in rows:
        fork.carry_out(tx, str(fork_uuid), str(source), identity)
    return len(rows)


def _deletes(tx: Tx, identity: str) -> int:
    """DBOS deletes of this namespace's runs (whatever their task queue: any worker may)."""
    deletes = records.table(tx, setup.DELETES)
    prefix = f"{ids.quote(tx.namespace)}/"
    rows = tx.all(
        f"SELECT workflow_uuid FROM {deletes} WHERE substr(workflow_uuid, 1, %s) = %s",
        (len(prefix), prefix),
    )
    for (uuid,) in rows:
        parts = ids.split(str(uuid))
        run = h.get_run(tx, parts[2], lock=True) if parts is not None else None
        if run is not None and parts is not None and run.workflow_id == parts[1]:
            logger.info("dbosify: run %s was deleted through DBOS; deleting it", run.run_id)
            delete.delete_run(tx, run.workflow_id, run.run_id, identity)
        tx.execute(f"DELETE FROM {deletes} WHERE workflow_uuid = %s", (uuid,))
    return len(rows)
