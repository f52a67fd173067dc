"""The workloads. Each runs in a fresh `Session` (fresh processes) on a fresh database and returns
its metrics as a flat dict of numbers."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.measure import CpuSampler, percentile, rss_mb
from bench.session import Session, WorkloadError


@dataclass
class Sizes:
    n: int = 500  # W1: concurrent one-activity workflows
    m: int = 50  # W2: sequential execute_workflow calls
    k: int = 200  # W3: sequential activities in one workflow
    s: int = 100  # W4: signals
    q: int = 20  # W4: queries (median reported)
    u: int = 20  # W4: updates (median reported)
    t: int = 200  # W5: concurrent 1 s sleepers
    sleep: float = 1.0
    crash_workflows: int = 100  # W6
    crash_activities: int = 5  # W6: per workflow
    crash_seconds: float = 0.2  # W6: each activity
    crash_kill_after: int = 100  # W6: completions before the SIGKILL
    waiters: int = 1000  # W7
    idle_window: float = 3.0  # W7: seconds over which the waiting worker's CPU is sampled
    stats_settle: float = 1.1  # wait for Postgres to flush its commit counters (0: smoke, inexact)
    shutdown_grace: float = 15.0  # seconds a worker gets to shut down after the run (0: SIGKILL)

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(n=5, m=3, k=5, s=5, q=2, u=2, t=5, crash_workflows=3, crash_activities=2,
                   crash_kill_after=3, waiters=10, idle_window=0.5, stats_settle=0.0,
                   shutdown_grace=0.0)

    def timeout(self, count: int, per_item: float = 0.5, floor: float = 120) -> float:
        """A generous limit for one step; past it the workload is reported as hung."""
        return max(floor, count * per_item)


SETTLED = 1.0  # W6: seconds between an attempt's end and the kill after which a re-run is a fault


@dataclass
class Context:
    session: Session
    sizes: Sizes
    tag: str
    backend: Any  # the backend object (for Postgres connection counts)


def _cpu_groups(ctx: Context) -> dict[str, Callable[[], Any]]:
    return {"app": ctx.session.app_pids, "worker": ctx.session.worker_pids,
            "server": ctx.session.env.server_pids}


class _Commits:
    """Postgres commits in the bench database during a step (dbosify-pg only)."""

    def __init__(self, ctx: Context) -> None:
        self.db = ctx.session.env.pg_dbname
        self.backend = ctx.backend
        self.settle = ctx.sizes.stats_settle
        self.start = 0
        if self.db is not None:
            time.sleep(self.settle)  # let the warm-up's counters reach pg_stat_database
            self.start = self.backend.commits(self.db)

    def stop(self) -> int | None:
        if self.db is None:
            return None
        time.sleep(self.settle)
        return int(self.backend.commits(self.db) - self.start)


def w1(ctx: Context, workers: int = 1) -> dict[str, float]:
    s = ctx.session
    s.start(workers=workers)
    s.call(120, op="warmup", tag=ctx.tag)
    commits = _Commits(ctx)
    sampler = CpuSampler(_cpu_groups(ctx))
    sampler.start()
    ans = s.call(ctx.sizes.timeout(ctx.sizes.n), op="throughput", n=ctx.sizes.n, tag=ctx.tag)
    cpu = sampler.stop()
    n_commits = commits.stop()
    extra = {} if n_commits is None else {"pg_commits_per_workflow": n_commits / ctx.sizes.n}
    return {
        **extra,
        "wf_per_s": ctx.sizes.n / ans["seconds"],
        "seconds": ans["seconds"],
        "cpu_s": cpu["app"] + cpu["server"],
        "cpu_app_s": cpu["app"],
        "cpu_worker_s": cpu["worker"],
        "cpu_server_s": cpu["server"],
    }


def w1x2(ctx: Context) -> dict[str, float]:
    return w1(ctx, workers=2)


def w2(ctx: Context) -> dict[str, float]:
    s = ctx.session
    s.start()
    s.call(120, op="warmup", tag=ctx.tag)
    ans = s.call(ctx.sizes.timeout(ctx.sizes.m, 5), op="latency", m=ctx.sizes.m, tag=ctx.tag)
    ms = [x * 1000 for x in ans["samples"]]
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95)}


def w3(ctx: Context) -> dict[str, float]:
    s = ctx.session
    s.start()
    s.call(120, op="warmup", tag=ctx.tag)
    commits = _Commits(ctx)
    ans = s.call(ctx.sizes.timeout(ctx.sizes.k, 2), op="sequential", k=ctx.sizes.k, tag=ctx.tag)
    n_commits = commits.stop()
    extra = {} if n_commits is None else {"pg_commits_per_activity": n_commits / ctx.sizes.k}
    return {"ms_per_activity": ans["seconds"] * 1000 / ctx.sizes.k, **extra}


def w4(ctx: Context) -> dict[str, float]:
    s = ctx.session
    z = ctx.sizes
    s.start()
    s.call(120, op="warmup", tag=ctx.tag)
    ans = s.call(z.timeout(z.s + z.q + z.u, 2), op="messages", s=z.s, q=z.q, u=z.u, tag=ctx.tag)
    return {
        "ms_per_signal": ans["signal_seconds"] * 1000 / z.s,
        "query_ms": statistics.median(ans["query"]) * 1000,
        "update_ms": statistics.median(ans["update"]) * 1000,
    }


def w5(ctx: Context) -> dict[str, float]:
    s = ctx.session
    s.start()
    s.call(120, op="warmup", tag=ctx.tag)
    ans = s.call(ctx.sizes.timeout(ctx.sizes.t), op="timers", t=ctx.sizes.t,
                 seconds=ctx.sizes.sleep, tag=ctx.tag)
    return {"wall_s": ans["seconds"]}


def w6(ctx: Context) -> dict[str, float]:
    s = ctx.session
    z = ctx.sizes
    total = z.crash_workflows * z.crash_activities
    s.start()
    s.call(120, op="warmup", tag=ctx.tag)
    t0 = time.monotonic()
    s.call(z.timeout(z.crash_workflows), op="batch_start", n=z.crash_workflows,
           k=z.crash_activities, seconds=z.crash_seconds, tag=ctx.tag)
    deadline = time.monotonic() + z.timeout(total)
    while sum(1 for m in s.marks() if m[3] == "done") < z.crash_kill_after:
        if time.monotonic() > deadline:
            raise WorkloadError(f"W6: fewer than {z.crash_kill_after} activities completed before the kill")
        time.sleep(0.01)
    victim = s.workers[0]
    kill_wall = time.time()
    t_kill = s.kill_worker(victim)
    done_at_kill = sum(1 for m in s.marks() if m[3] == "done")
    s.spawn_worker()
    s.call(z.timeout(total, 1, 300), op="batch_results", n=z.crash_workflows,
           k=z.crash_activities, tag=ctx.tag)
    t_end = time.monotonic()
    marks = s.marks()
    first_done: dict[tuple[str, str], float] = {}
    done: Counter[tuple[str, str]] = Counter()
    for wf, act, _attempt, phase, _pid, at in marks:
        if phase == "done":
            done[(wf, act)] += 1
            first_done.setdefault((wf, act), at)
    twice = [key for key, v in done.items() if v > 1]
    return {
        "recovery_s": t_end - t_kill,
        "total_s": t_end - t0,
        "completed_executions": sum(done.values()),
        "distinct_completed": len(done),
        "completed_twice": len(twice),
        # Finished at least SETTLED s before the kill: its result had time to be recorded, so
        # a re-run is not the unavoidable at-least-once window of an attempt killed between
        # returning and reporting.
        "completed_twice_settled": sum(1 for key in twice if first_done[key] < kill_wall - SETTLED),
        "started_executions": sum(1 for m in marks if m[3] == "start"),
        "done_at_kill": done_at_kill,
        "expected": total,
    }


def w7(ctx: Context) -> dict[str, float]:
    s = ctx.session
    z = ctx.sizes
    s.start()
    s.call(120, op="warmup", tag=ctx.tag)
    worker = s.workers[0]
    idle_rss = rss_mb(worker.pid) or 0.0
    ans = s.call(z.timeout(z.waiters, 0.5, 300), op="wait_start", n=z.waiters, tag=ctx.tag)
    out: dict[str, float] = {
        "worker_rss_mb": rss_mb(worker.pid) or 0.0,
        "worker_idle_rss_mb": idle_rss,
        "client_rss_mb": rss_mb(s.client.pid) if s.client else 0.0,  # type: ignore[dict-item]
        "start_and_query_s": ans["seconds"],
    }
    server = [rss_mb(pid) or 0.0 for pid in s.env.server_pids()]
    out["server_rss_mb"] = sum(server)
    # Nothing happens while they all wait: what does waiting cost?
    sampler = CpuSampler(_cpu_groups(ctx))
    sampler.start()
    time.sleep(z.idle_window)
    cpu = sampler.stop()
    out["idle_cpu_pct_app"] = 100 * cpu["app"] / z.idle_window
    out["idle_cpu_pct_server"] = 100 * cpu["server"] / z.idle_window
    if s.env.pg_dbname is not None:
        out["pg_connections"] = ctx.backend.connections(s.env.pg_dbname)
    rel = s.call(z.timeout(z.waiters, 0.5, 300), op="wait_release", n=z.waiters, tag=ctx.tag)
    out["release_s"] = rel["seconds"]
    return out


WORKLOADS: dict[str, Callable[[Context], dict[str, float]]] = {
    "W1": w1,
    "W1x2": w1x2,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W5": w5,
    "W6": w6,
    "W7": w7,
}
