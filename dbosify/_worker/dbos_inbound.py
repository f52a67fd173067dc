"""Messages and starts from DBOS, and from SQL: DBOS's ``send`` signals a run, its ``enqueue``
starts one.

- `DBOSClient.send(<run's DBOS ID>, message, topic)` and DBOS's SQL function
  ``dbos.send_message(...)`` insert a `notifications` row. A trigger checks it at once (the run
  must be running: Temporal refuses a signal to a closed run; the topic, the signal's name, must
  be given) and wakes the run's task queue (key ``dbos-in:<task queue>``: Postgres NOTIFY, SQLite
  `notices`). A worker of that queue then, in one transaction, appends the signal named
  ``topic`` whose one argument is the message (DBOS's serialization read, then temporalio's
  default converter) and deletes the row: it is delivered once.
- `DBOSClient.enqueue(...)` and ``dbos.enqueue_workflow(...)`` with a queue name of the form
  `queue_name` (``<namespace>/<task queue>``, each part quoted as in DBOS IDs) and a workflow
  name that is a Temporal workflow type insert a `workflow_status` row. A trigger makes it ours
  (application name ``dbosify``, version `START_VERSION`: DBOS's queue runners take only rows of
  their own application version, so no DBOS application, even one declaring a queue of that name,
  takes it), refuses a workflow ID that has a running run (Temporal's default ID policies), and
  wakes the task queue. A worker of that queue then starts the run, whose workflow ID is the DBOS
  workflow ID, in one transaction that also writes the run's own DBOS row
  (``<namespace>/<workflow id>/<run id>``). The request's row stays, PENDING (application version
  `records.ALIAS_VERSION`), and is closed with the workflow's status and result when its last run
  closes (a continued-as-new chain's last), so DBOS's handle of the enqueue returns the result.

Both take effect in the caller's transaction: an application can signal or start a workflow in
the same transaction as its own business write.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
from typing import Any

from dbosify._dbos import records
from dbosify._engine import history as h
from dbosify._engine import runs as _runs
from dbosify._store import Tx
from dbosify._store import dbos_ids as ids
from dbosify._store.dbos_inbound_triggers import (
    ALIAS_VERSION,
    NULL_TOPIC,
    START_VERSION,
    queue_name,
    wake_key,
)
from dbosify._store.limits import NOT_UTF8, NUL, TOO_LONG, byte_length, id_problem

__all__ = ["apply", "decode", "queue_name", "wake_key"]

logger = logging.getLogger("dbosify")



# -- DBOS's serialization ------------------------------------------------------------------


def decode(text: str | None, serialization: str | None) -> Any:
    """A value in DBOS's serialization: portable JSON, or DBOS's default (base64 of a pickle),
    which is what rows without a serialization hold."""
    if text is None:
        return None
    if serialization == "portable_json":
        return json.loads(text)
    if serialization not in (None, "py_pickle"):
        raise ValueError(f"DBOS serialization {serialization!r} is not readable here")
    return pickle.loads(base64.b64decode(text))  # noqa: S301  (DBOS's own format, in its tables)


def _args(text: str | None, serialization: str | None) -> list[Any]:
    value = decode(text, serialization)
    if value is None:
        return []
    if serialization == "portable_json":
        positional, named = value.get("positionalArgs") or [], value.get("namedArgs") or {}
    else:
        positional, named = list(value.get("args") or ()), value.get("kwargs") or {}
    if named:
        raise ValueError("Temporal workflows take positional arguments only (named arguments given)")
    return list(positional)


def _payloads(values: list[Any]) -> Any:
    from temporalio.api.common.v1 import message_pb2 as common
    from temporalio.converter import default

    out = common.Payloads()
    out.payloads.extend(default().payload_converter.to_payloads(values))
    return out


# -- the worker's side ----------------------------------------------------------------------


def apply(tx: Tx, task_queue: str, identity: str) -> int:
    """Deliver DBOS's messages to runs of ``task_queue`` and start the runs enqueued on it;
    returns how many."""
    if not records.enabled(tx):
        return 0
    return _messages(tx, task_queue, identity) + _starts(tx, task_queue, identity)


def _messages(tx: Tx, task_queue: str, identity: str) -> int:
    nt = records.table(tx, "notifications")
    # Locked and waited for, not skipped: the rows are filtered by task queue below, so a worker
    # of another queue may hold one that is ours for a moment (each locks them in the same order).
    lock = "" if tx.store.is_sqlite else " FOR UPDATE"
    ws = records.table(tx, "workflow_status")
    prefix = f"{ids.quote(tx.namespace)}/"
    # Messages to a run's DBOS ID, and to the ID of the enqueue that started a workflow (its
    # row, application version ALIAS_VERSION, names the namespace in its queue): the workflow's
    # running run takes those.
    rows = tx.all(
        f"SELECT n.message_uuid, n.destination_uuid, n.topic, n.message, n.serialization,"
        f" w.workflow_uuid FROM {nt} n LEFT JOIN {ws} w ON w.workflow_uuid = n.destination_uuid"
        " AND w.application_version = %s AND substr(w.queue_name, 1, %s) = %s"
        " WHERE substr(n.destination_uuid, 1, %s) = %s OR w.workflow_uuid IS NOT NULL"
        f" ORDER BY n.created_at_epoch_ms{lock.replace('UPDATE', 'UPDATE OF n')}",
        (ALIAS_VERSION, len(prefix), prefix, len(prefix), prefix),
    )
    done = 0
    for message_uuid, destination, topic, message, serialization, alias in rows:
        if alias is not None:
            run = h.current_run(tx, str(alias))
            if run is not None and run.task_queue != task_queue:
                continue  # its run's workers take it
            for _ in range(3):  # a run that continued as new meanwhile: its successor takes it
                if run is None or not run.running:
                    break
                run = h.get_run(tx, run.run_id, lock=True)
                if run is not None and not run.running:
                    run = h.current_run(tx, str(alias))
                else:
                    break
            if run is None or not run.running:
                tx.execute(f"DELETE FROM {nt} WHERE message_uuid = %s", (message_uuid,))
                logger.warning("dbosify: DBOS message to %s dropped: the workflow closed first", destination)
                continue
        else:
            parts = ids.split(str(destination))
            run = h.get_run(tx, parts[2]) if parts else None
            if run is None or parts is None or run.workflow_id != parts[1] or run.task_queue != task_queue:
                continue  # another queue's run, or not a run of ours (a DBOS ID that looks like one)
        run = h.get_run(tx, run.run_id, lock=True)  # locked as any signal locks it
        if run is None:
            continue
        tx.execute(f"DELETE FROM {nt} WHERE message_uuid = %s", (message_uuid,))
        if not run.running:
            logger.warning("dbosify: DBOS message to %s dropped: the run closed first", destination)
            continue
        try:
            payloads = _payloads([decode(message, serialization)])
        except Exception as err:  # unreadable: dropped with a reason, never retried forever
            logger.warning("dbosify: DBOS message to %s dropped: %s", destination, err)
            continue
        name = "" if topic in (None, NULL_TOPIC) else str(topic)
        tx.execute("SAVEPOINT dbos_signal")
        try:
            _within_limits(tx, None, name, payloads)
            _runs.signal(tx, run, name, payloads, None, identity or "dbos", request_id=f"dbos:{message_uuid}")
            tx.execute("RELEASE SAVEPOINT dbos_signal")
        except Exception as err:  # refused: dropped with the reason, the other messages go on
            tx.execute("ROLLBACK TO SAVEPOINT dbos_signal")
            logger.warning("dbosify: DBOS message to %s dropped: %s", destination, err)
            continue
        done += 1
    return done


def _starts(tx: Tx, task_queue: str, identity: str) -> int:
    ws = records.table(tx, "workflow_status")
    wi = records.table(tx, "workflow_input")
    lock = "" if tx.store.is_sqlite else " FOR UPDATE OF w SKIP LOCKED"
    rows = tx.all(
        f"SELECT w.workflow_uuid, w.name, i.inputs, w.serialization FROM {ws} w"
        f" LEFT JOIN {wi} i ON i.workflow_uuid = w.workflow_uuid"
        " WHERE w.queue_name = %s AND w.status = 'ENQUEUED' AND w.application_version = %s"
        f" ORDER BY w.priority, w.created_at{lock}",
        (queue_name(tx.namespace, task_queue), START_VERSION),
    )
    done = 0
    for workflow_id, workflow_type, inputs, serialization in rows:
        workflow_id = str(workflow_id)
        # A savepoint: a start the database refuses must not abort the other requests'
        # transaction (on Postgres every later statement would fail, and so would every retry).
        tx.execute("SAVEPOINT dbos_start")
        try:
            started = _started(inputs, serialization)
            _within_limits(tx, workflow_id, str(workflow_type), started)
            result = _runs.start_run(
                tx, workflow_id=workflow_id, workflow_type=str(workflow_type), task_queue=task_queue,
                started=started, request_id=f"dbos:{workflow_id}", identity=identity or "dbos",
            )
            tx.execute("RELEASE SAVEPOINT dbos_start")
        except Exception as err:  # refused (a run started meanwhile, unreadable input): the reason
            tx.execute("ROLLBACK TO SAVEPOINT dbos_start")
            logger.warning("dbosify: DBOS enqueue of %s refused: %s", workflow_id, err)
            records.close_row(
                tx, workflow_id, "ERROR", None, json.dumps({"name": "StartRefused", "message": str(err)})
            )
            continue
        # The request's row stays, PENDING, beside the run's own (written by the start): it is
        # closed with the workflow's outcome (`records.on_close`), which its DBOS handle returns.
        tx.execute(
            f"UPDATE {ws} SET status = 'PENDING', application_version = %s, updated_at = %s"
            " WHERE workflow_uuid = %s",
            (ALIAS_VERSION, records._ms(), workflow_id),
        )
        logger.info("dbosify: started run %s of %s, enqueued through DBOS", result.run_id, workflow_id)
        done += 1
    return done


def _within_limits(tx: Tx, workflow_id: str | None, name: str, payload: Any) -> None:
    """The frontend's limits, as a start or signal through the client meets them: ids and names
    of at most the namespace's length and without NUL, the input within the blob limit."""
    limits = tx.store.limits_for(tx.namespace)
    for label, value in (("WorkflowId", workflow_id), ("name", name)):
        problem = None if value is None else id_problem(value, limits.max_id_length)
        if problem == NUL:
            raise ValueError(f"{label} contains a NUL character, which cannot be stored.")
        if problem == NOT_UTF8:
            raise ValueError(f"{label} is not valid UTF-8.")
        if problem == TOO_LONG:
            assert value is not None
            raise ValueError(f"{label} exceeds maximum allowed length ({byte_length(value)}/{limits.max_id_length})")
    if payload.ByteSize() > limits.blob_error:
        raise ValueError("Blob data size exceeds limit.")


def _started(inputs: str | None, serialization: str | None) -> Any:
    from temporalio.api.history.v1 import message_pb2 as hist

    started = hist.WorkflowExecutionStartedEventAttributes()
    started.input.CopyFrom(_payloads(_args(inputs, serialization)))
    return started
