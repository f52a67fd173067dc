"""A versioned worker's side of Worker Deployments (the rules are in `dbosify._engine.deployments`).

Before each workflow task, a driver of a versioned worker reads where the run's task should go:

- if the run is not pinned (new, or AUTO_UPGRADE) and its deployment routes it to another version
  now, the driver hands the run back (`Moved`), and a worker of that version claims it: an
  AUTO_UPGRADE run moves to the new current version at its next workflow task;
- if it is pinned to this worker's version while the deployment's current (or, for its bucket,
  ramping) version is another, the activation says so (``target_worker_deployment_version_changed``,
  temporalio's ``workflow.info().is_target_worker_deployment_version_changed()``).

Each completed workflow task records the worker's version and the workflow's versioning behavior
(the worker's default when the workflow declares none) in its WorkflowTaskCompleted event and on
the run's row.
"""

from __future__ import annotations

from temporalio.api.history.v1 import message_pb2 as hist

from dbosify._engine import deployments
from dbosify._store import Tx
from dbosify._worker import dormancy
from dbosify._worker.driver_base import Dormant, DriverBase


def of_strategy(strategy: object) -> tuple[str | None, int]:
    """A worker's deployment (None unless it uses worker versioning) and default behavior."""
    if not getattr(strategy, "use_worker_versioning", False):
        return None, 0
    return str(strategy.version.deployment_name), int(getattr(strategy, "default_versioning_behavior", 0) or 0)  # type: ignore[attr-defined]


class Moved(Dormant):
    """The run's next workflow task belongs to another deployment version: handed back."""


async def check(d: DriverBase) -> bool:
    """Before a workflow task: True if the run's target version moved away from its pinned one
    (this worker's); raises `Moved` after handing back a run routed to another version."""
    deployment = d.core.deployment
    if deployment is None or d.gen is None:
        return False
    mine = deployments.canonical(deployment, d.core.build_id)

    def fn(tx: Tx) -> bool | None:
        if d._owned(tx) is None:
            return False
        pinned, bucket, _ = deployments.run_state(tx, d.run_id)
        r = deployments.routing(tx, deployment)
        if pinned is None or pinned != mine:
            if r.target(pinned, bucket) == mine:
                return False
            dormancy.release(tx, "run_id = %s AND owner = %s AND claim_gen = %s", (d.run_id, d.owner, d.gen))
            return None
        return r.target(None, bucket) != mine

    changed = await d.store.transact(d.ns, fn)
    if changed is None:
        raise Moved()
    return bool(changed)


def on_task_completed(
    tx: Tx, d: DriverBase, wft: hist.WorkflowTaskCompletedEventAttributes, behavior: int
) -> None:
    """Stamp a versioned worker's workflow task with its version and behavior, and keep them on
    the run (a PINNED task pins the run to this version)."""
    deployment = d.core.deployment
    if deployment is None:
        return
    behavior = behavior or d.core.default_versioning_behavior
    wft.versioning_behavior = behavior  # type: ignore[assignment]
    wft.deployment_version.deployment_name = deployment
    wft.deployment_version.build_id = d.core.build_id
    wft.worker_deployment_name = deployment
    deployments.on_task_completed(tx, d.run_id, deployment, d.core.build_id, behavior)
