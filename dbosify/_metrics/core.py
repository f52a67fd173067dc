"""Core's worker and client metrics, with Core's names, kinds, units and labels.

A worker's `WorkerMetrics` holds its instruments and attribute sets (made once); the worker
calls it where Core would record: a workflow activation completed (execution or replay
latency, sticky cache hit or miss, the run's close), a poll answered, an activity task handed
out and completed. Every label is Core's: ``namespace``, ``task_queue``, ``workflow_type``,
``activity_type``, ``worker_type``, ``poller_type``, ``operation``; names take the runtime's
prefix (``temporal_`` by default).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dbosify._metrics.meter import (
    COUNTER,
    DURATION,
    GAUGE,
    HISTOGRAM,
    Attributes,
    Instrument,
    Meter,
)

_CLOSE_COMMANDS = {
    "complete_workflow_execution": ("workflow_completed", "Count of successfully completed workflows"),
    "fail_workflow_execution": ("workflow_failed", "Count of failed workflows"),
    "cancel_workflow_execution": ("workflow_canceled", "Count of canceled workflows"),
    "continue_as_new_workflow_execution": ("workflow_continue_as_new", "Count of continued-as-new workflows"),
}
_CACHE_FULL = 1  # RemoveFromCache.EvictionReason.CACHE_FULL


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class WorkerMetrics:
    def __init__(self, meter: Meter, namespace: str, task_queue: str, config: Any) -> None:
        m = meter
        self.base = m.default_attributes.extend(namespace=namespace, task_queue=task_queue)
        self.wf = self.base.extend(worker_type="WorkflowWorker")
        self.act = self.base.extend(worker_type="ActivityWorker")
        self._wf_types: dict[str, Attributes] = {}
        self._act_types: dict[str, Attributes] = {}
        self._runs: dict[str, str] = {}  # cached run id -> workflow type
        self._started: dict[bytes, tuple[Attributes, float]] = {}  # activity token -> (attrs, t0)
        self.closes = {k: m.core(n, d, COUNTER) for k, (n, d) in _CLOSE_COMMANDS.items()}
        self.task_failed = m.core("workflow_task_execution_failed", "Count of workflow task execution failures", COUNTER)
        self.task_latency = m.core(
            "workflow_task_execution_latency", "Histogram of workflow task execution (not replay) latencies",
            HISTOGRAM, DURATION,
        )
        self.replay_latency = m.core(
            "workflow_task_replay_latency", "Histogram of workflow task replay latencies", HISTOGRAM, DURATION
        )
        self.cache_hit = m.core(
            "sticky_cache_hit", "Count of times the workflow cache was used for a new workflow task", COUNTER
        )
        self.cache_miss = m.core(
            "sticky_cache_miss", "Count of times the workflow cache was missing a workflow for a sticky task", COUNTER
        )
        self.cache_size = m.core("sticky_cache_size", "Current number of cached workflows", GAUGE)
        self.forced_eviction = m.core(
            "sticky_cache_total_forced_eviction", "Count of evictions of cached workflows", COUNTER
        )
        self.wf_poll_ok = m.core("workflow_task_queue_poll_succeed", "Count of workflow task queue poll successes", COUNTER)
        self.act_received = m.core("activity_task_received", "Count of activity task queue poll successes", COUNTER)
        self.act_failed = m.core("activity_execution_failed", "Count of activity task execution failures", COUNTER)
        self.act_latency = m.core(
            "activity_execution_latency", "Histogram of activity execution latencies", HISTOGRAM, DURATION
        )
        self.act_ok_latency = m.core(
            "activity_succeed_endtoend_latency",
            "Histogram of activity execution latencies for successful activities", HISTOGRAM, DURATION,
        )
        self.act_sched_to_start = m.core(
            "activity_schedule_to_start_latency", "Histogram of activity schedule-to-start latencies",
            HISTOGRAM, DURATION,
        )
        self.long_request = m.core("long_request", "Count of long-poll request successes by rpc name", COUNTER)
        self.long_latency = m.core(
            "long_request_latency", "Histogram of client long-poll request latencies", HISTOGRAM, DURATION
        )
        self.wf_poll_attrs = self.base.extend(operation="PollWorkflowTaskQueue")
        self.act_poll_attrs = self.base.extend(operation="PollActivityTaskQueue")
        m.core("worker_start", "Count of the number of initialized workers", COUNTER).add(1, self.base)
        pollers = m.core("num_pollers", "Current number of active pollers per queue type", GAUGE)
        slots = m.core("worker_task_slots_available", "Current number of available slots per task type", GAUGE)
        m.core("worker_task_slots_used", "Current number of used slots per task type", GAUGE)
        types = config.task_types
        if types.enable_workflows:
            n = _pollers(config.workflow_task_poller_behavior)
            pollers.set(n, self.base.extend(poller_type="workflow_task"))
            pollers.set(n, self.base.extend(poller_type="sticky_workflow_task"))
            slots.set(_slots(config.tuner.workflow_slot_supplier), self.wf)
        if types.enable_remote_activities:
            pollers.set(_pollers(config.activity_task_poller_behavior), self.base.extend(poller_type="activity_task"))
            slots.set(_slots(config.tuner.activity_slot_supplier), self.act)
        self.cache_size.set(0, self.wf)

    def _wf_attrs(self, workflow_type: str) -> Attributes:
        a = self._wf_types.get(workflow_type)
        if a is None:
            a = self._wf_types[workflow_type] = self.wf.extend(workflow_type=workflow_type)
        return a

    # -- workflows --------------------------------------------------------------------------

    async def activation(self, act: Any, fut: asyncio.Future[Any]) -> Any:
        """Await ``act``'s completion, and record what Core records for it."""
        t0 = time.perf_counter()
        completion = await fut
        self._activation_done(act, completion, time.perf_counter() - t0)
        return completion

    def _activation_done(self, act: Any, completion: Any, seconds: float) -> None:
        run_id = act.run_id
        jobs = act.jobs
        first = jobs[0] if jobs else None
        if first is not None and first.HasField("remove_from_cache"):
            if self._runs.pop(run_id, None) is not None:
                self.cache_size.set(len(self._runs), self.wf)
            if first.remove_from_cache.reason == _CACHE_FULL:
                self.forced_eviction.add(1, self.wf)
            return
        wf_type = self._runs.get(run_id)
        if wf_type is None:
            for job in jobs:
                if job.HasField("initialize_workflow"):
                    wf_type = job.initialize_workflow.workflow_type
                    break
            else:
                wf_type = ""
            self._runs[run_id] = wf_type
            self.cache_size.set(len(self._runs), self.wf)
            if act.is_replaying:
                self.cache_miss.add(1, self.wf)
        elif not act.is_replaying:
            self.cache_hit.add(1, self.wf)
        attrs = self._wf_attrs(wf_type)
        if act.is_replaying:
            self.replay_latency.record(_ms(seconds), attrs)
            return
        if first is not None and first.HasField("query_workflow") and len(jobs) == 1:
            return  # a query is no workflow task
        self.task_latency.record(_ms(seconds), attrs)
        if completion.HasField("failed"):
            self.task_failed.add(1, attrs)
            return
        for cmd in completion.successful.commands:
            which = cmd.WhichOneof("variant")
            inst = self.closes.get(which) if which else None
            if inst is not None:
                inst.add(1, attrs)

    def polled_workflow(self, t0: float) -> None:
        """A workflow poll was answered after waiting since ``t0`` (``time.perf_counter()``)."""
        self.wf_poll_ok.add(1, self.wf)
        self.long_request.add(1, self.wf_poll_attrs)
        self.long_latency.record(_ms(time.perf_counter() - t0), self.wf_poll_attrs)

    # -- activities -------------------------------------------------------------------------

    def activity_task(self, task: Any, t0: float) -> None:
        """An activity task is handed out (``t0``: when its poll began)."""
        self.long_request.add(1, self.act_poll_attrs)
        self.long_latency.record(_ms(time.perf_counter() - t0), self.act_poll_attrs)
        if not task.HasField("start"):
            return
        start = task.start
        a = self._act_types.get(start.activity_type)
        if a is None:
            a = self._act_types[start.activity_type] = self.act.extend(activity_type=start.activity_type)
        self.act_received.add(1, a)
        sched = start.current_attempt_scheduled_time.ToNanoseconds()
        began = start.started_time.ToNanoseconds()
        if sched and began >= sched:
            self.act_sched_to_start.record((began - sched) // 1_000_000, a)
        self._started[task.task_token] = (a, time.perf_counter())

    def activity_done(self, completion: Any) -> None:
        got = self._started.pop(completion.task_token, None)
        if got is None:
            return
        attrs, t0 = got
        ms = _ms(time.perf_counter() - t0)
        self.act_latency.record(ms, attrs)
        kind = completion.result.WhichOneof("status")
        if kind == "completed":
            self.act_ok_latency.record(ms, attrs)
        elif kind == "failed":
            self.act_failed.add(1, attrs)


def _pollers(behavior: Any) -> int:
    initial = getattr(behavior, "initial", None)
    if initial is not None:
        return int(initial)
    return int(getattr(behavior, "simple_maximum", 5) or 5)


def _slots(supplier: Any) -> int:
    return int(getattr(supplier, "num_slots", 0) or 0)


def for_worker(meter: Meter | None, namespace: str, task_queue: str, config: Any) -> WorkerMetrics | None:
    return None if meter is None else WorkerMetrics(meter, namespace, task_queue, config)


class ClientMetrics:
    """Core's client metrics: ``request``/``request_failure`` and their latency, by RPC."""

    def __init__(self, meter: Meter) -> None:
        self.base = meter.default_attributes
        self.ok = meter.core("request", "Count of client request successes by rpc name", COUNTER)
        self.failed = meter.core("request_failure", "Count of client request failures by rpc name", COUNTER)
        self.latency = meter.core("request_latency", "Histogram of client request latencies", HISTOGRAM, DURATION)
        self._ops: dict[str, Attributes] = {}

    async def call(self, rpc: str, coro: Any) -> Any:
        a = self._ops.get(rpc)
        if a is None:
            a = self._ops[rpc] = self.base.extend(operation="".join(p.title() for p in rpc.split("_")))
        t0 = time.perf_counter()
        try:
            result = await coro
        except BaseException as err:
            code = err.args[0] if getattr(err, "args", None) else None
            self.failed.add(1, a if not isinstance(code, int) else a.extend(status_code=_CODES.get(code, str(code))))
            raise
        finally:
            self.latency.record(_ms(time.perf_counter() - t0), a)
        self.ok.add(1, a)
        return result


_CODES = {
    1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}


def for_client(meter: Meter | None) -> ClientMetrics | None:
    return None if meter is None else ClientMetrics(meter)


__all__ = ["ClientMetrics", "Instrument", "WorkerMetrics", "for_client", "for_worker"]
