"""The WorkflowService RPCs answered by a `_server` module: name -> handler(store, request, identity).

`dbosify._server.service.WorkflowService` answers the rest itself (starts, signals, queries, updates,
history) and looks here for every RPC it has no method for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from dbosify._server import (
    activities,
    activity_ops,
    delete,
    deployments,
    reset,
    schedules,
    task_queues,
    visibility,
)
from dbosify._store import Store

Handler = Callable[[Store, Any, str], Awaitable[Message]]


def _plain(fn: Callable[[Store, Any], Awaitable[Message]]) -> Handler:
    return lambda store, req, identity: fn(store, req)


ROUTES: dict[str, Handler] = {
    # visibility
    "list_workflow_executions": _plain(visibility.list_executions),
    "scan_workflow_executions": _plain(visibility.list_executions),
    "count_workflow_executions": _plain(visibility.count_executions),
    "delete_workflow_execution": _plain(delete.delete_workflow_execution),
    # task queues
    "describe_task_queue": _plain(task_queues.describe),
    # schedules
    "create_schedule": schedules.create,
    "describe_schedule": _plain(schedules.describe),
    "update_schedule": _plain(schedules.update),
    "patch_schedule": _plain(schedules.patch),
    "delete_schedule": _plain(schedules.delete),
    "list_schedules": _plain(schedules.list_schedules),
    "list_schedule_matching_times": _plain(schedules.matching_times),
    # reset, and operations on pending activities
    "reset_workflow_execution": reset.reset_workflow_execution,
    "pause_activity": _plain(activity_ops.pause),
    "unpause_activity": _plain(activity_ops.unpause),
    "reset_activity": _plain(activity_ops.reset),
    # standalone activities
    "start_activity_execution": _plain(activities.start),
    "poll_activity_execution": _plain(activities.poll),
    "describe_activity_execution": _plain(activities.describe),
    "request_cancel_activity_execution": _plain(activities.request_cancel),
    "terminate_activity_execution": _plain(activities.terminate),
    "delete_activity_execution": _plain(activities.delete),
    "list_activity_executions": _plain(activities.list_executions),
    "count_activity_executions": _plain(activities.count_executions),
    # worker deployments
    "describe_worker_deployment": _plain(deployments.describe),
    "list_worker_deployments": _plain(deployments.list_deployments),
    "set_worker_deployment_current_version": deployments.set_current,
    "set_worker_deployment_ramping_version": deployments.set_ramping,
    "describe_worker_deployment_version": _plain(deployments.describe_version),
    "delete_worker_deployment_version": _plain(deployments.delete_version),
}
