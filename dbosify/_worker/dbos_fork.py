"""DBOS's fork of a run is a Temporal reset (`dbosify._engine.reset.reset_run`).

``dbos workflow fork <run's DBOS ID> --step N`` (`DBOSClient.fork_workflow`) inserts a new DBOS
row ``forked_from`` the run; a trigger wakes the run's workers (`setup`), and one of them resets
the run to the last workflow task completed before step N: the new run gives step N and every
later command again, and everything before it is kept from the history, as Temporal's reset does
(the workflow's current run, if running, is terminated; signals after that point are reapplied).

Step N is DBOS's `function_id`: the event ID of the step's first event in the run's history
(an activity, local activity, timer, child, signal or cancel sent). DBOS's fork does not store
N; it copies the steps before N to the fork, so the reset goes to the last workflow task
completed before the first step after the copied ones (`step_reset_point`) -- the same for every
N between two steps. With no step copied (``--step 1``, DBOS's default) that is the task before
the first step; with no step after, the last workflow task. Forking a closed run works, as a
reset does.

The new run's ID comes from the fork's DBOS ID:
- ``<namespace>/<workflow id>/<new run id>`` (quoted as `ids` does; DBOS's ``-f``): the new run
  has that run ID, and the fork's row becomes the new run's DBOS row;
- an ID without ``/`` (the UUID DBOS makes up when none is given): the new run has that run ID,
  so its DBOS ID is ``<namespace>/<workflow id>/<that ID>``; the fork's own row stays as a record
  of the fork: SUCCESS, its output the new run's DBOS ID (``handle.get_result()``);
- anything else, or a fork that cannot be done (no workflow task completed, the run ID taken):
  the fork's row is ERROR with the reason.
"""

from __future__ import annotations

import json
import logging

from temporalio.api.enums.v1 import event_type_pb2 as et

from dbosify._dbos import records
from dbosify._engine import history as h
from dbosify._engine import reset
from dbosify._engine.errors import ServiceError
from dbosify._store import Tx
from dbosify._store import dbos_ids as ids

logger = logging.getLogger("dbosify")

REASON = "forked through DBOS (workflow fork {id} --step {step})"


# The first event of a DBOS step (see the module's docstring).
_STEP_STARTS = tuple(int(t) for t in (
    et.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, et.EVENT_TYPE_TIMER_STARTED,
    et.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    et.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    et.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    et.EVENT_TYPE_MARKER_RECORDED,
))
_WFT_COMPLETED = int(et.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)


def kept_steps(tx: Tx, fork_uuid: str) -> int:
    """The highest step DBOS copied into the fork (0: none): the steps before ``--step N``."""
    row = tx.one(
        f"SELECT MAX(function_id) FROM {records.table(tx, 'operation_outputs')}"
        " WHERE workflow_uuid = %s", (fork_uuid,),
    )
    return int(row[0]) if row is not None and row[0] is not None else 0


def step_reset_point(tx: Tx, run_id: str, kept: int) -> int | None:
    """The WorkflowTaskCompleted event a fork keeping the steps up to ``kept`` resets to: the
    last one before the first step after them (the task that gave its command), else the last
    one; None if the run has none."""
    marks = ", ".join(["%s"] * len(_STEP_STARTS))
    row = tx.one(
        "SELECT MAX(w.event_id) FROM history w WHERE w.run_id = %s AND w.event_type = %s"
        " AND w.event_id < COALESCE((SELECT MIN(s.event_id) FROM history s WHERE s.run_id = %s"
        f" AND s.event_id > %s AND s.event_type IN ({marks})), w.event_id + 1)",
        (run_id, _WFT_COMPLETED, run_id, kept, *_STEP_STARTS),
    )
    return int(row[0]) if row is not None and row[0] is not None else None


def _finish(tx: Tx, fork_uuid: str, output: str | None, error: str | None) -> None:
    records.close_row(tx, fork_uuid, "SUCCESS" if error is None else "ERROR", output, error)


def _refuse(tx: Tx, fork_uuid: str, reason: str) -> None:
    logger.info("dbosify: DBOS fork %s refused: %s", fork_uuid, reason)
    _finish(tx, fork_uuid, None, json.dumps({"name": "ForkRefused", "message": f"dbosify: {reason}"}))


def carry_out(tx: Tx, fork_uuid: str, source: str, identity: str) -> None:
    """Reset the run ``source`` (a DBOS ID) as the fork ``fork_uuid`` asks."""
    parts = ids.split(source)
    assert parts is not None
    _, workflow_id, run_id = parts
    mine = ids.split(fork_uuid)
    if "/" not in fork_uuid:
        new_run_id = fork_uuid
    elif mine is not None and mine[:2] == (tx.namespace, workflow_id) and mine[2]:
        new_run_id = mine[2]
    else:
        _refuse(tx, fork_uuid, "a fork's ID is <namespace>/<workflow id>/<new run id> of the"
                " same workflow, or holds no '/' (it is then the new run's ID)")
        return
    if tx.one("SELECT 1 FROM executions WHERE run_id = %s", (new_run_id,)) is not None:
        _refuse(tx, fork_uuid, f"run ID {new_run_id} is taken")
        return
    if h.get_run(tx, run_id) is None:
        _refuse(tx, fork_uuid, f"run {source} is not found")
        return
    kept = kept_steps(tx, fork_uuid)
    point = step_reset_point(tx, run_id, kept)
    if point is None:
        _refuse(tx, fork_uuid, "the run has no completed workflow task to reset to")
        return
    if mine is not None:  # the new run's own row replaces the fork's
        for name in ("workflow_output", "workflow_input", "workflow_status"):
            tx.execute(
                f"DELETE FROM {records.table(tx, name)} WHERE workflow_uuid = %s", (fork_uuid,)
            )
    try:
        reset.reset_run(
            tx, workflow_id=workflow_id, run_id=run_id, finish_event_id=point,
            reason=REASON.format(id=source, step=kept + 1), identity=identity,
            new_run_id=new_run_id,
        )
    except ServiceError as err:  # raised before the reset writes anything
        if mine is None:
            _refuse(tx, fork_uuid, str(err))
        else:
            logger.warning("dbosify: DBOS fork %s dropped: %s", fork_uuid, err)
        return
    logger.info("dbosify: run %s forked through DBOS into run %s", run_id, new_run_id)
    if mine is None:
        new_uuid = ids.workflow_uuid(tx.namespace, workflow_id, new_run_id)
        _finish(tx, fork_uuid, json.dumps(new_uuid), None)
