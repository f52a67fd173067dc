"""DescribeTaskQueue: who polls a task queue and what waits in it, in a Temporal server's shape.

Both modes are answered from one transaction (`dbosify._engine.task_queues` reads the rows):

- the default mode: the pollers of one type (``task_queue_type``, workflow when unset); with
  ``report_stats`` the backlog's count and age, also per priority key (every task has the default
  key, 3); with ``include_task_queue_status``, the count as ``backlog_count_hint``;
- ``api_mode=ENHANCED``: for each of ``task_queue_types`` (workflow and activity when empty),
  pollers if ``report_pollers`` and stats if ``report_stats``, under the unversioned build id ``""``.

What a dev server also fills and this engine does not have is left unset: the add and dispatch
rates (no per-task record of adds and dispatches is kept), the effective rate limit and
``rate_limiting_active`` (no rate limit is applied to a queue), the queue's config. A poller's
``rate_per_second`` is 100,000, what Temporal reports for a poller with no limit. The errors are
the dev server's (checked in tests/test_task_queues.py against tests/fixtures).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from temporalio.api.enums.v1 import task_queue_pb2 as tq_enums
from temporalio.api.taskqueue.v1 import message_pb2 as tq_pb
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import task_queues as queues
from dbosify._engine.errors import ServiceError
from dbosify._engine.limits import _length
from dbosify._store import Store, Tx

ENHANCED = tq_enums.DESCRIBE_TASK_QUEUE_MODE_ENHANCED
DEFAULT_TYPES = (queues.WORKFLOW, queues.ACTIVITY)  # ENHANCED with no types asked, as on Temporal
POLLER_RATE = 100_000.0  # what Temporal reports of a poller that set no rate limit
DEFAULT_PRIORITY_KEY = 3  # the key of every task without a priority (Temporal's default of 1..5)
UNVERSIONED = "__unversioned__"  # versioning_info.current_version of a queue without versioning
GO_ZERO_TIME = -62135596800  # 0001-01-01T00:00:00Z: the update time a dev server gives it


@dataclass
class _Seen:
    pollers: dict[int, list[queues.Poller]] = field(default_factory=dict)
    backlogs: dict[int, queues.Backlog] = field(default_factory=dict)
    now: float = 0.0  # the store's clock, for the backlogs' ages


def _check(req: rr.DescribeTaskQueueRequest, max_length: int, enhanced: bool) -> None:
    """The dev server's refusals, after the namespace is found (as there)."""
    if not req.HasField("task_queue"):
        raise ServiceError.invalid("taskQueue is not set")
    if not req.task_queue.name:
        raise ServiceError.invalid("missing task queue name")
    if _length(req.task_queue.name) > max_length:
        raise ServiceError.invalid("taskQueue length exceeds limit")
    if enhanced and req.task_queue.kind == tq_enums.TASK_QUEUE_KIND_STICKY:
        raise ServiceError.invalid(
            "Enhanced DescribeTaskQueue is not valid for a sticky queue, use api_mode=UNSPECIFIED or a normal queue."
        )


def _types(req: rr.DescribeTaskQueueRequest, enhanced: bool) -> list[int]:
    if enhanced:
        return list(dict.fromkeys(req.task_queue_types)) or list(DEFAULT_TYPES)
    return [req.task_queue_type or queues.WORKFLOW]


async def describe(store: Store, req: rr.DescribeTaskQueueRequest) -> Message:
    enhanced = req.api_mode == ENHANCED
    types = _types(req, enhanced)
    want_pollers = req.report_pollers or not enhanced
    want_backlog = req.report_stats or (req.include_task_queue_status and not enhanced)
    max_length = store.limits_for(req.namespace).max_id_length

    def read(tx: Tx) -> _Seen:
        _check(req, max_length, enhanced)
        seen = _Seen(now=tx.store.clock.now())
        wall = time.time()
        for t in types:
            if want_pollers:
                seen.pollers[t] = queues.pollers(tx, req.task_queue.name, t, wall)
            if want_backlog:
                seen.backlogs[t] = queues.backlog(tx, req.task_queue.name, t, seen.now)
        return seen

    seen = await store.transact(req.namespace, read)
    return _enhanced(req, types, seen) if enhanced else _default(req, types[0], seen)


def _poller_info(p: queues.Poller) -> tq_pb.PollerInfo:
    info = tq_pb.PollerInfo(identity=p.identity, rate_per_second=POLLER_RATE)
    info.last_access_time.FromNanoseconds(int(p.last_access * 1e9))
    if p.build_id:
        info.worker_version_capabilities.build_id = p.build_id
    return info


def _stats(backlog: queues.Backlog, now: float) -> tq_pb.TaskQueueStats:
    stats = tq_pb.TaskQueueStats(approximate_backlog_count=backlog.count)
    age = max(0.0, now - backlog.oldest) if backlog.oldest is not None else 0.0
    stats.approximate_backlog_age.FromNanoseconds(int(age * 1e9))  # set ("0s") when empty, as there
    return stats


def _default(req: rr.DescribeTaskQueueRequest, task_type: int, seen: _Seen) -> Message:
    resp = rr.DescribeTaskQueueResponse()
    resp.pollers.extend(_poller_info(p) for p in seen.pollers.get(task_type, ()))
    backlog = seen.backlogs.get(task_type)
    if req.report_stats and backlog is not None:
        resp.stats.CopyFrom(_stats(backlog, seen.now))
        resp.stats_by_priority_key[DEFAULT_PRIORITY_KEY].CopyFrom(resp.stats)
    if req.include_task_queue_status and backlog is not None:
        resp.task_queue_status.backlog_count_hint = backlog.count
    resp.versioning_info.current_version = UNVERSIONED
    resp.versioning_info.update_time.seconds = GO_ZERO_TIME
    return resp


def _enhanced(req: rr.DescribeTaskQueueRequest, types: list[int], seen: _Seen) -> Message:
    resp = rr.DescribeTaskQueueResponse()
    # No worker versioning: every worker polls the unversioned queue, whose key is "". A build id
    # asked for by name has nothing of its own (an unversioned worker is reported unversioned).
    keys = [""] if req.versions.unversioned or not req.versions.build_ids else []
    keys += [b for b in req.versions.build_ids if b]
    for key in dict.fromkeys(keys):
        version = resp.versions_info[key]
        if req.report_task_reachability and key == "":
            version.task_reachability = tq_enums.BUILD_ID_TASK_REACHABILITY_REACHABLE
        for t in types:
            info: Any = version.types_info[t]
            if key:
                continue
            if req.report_pollers:
                info.pollers.extend(_poller_info(p) for p in seen.pollers.get(t, ()))
            backlog = seen.backlogs.get(t)
            if req.report_stats and backlog is not None and t in queues.KINDS:
                info.stats.CopyFrom(_stats(backlog, seen.now))
    return resp
