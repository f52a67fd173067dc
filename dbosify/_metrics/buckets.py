"""Core's default histogram buckets (in milliseconds; divided by 1000 for seconds)."""

from __future__ import annotations

_WF_LATENCY = [100, 500, 1000, 1500, 2000, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
               1_800_000, 3_600_000, 30_600_000, 86_400_000]
_WF_TASK = [1, 10, 20, 50, 100, 200, 500, 1000]
_ACT_EXEC = [50, 100, 500, 1000, 5000, 10_000, 60_000]
_SCHED_TO_START = [100, 500, 1000, 5000, 10_000, 100_000, 1_000_000]
_DEFAULT = [50, 100, 500, 1000, 2500, 10_000]

_BY_NAME = {
    "workflow_endtoend_latency": _WF_LATENCY,
    "workflow_task_execution_latency": _WF_TASK,
    "workflow_task_replay_latency": _WF_TASK,
    "activity_execution_latency": _ACT_EXEC,
    "workflow_task_schedule_to_start_latency": _SCHED_TO_START,
    "activity_schedule_to_start_latency": _SCHED_TO_START,
}


def default_for(name: str, seconds: bool) -> list[float]:
    """The buckets Core uses for ``name`` (without the ``temporal_`` prefix)."""
    ms = _BY_NAME.get(name, _DEFAULT)
    return [b / 1000 for b in ms] if seconds else [float(b) for b in ms]
