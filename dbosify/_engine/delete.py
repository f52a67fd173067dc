"""Deleting a run: the run and everything stored for it, gone in one transaction (the RPC,
`dbosify._server.delete`, and DBOS's delete, `dbosify._worker.dbos_commands`, share `delete_run`).

As on Temporal, a running run is terminated first (its close event, its parent's child
result, its waiters woken), then its rows are removed: the run, its history, its activity
attempts, updates, queries, search attributes, and its DBOS workflow row. Temporal deletes
asynchronously; here the run is gone when the call returns.
"""

from __future__ import annotations

from dbosify._dbos import records
from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._engine.errors import ServiceError
from dbosify._store import Tx

# Every per-run table of a namespace, children before the run itself.
_RUN_TABLES = ("search_attributes", "queries", "updates", "activity_tasks", "history", "executions")


def delete_run(tx: Tx, workflow_id: str, run_id: str | None, identity: str) -> None:
    run = h.find_run(tx, workflow_id, run_id, lock=True)
    if run is None:
        if run_id:  # the service's not-found messages
            raise ServiceError.not_found(
                f"workflow execution not found for workflow ID {workflow_id!r} and run ID {run_id!r}"
            )
        raise ServiceError.not_found(f"workflow not found for ID: {workflow_id}")
    if run.running:
        _runs.terminate(tx, run, "Delete workflow execution", identity)
    for table in _RUN_TABLES:
        tx.execute(f"DELETE FROM {table} WHERE run_id = %s", (run.run_id,))
    records.on_delete(tx, run)
    tx.notify(f"hist:{run.run_id}")
