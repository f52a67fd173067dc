"""Worker deployments and versioning: versions, routing, and where a run's workflow tasks go.

A worker started with ``WorkerDeploymentConfig(use_worker_versioning=True)`` belongs to a
deployment version (deployment name, build id). The version is created when the worker
registers, before its first poll (`register`, with its liveness row), as on Temporal at the
first poll. A deployment's routing (SetWorkerDeploymentCurrentVersion,
SetWorkerDeploymentRampingVersion) names its current version and a ramping one with a
percentage; ``revision`` is the conflict token.

Where a run's next workflow task goes (`target`):

- a run pinned to a version (``vers_pinned``: its last workflow task was completed with the PINNED
  behavior, or a pinned override at start, or inherited on continue-as-new) stays on it;
- any other run (new, or AUTO_UPGRADE) goes to the ramping version when its ramp bucket (a hash
  of its workflow id in [0, 100), so a workflow id always lands on the same side) is below the
  percentage, else to the current version; with neither, to unversioned workers.

A claim turns this into one condition on ``executions`` (`claim_filter`), the routing read once
per claim; a driver checks it before each workflow task and hands the run back when its target
moved (an AUTO_UPGRADE run then moves to the new current version at its next task).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from temporalio.api.deployment.v1 import message_pb2 as dep
from temporalio.api.enums.v1 import workflow_pb2 as wf_enums
from temporalio.api.workflow.v1 import message_pb2 as wf_pb

from dbosify._store import Tx

PINNED = wf_enums.VERSIONING_BEHAVIOR_PINNED
AUTO_UPGRADE = wf_enums.VERSIONING_BEHAVIOR_AUTO_UPGRADE


def canonical(deployment: str, build_id: str) -> str:
    """A version's canonical string, as temporalio's ``to_canonical_string``."""
    return f"{deployment}.{build_id}"


def bucket(workflow_id: str) -> float:
    """A workflow id's ramp bucket in [0, 100): the same id always lands on the same side."""
    h = int.from_bytes(hashlib.sha256(workflow_id.encode()).digest()[:8], "big")
    return (h % 10_000) / 100.0


@dataclass(frozen=True)
class Routing:
    deployment: str
    current: str | None  # build ids
    ramping: str | None
    pct: float

    def target(self, pinned: str | None, run_bucket: float) -> str | None:
        """The canonical version a run's next task goes to (None: unversioned workers)."""
        if pinned:
            return pinned
        build = self.ramping if self.ramping is not None and run_bucket < self.pct else self.current
        return canonical(self.deployment, build) if build is not None else None


def routing(tx: Tx, deployment: str) -> Routing:
    row = tx.one(
        "SELECT current_build, ramping_build, ramping_pct FROM worker_deployments WHERE name = %s",
        (deployment,),
    )
    if row is None:
        return Routing(deployment, None, None, 0.0)
    return Routing(deployment, row[0], row[1], float(row[2] or 0))


def register(tx: Tx, deployment: str | None, build_id: str, task_queue: str, now: float) -> None:
    """Create the deployment and its version on this task queue if they do not exist yet (when a
    versioned worker registers, before its first poll; nothing for an unversioned one)."""
    if deployment is None:
        return
    tx.execute(
        "INSERT INTO worker_deployments (name, create_time) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (deployment, now),
    )
    tx.execute(
        "INSERT INTO deployment_versions (deployment_name, build_id, task_queue, create_time)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (deployment, build_id, task_queue, now),
    )


def claim_filter(tx: Tx, task_queue: str, deployment: str | None, build_id: str) -> tuple[str, tuple[Any, ...]]:
    """The condition (on ``executions``, with its parameters) of the runs a worker may claim."""
    if deployment is not None:
        r = routing(tx, deployment)
        mine = canonical(deployment, build_id)
        unpinned = _unpinned(r, is_current=r.current == build_id, is_ramping=r.ramping == build_id)
        return f" AND (vers_pinned = %s OR (vers_pinned IS NULL AND {unpinned[0]}))", (mine, *unpinned[1])
    # An unversioned worker: unpinned runs, unless a deployment of this queue routes them.
    row = tx.one(
        "SELECT d.name FROM worker_deployments d WHERE (d.current_build IS NOT NULL OR d.ramping_build IS NOT NULL)"
        " AND d.name IN (SELECT deployment_name FROM deployment_versions WHERE task_queue = %s) LIMIT 1",
        (task_queue,),
    )
    if row is None:
        return " AND vers_pinned IS NULL", ()
    r = routing(tx, str(row[0]))
    if r.current is not None:
        return " AND 1 = 0", ()
    return " AND vers_pinned IS NULL AND vers_bucket >= %s", (r.pct,)


def _unpinned(r: Routing, *, is_current: bool, is_ramping: bool) -> tuple[str, tuple[Any, ...]]:
    if r.ramping is None:
        return ("1 = 1" if is_current else "1 = 0"), ()
    if is_ramping and is_current:
        return "1 = 1", ()
    if is_ramping:
        return "vers_bucket < %s", (r.pct,)
    if is_current:
        return "vers_bucket >= %s", (r.pct,)
    return "1 = 0", ()


def run_state(tx: Tx, run_id: str) -> tuple[str | None, float, bool]:
    """A run's pinned version, ramp bucket, and whether an override decides its version."""
    row = tx.one("SELECT vers_pinned, vers_bucket, vers_override FROM executions WHERE run_id = %s", (run_id,))
    if row is None:
        return None, 0.0, False
    return row[0], float(row[1] or 0), row[2] is not None


def on_start(tx: Tx, run_id: str, override: wf_pb.VersioningOverride | None, pinned: str | None) -> None:
    """Set a new run's pinned version (an override's, or inherited) and its override, if any."""
    blob = None
    if override is not None and override.ByteSize():
        blob = override.SerializeToString()
        pinned = _override_pin(override)
    if blob is None and pinned is None:
        return
    tx.execute(
        "UPDATE executions SET vers_pinned = %s, vers_override = %s WHERE run_id = %s", (pinned, blob, run_id)
    )


def _override_pin(o: wf_pb.VersioningOverride) -> str | None:
    if o.HasField("pinned"):
        v = o.pinned.version
        return canonical(v.deployment_name, v.build_id)
    if o.behavior == PINNED:
        if o.HasField("deployment"):
            return canonical(o.deployment.series_name, o.deployment.build_id)
        return o.pinned_version or None
    return None


def on_task_completed(tx: Tx, run_id: str, deployment: str, build_id: str, behavior: int) -> None:
    """Record the behavior and version of a versioned worker's workflow task."""
    tx.execute(
        "UPDATE executions SET vers_behavior = %s, vers_deployment = %s, vers_build = %s,"
        " vers_pinned = CASE WHEN vers_override IS NOT NULL THEN vers_pinned WHEN %s = %s THEN %s ELSE NULL END"
        " WHERE run_id = %s",
        (behavior, deployment, build_id, behavior, PINNED, canonical(deployment, build_id), run_id),
    )


def versioning_info(tx: Tx, run_id: str) -> wf_pb.WorkflowExecutionVersioningInfo | None:
    """DescribeWorkflowExecution's versioning_info (None for a run no versioned worker ran)."""
    row = tx.one(
        "SELECT vers_behavior, vers_deployment, vers_build, vers_override FROM executions WHERE run_id = %s",
        (run_id,),
    )
    if row is None or (not row[0] and row[3] is None and row[1] is None):
        return None
    info = wf_pb.WorkflowExecutionVersioningInfo(behavior=int(row[0] or 0))  # type: ignore[arg-type]
    if row[1] is not None:
        info.deployment_version.CopyFrom(dep.WorkerDeploymentVersion(deployment_name=row[1], build_id=row[2]))
        info.version = canonical(str(row[1]), str(row[2]))
    if row[3] is not None:
        info.versioning_override.ParseFromString(bytes(row[3]))
        pin = _override_pin(info.versioning_override)
        if pin is not None:
            info.behavior = PINNED
    return info


USE_RAMPING = 2  # ContinueAsNewVersioningBehavior USE_RAMPING_VERSION (1: AUTO_UPGRADE)


def inherit_pin(tx: Tx, from_run_id: str, started: Any) -> None:
    """A run started by another on the same task queue (its child, retry, cron or
    continue-as-new run) inherits its pinned version (``inherited_pinned_version``), if any."""
    started.ClearField("inherited_pinned_version")  # (a retry or cron run copies its first's)
    row = tx.one("SELECT vers_pinned FROM executions WHERE run_id = %s", (from_run_id,))
    if row is None or row[0] is None:
        return
    deployment, _, build = str(row[0]).partition(".")  # a deployment name has no "."
    started.inherited_pinned_version.CopyFrom(dep.WorkerDeploymentVersion(deployment_name=deployment, build_id=build))


def continued_pin(tx: Tx, run_id: str, same_queue: bool, initial_behavior: int, started: Any) -> str | None:
    """Set up a continue-as-new run's versioning: it keeps the run's override, and its pinned
    version on the same task queue, unless the command asks for AUTO_UPGRADE (the current
    version) or USE_RAMPING_VERSION (the deployment's ramping version, if any, returned)."""
    row = tx.one("SELECT vers_override, vers_deployment FROM executions WHERE run_id = %s", (run_id,))
    if row is None:
        return None
    override, deployment = row
    if initial_behavior == USE_RAMPING and deployment is not None:
        r = routing(tx, str(deployment))
        return canonical(r.deployment, r.ramping) if r.ramping is not None else None
    if initial_behavior:
        return None
    if override is not None:
        started.versioning_override.ParseFromString(bytes(override))
    if same_queue:
        inherit_pin(tx, run_id, started)
    return None
