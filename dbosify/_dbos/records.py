"""Each run's DBOS workflow record, written in the same transaction as the run's own rows.

A run is a DBOS workflow whose ID is ``<namespace>/<workflow id>/<run id>`` (each part quoted,
see `ids`), whose name is the
workflow type and whose queue is ``<namespace>/<task queue>``, each part quoted as in the ID
(`inbound_triggers.queue_name`, the form DBOS's enqueue of a start takes too). Its `workflow_status` row is written where the
run changes: ENQUEUED at start (through DBOS's documented SQL function on Postgres), PENDING
with the worker as executor at each claim, ENQUEUED again when a dead worker's runs are released,
and SUCCESS / ERROR / CANCELLED with the output or error at close. Being in the transaction
that changes the run, the two statuses cannot disagree once it has committed, and it costs no
commit of its own.

Rows carry application name and version ``dbosify``: DBOS runtimes never claim, recover or run
them (their function is not theirs), while DBOS's tools list, inspect, cancel and resume them.

Writing DBOS's tables directly (everything but the start on Postgres) relies on their layout in
the supported dbos range (pyproject.toml); this module is the only place that does.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Protocol

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import workflow_pb2 as wfenums

from dbosify._store import Tx
from dbosify._store import dbos_ids as ids
from dbosify._store.dbos_inbound_triggers import ALIAS_DONE, ALIAS_VERSION, queue_name


class RunIds(Protocol):
    """The ids of a run (a row of the executions table, `dbosify._engine.history.Run`)."""

    @property
    def workflow_id(self) -> str: ...

    @property
    def run_id(self) -> str: ...


APP = "dbosify"  # the application name and version of every run's DBOS row

# Temporal close status -> DBOS status.
DBOS_STATUS: dict[int, str] = {
    wfenums.WORKFLOW_EXECUTION_STATUS_COMPLETED: "SUCCESS",
    wfenums.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW: "SUCCESS",
    wfenums.WORKFLOW_EXECUTION_STATUS_FAILED: "ERROR",
    wfenums.WORKFLOW_EXECUTION_STATUS_TIMED_OUT: "ERROR",
    wfenums.WORKFLOW_EXECUTION_STATUS_TERMINATED: "CANCELLED",
    wfenums.WORKFLOW_EXECUTION_STATUS_CANCELED: "CANCELLED",
}


workflow_uuid = ids.workflow_uuid  # the DBOS workflow ID of a run (docs/COMPATIBILITY.md)


def enabled(tx: Tx) -> bool:
    return tx.store.dbos_on(tx.namespace)


def table(tx: Tx, name: str) -> str:
    """A DBOS table as this transaction names it (schema-qualified on Postgres)."""
    schema = tx.store.dbos_schema_of(tx.namespace)
    return f'"{schema}".{name}' if schema else name


def _ms(t: float | None = None) -> int:
    return int((time.time() if t is None else t) * 1000)


def payload_json(p: common.Payload) -> Any:
    """A payload as JSON, readable in DBOS's tools: its value when it is JSON, else its bytes."""
    encoding = p.metadata.get("encoding", b"").decode(errors="replace")
    if encoding == "json/plain":
        try:
            return json.loads(p.data)
        except ValueError:
            pass
    if encoding == "binary/null":
        return None
    return {"encoding": encoding, "data_base64": base64.b64encode(p.data).decode()}


def on_start(
    tx: Tx, workflow_id: str, run_id: str, workflow_type: str, task_queue: str,
    inputs: common.Payloads, parent: tuple[str, str, str] | None,
) -> None:
    """The run was created: its DBOS row, ENQUEUED on its task queue."""
    if not enabled(tx):
        return
    uuid = workflow_uuid(tx.namespace, workflow_id, run_id)
    queue = queue_name(tx.namespace, task_queue)
    args = [payload_json(p) for p in inputs.payloads]
    named = {"namespace": tx.namespace, "workflow_id": workflow_id, "run_id": run_id}
    if tx.store.is_sqlite:
        now = _ms()
        tx.execute(
            f"INSERT INTO {table(tx, 'workflow_status')} (workflow_uuid, status, name, queue_name,"
            " created_at, updated_at, application_version, application_name, recovery_attempts,"
            " priority, serialization) VALUES (%s, 'ENQUEUED', %s, %s, %s, %s, %s, %s, 0, 0,"
            " 'portable_json') ON CONFLICT (workflow_uuid) DO NOTHING",
            (uuid, workflow_type, queue, now, now, APP, APP),
        )
        tx.execute(
            f"INSERT INTO {table(tx, 'workflow_input')} (workflow_uuid, inputs, retention_timestamp)"
            " VALUES (%s, %s, %s) ON CONFLICT (workflow_uuid) DO NOTHING",
            (uuid, json.dumps({"positionalArgs": args, "namedArgs": named}), now),
        )
    else:
        # DBOS's documented SQL interface for writing a workflow that runs elsewhere.
        tx.execute(
            f'SELECT "{tx.store.dbos_schema_of(tx.namespace)}".enqueue_workflow(workflow_name => %s,'
            " queue_name => %s, positional_args => %s::json[], named_args => %s::json,"
            " workflow_id => %s, app_version => %s, application_name => %s)",
            (workflow_type, queue, [json.dumps(a) for a in args], json.dumps(named), uuid,
             APP, APP),
        )
    if parent is not None:  # DBOS's cancel of a parent reaches its children too
        tx.execute(
            f"UPDATE {table(tx, 'workflow_status')} SET parent_workflow_id = %s"
            " WHERE workflow_uuid = %s",
            (workflow_uuid(*parent), uuid),
        )


def _in(n: int) -> str:
    return "(" + ", ".join(["%s"] * n) + ")"


def on_claim(tx: Tx, runs: list[tuple[str, str]], executor: str) -> None:
    """Runs ``(workflow id, run id)`` were claimed: PENDING, executed by ``executor``."""
    if not runs or not enabled(tx):
        return
    now = _ms()
    uuids = [workflow_uuid(tx.namespace, w, r) for w, r in runs]
    tx.execute(
        f"UPDATE {table(tx, 'workflow_status')} SET status = 'PENDING', executor_id = %s,"
        " started_at_epoch_ms = %s, updated_at = %s,"
        " recovery_attempts = COALESCE(recovery_attempts, 0) + 1"
        f" WHERE workflow_uuid IN {_in(len(uuids))} AND status IN ('ENQUEUED', 'PENDING')",
        (executor, now, now, *uuids),
    )


def on_release(tx: Tx, runs: list[tuple[str, str]]) -> None:
    """Runs were handed back (their worker died or shut down): ENQUEUED for the next claim."""
    if not runs or not enabled(tx):
        return
    uuids = [workflow_uuid(tx.namespace, w, r) for w, r in runs]
    tx.execute(
        f"UPDATE {table(tx, 'workflow_status')} SET status = 'ENQUEUED', executor_id = NULL,"
        f" updated_at = %s WHERE workflow_uuid IN {_in(len(uuids))} AND status = 'PENDING'",
        (_ms(), *uuids),
    )


def close_row(tx: Tx, uuid: str, status: str, output: str | None, error: str | None) -> int:
    """Close one DBOS workflow row: its status (``SUCCESS``, ``ERROR``, ...) and its output or
    error (serialized as DBOS reads them). The queue name is kept, as DBOS does. Returns the
    time written (ms)."""
    now = _ms()
    tx.execute(
        f"UPDATE {table(tx, 'workflow_status')} SET status = %s, completed_at = %s, updated_at = %s,"
        " owner_xid = NULL WHERE workflow_uuid = %s",
        (status, now, now, uuid),
    )
    tx.execute(
        f"INSERT INTO {table(tx, 'workflow_output')} (workflow_uuid, output, error, retention_timestamp)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (workflow_uuid) DO UPDATE SET output = EXCLUDED.output,"
        " error = EXCLUDED.error",
        (uuid, output, error, now),
    )
    return now


def on_close(tx: Tx, run: RunIds, status: int, attrs: Message) -> None:
    """The run closed: its DBOS status, and its output or error. Ours is the truth: a DBOS
    status set meanwhile (a cancel racing a completion) is overwritten, so the two agree."""
    if not enabled(tx):
        return
    uuid = workflow_uuid(tx.namespace, run.workflow_id, run.run_id)
    output, error = _outcome(tx, run, status, attrs)
    now = close_row(tx, uuid, DBOS_STATUS[status], output, error)
    if status != wfenums.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:  # a chain's last run closes its DBOS enqueue's row
        _close_alias(tx, run.workflow_id, DBOS_STATUS[status], output, error, now)


def _close_alias(
    tx: Tx, alias: str, status: str, output: str | None, error: str | None, now: int
) -> None:
    """The row of a DBOS enqueue that started the workflow ``alias`` (its DBOS ID is the
    workflow ID, `inbound`), if any: closed with the run's outcome, so DBOS's handle of the
    enqueue (``get_result()``) returns the workflow's result."""
    ws = table(tx, "workflow_status")
    pending = (
        f"SELECT 1 FROM {ws} WHERE workflow_uuid = %s AND application_version = %s"
        " AND status = 'PENDING'"
    )
    tx.execute(
        f"INSERT INTO {table(tx, 'workflow_output')} (workflow_uuid, output, error,"
        f" retention_timestamp) SELECT %s, %s, %s, %s WHERE EXISTS ({pending})"
        " ON CONFLICT (workflow_uuid) DO UPDATE SET output = EXCLUDED.output, error = EXCLUDED.error",
        (alias, output, error, now, alias, ALIAS_VERSION),
    )
    # Closed with the outcome if PENDING; a DBOS cancel given to it (CANCELLED) is marked done
    # (`ALIAS_DONE`), so it never reaches a later run of the same workflow ID.
    tx.execute(
        f"UPDATE {ws} SET status = CASE WHEN status = 'PENDING' THEN %s ELSE status END,"
        " completed_at = CASE WHEN status = 'PENDING' THEN %s ELSE completed_at END,"
        " updated_at = %s, serialization = CASE WHEN status = 'PENDING' THEN 'portable_json'"
        " ELSE serialization END, executor_id = %s"
        " WHERE workflow_uuid = %s AND application_version = %s"
        " AND (status = 'PENDING' OR (status = 'CANCELLED' AND executor_id IS NULL))",
        (status, now, now, ALIAS_DONE, alias, ALIAS_VERSION),
    )


def on_delete(tx: Tx, run: RunIds) -> None:
    """The run was deleted (DeleteWorkflowExecution): its DBOS workflow goes too."""
    if not enabled(tx):
        return
    uuid = workflow_uuid(tx.namespace, run.workflow_id, run.run_id)
    for name in ("workflow_output", "workflow_input", "workflow_status"):
        tx.execute(f"DELETE FROM {table(tx, name)} WHERE workflow_uuid = %s", (uuid,))


def _outcome(tx: Tx, run: RunIds, status: int, attrs: Any) -> tuple[str | None, str | None]:
    """(output, error) in DBOS's portable JSON."""
    if status == wfenums.WORKFLOW_EXECUTION_STATUS_COMPLETED:
        payloads = list(attrs.result.payloads)
        return json.dumps(payload_json(payloads[0]) if payloads else None), None
    if status == wfenums.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
        # The next run, by its DBOS ID (docs/COMPATIBILITY.md).
        return json.dumps({"continued_as_new": workflow_uuid(
            tx.namespace, run.workflow_id, attrs.new_execution_run_id)}), None
    if status == wfenums.WORKFLOW_EXECUTION_STATUS_FAILED:
        f = attrs.failure
        name = f.application_failure_info.type if f.HasField("application_failure_info") else ""
        return None, json.dumps({"name": name or "WorkflowFailure", "message": f.message})
    if status == wfenums.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
        return None, json.dumps({"name": "TimeoutError", "message": "workflow timed out"})
    if status == wfenums.WORKFLOW_EXECUTION_STATUS_TERMINATED:
        return None, json.dumps({"name": "Terminated", "message": attrs.reason or "terminated"})
    return None, json.dumps({"name": "Cancelled", "message": "workflow cancelled"})
