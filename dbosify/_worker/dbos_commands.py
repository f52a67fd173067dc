"""DBOS's management verbs, carried out on Temporal runs.

A DBOS tool (``dbos workflow cancel|resume``, `DBOSClient`, Conductor) changes a run's DBOS row;
a trigger wakes the workers of its task queue (`setup`), and one of them acts in one transaction:
- CANCELLED: the run is terminated, with a reason naming DBOS. (A DBOS cancel gives the
  workflow no chance to clean up, which is Temporal's terminate, not its cancel request.)
- ENQUEUED while a worker owns the run (a resume of a PENDING run): the run is released, so a
  live worker of its task queue claims it now and replays it; the old owner, if it still runs,
  is fenced by the new claim.
Each worker also looks once when it starts, for commands given while none was running.
"""

from __future__ import annotations

import logging

from dbosify._dbos import records
from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._store import Tx
from dbosify._store import dbos_ids as ids

logger = logging.getLogger("dbosify")

CANCEL_REASON = "cancelled through DBOS (workflow cancel)"


def apply(tx: Tx, task_queue: str, identity: str) -> int:
    """Carry out the DBOS commands given to runs of ``task_queue``; returns how many."""
    if not records.enabled(tx):
        return 0
    ws = records.table(tx, "workflow_status")
    rows = tx.all(
        f"SELECT e.run_id, w.status FROM executions e JOIN {ws} w"
        " ON w.workflow_uuid = %s || replace(replace(e.workflow_id, %s, %s), %s, %s) || '/' || e.run_id"
        " WHERE e.task_queue = %s AND e.status = 1"
        " AND (w.status = 'CANCELLED' OR (w.status = 'ENQUEUED' AND e.owner IS NOT NULL))",
        (f"{ids.quote(tx.namespace)}/", "%", "%25", "/", "%2F", task_queue),  # `ids.quote` in SQL
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
            logger.info("dbosify: run %s was resumed through DBOS; handing it to a live worker", run_id)
            tx.execute("UPDATE executions SET owner = NULL WHERE run_id = %s", (run_id,))
            tx.notify(f"wf:{task_queue}")
            tx.notify(f"run:{run_id}")  # its old driver, if any, finds itself fenced
        done += 1
    return done
