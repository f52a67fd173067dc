"""What DescribeNamespace and ListNamespaces say of a namespace: the capabilities and limits this
engine really has, in the shape of a Temporal server's answer (tests/fixtures holds the dev
server's, and tests/test_fidelity.py compares them field by field).

Where a field says something the engine does not do, it is left unset (false, zero), as a server
without that feature leaves it.
"""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import namespace_pb2 as ns_enums
from temporalio.api.namespace.v1 import message_pb2 as ns_pb
from temporalio.api.replication.v1 import message_pb2 as repl_pb
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

# The capabilities this engine has (NamespaceInfo.Capabilities fields set to true):
CAPABILITIES = (
    "eager_workflow_start",  # request_eager_start hands the run to the starting process's worker
    "sync_update",  # updates waited for to COMPLETED
    "async_update",  # updates waited for to ACCEPTED, then polled
    # A worker's shutdown lets the workflow and activity tasks it holds complete cleanly: nothing
    # in flight is failed or left to time out by the shutdown.
    "worker_poll_complete_on_shutdown",
    "standalone_activities",  # Client.start_activity and the rest (see docs/COMPATIBILITY.md)
    "standalone_activity_start_delay",
)
# Not had, so left false: worker_heartbeats (no RecordWorkerHeartbeat/ListWorkers),
# reported_problems_search_attribute, workflow_pause, poller_autoscaling (and _auto_enroll: no
# poller scaling decisions), worker_commands, standalone_nexus_operation (no Nexus),
# workflow_update_callbacks, workflow_task_completion_pagination,
# standalone_activity_batch_operations (no batch jobs), standalone_activity_operator_commands
# (no pause/unpause/update-options of standalone activities).

CLUSTER = "active"  # the single cluster's name, as the dev server calls it


def namespace_id(name: str) -> str:
    """A namespace's id: a UUID, as on Temporal, fixed by its name (a name is one namespace)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dbosify:namespace:{name}"))


def info(name: str, blob_size_limit: int) -> ns_pb.NamespaceInfo:
    i = ns_pb.NamespaceInfo(
        name=name, id=namespace_id(name), state=ns_enums.NAMESPACE_STATE_REGISTERED, supports_schedules=True
    )
    for cap in CAPABILITIES:
        setattr(i.capabilities, cap, True)
    # The blob limit is enforced on payloads (see _worker/payload_limits.py); no memo or
    # workflow-task-completion size limit is, so those stay unset.
    i.limits.blob_size_limit_error = blob_size_limit
    return i


def describe(name: str, blob_size_limit: int) -> rr.DescribeNamespaceResponse:
    resp = rr.DescribeNamespaceResponse()
    resp.namespace_info.CopyFrom(info(name, blob_size_limit))
    cfg = resp.config
    # Closed runs are kept until deleted (no retention period is applied): a zero TTL.
    cfg.workflow_execution_retention_ttl.FromSeconds(0)
    cfg.bad_binaries.SetInParent()
    cfg.history_archival_state = ns_enums.ARCHIVAL_STATE_DISABLED
    cfg.visibility_archival_state = ns_enums.ARCHIVAL_STATE_DISABLED
    resp.replication_config.active_cluster_name = CLUSTER
    resp.replication_config.clusters.append(repl_pb.ClusterReplicationConfig(cluster_name=CLUSTER))
    return resp
