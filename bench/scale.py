"""``python -m bench.scale``: many open runs waiting on signals and timers under one worker.

    python -m bench.scale [--runs 100000 | --quick] [--db URL] [--burst-at S] [--unsandboxed]

Half the runs wait on a signal; the other half sleep on a durable timer first. A tenth of all
runs are the *burst*, started last: their timers fall due within ``--burst-window`` seconds
(default 5), after every run has started and reached its wait and the restart below is over
(estimated from the rate so far, or ``--burst-at`` seconds after the first start); the other
timers are due an hour or more later. The runs (``bench/scale_app.py``) are
started by many concurrent client calls, under one worker process with temporalio's defaults
(sandboxed, a cache of 1,000 runs, so most runs are dormant). Then, in this order:

1. once every run waits: the worker's RSS, dormant runs, the idle worker's CPU and that of its
   Postgres sessions, and the namespace's size in Postgres;
2. the worker is SIGKILLed and a fresh worker process spawned, while two random runs are
   signalled: a dormant one that waits on the signal only (the time from the spawn to its
   result), and one that the killed worker held in its cache, released by the takeover first
   (the time until a query sees the signal: the held runs are the burst's, still asleep); then
   the new worker's RSS;
3. the burst falls due: each timer's lateness (TimerFired, and the workflow's resumption, each
   against the due time), and the worker's RSS afterwards.

Prints a table and one JSON object (also written to bench/.work/scale-<time>.json). Everything
lives in an isolated server (fresh schemas, dropped at the end). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import dbosify

dbosify.activate()  # before temporalio is imported (scale_probe reads its protos)

from bench import scale_probe as probe  # noqa: E402
from bench.measure import rss_mb  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
TASK_QUEUE = "scale"
NAMESPACE = "scale"
FAR = 3600.0  # timers not in the burst are due an hour or more after the first start


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="10,000 runs")
    p.add_argument("--db", default=DEFAULT_URL, help=f"Postgres URL (default {DEFAULT_URL})")
    p.add_argument("--concurrency", type=int, default=100, help="client starts in flight")
    p.add_argument("--burst-at", type=float, default=None,
                   help="seconds from the first start to the burst (default: estimated once 90%% of"
                   " the runs have started, from the rate at which they reached their wait)")
    p.add_argument("--burst-window", type=float, default=5.0)
    p.add_argument("--idle-seconds", type=float, default=10.0, help="window for the idle CPU")
    p.add_argument("--unsandboxed", action="store_true", help="UnsandboxedWorkflowRunner")
    p.add_argument("--max-cached", type=int, default=None,
                   help="the worker's max_cached_workflows (default: temporalio's, 1,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--py-spy", default=None, metavar="PATH",
                   help="profile each worker with this py-spy binary (GIL holder only; raw stacks in"
                   " the run directory; summarise with python -m bench.profile)")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 10_000
    return args


def plan(runs: int, t0: float) -> tuple[list[tuple[str, float | None]], list[str]]:
    """(workflow id, due) of the runs started first, and the ids of the burst, started last:
    even runs wait on a signal only, those ending in 1 are the burst, and the other odd ones
    sleep until an hour or more after the first start."""
    first: list[tuple[str, float | None]] = []
    burst: list[str] = []
    for i in range(runs):
        wid = f"scale-{i:06d}"
        if i % 10 == 1:
            burst.append(wid)
        else:
            first.append((wid, None if i % 2 == 0 else t0 + FAR + FAR * i / runs))
    return first, burst


def burst_due(args: argparse.Namespace, t0: float, waiting: int) -> float:
    """When the burst falls due, decided once the other runs have started: after the worker
    has caught up with every run (at the rate it has kept so far) and the measurements and the
    restart are over, with a margin."""
    if args.burst_at is not None:
        return t0 + float(args.burst_at)
    now = time.time()
    rate = max(waiting, 1) / max(now - t0, 1.0)  # runs that reached their wait, per second
    return float(now + 1.3 * (args.runs - waiting) / rate + 60 + 2 * args.idle_seconds)


class WorkerProc:
    """A worker process of `bench.scale_app`, its log under the bench's run directory."""

    def __init__(
        self, url: str, log: Path, unsandboxed: bool, py_spy: str | None, max_cached: int | None = None
    ) -> None:
        env = {**os.environ, "DBOSIFY_ACTIVATE": "1"}
        # As in bench/backends.py: without cached bytecode the workflow sandbox compiles the
        # workflow's module from source for every instance; a deployed app has it cached.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cmd = [sys.executable, "-m", "bench.scale", "--worker", url]
        self.log = open(log, "wb")  # noqa: SIM115  (closed in stop)
        cmd += ["--unsandboxed"] if unsandboxed else []
        cmd += [f"--max-cached={max_cached}"] if max_cached is not None else []
        self.proc = subprocess.Popen(cmd, env=env,
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log)
        self.pid = self.proc.pid
        self.spy: subprocess.Popen[bytes] | None = None
        if py_spy:
            self.spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(self.pid), "--rate", "100", "--nonblocking", "--gil",
                 "--format", "raw", "--output", str(log.with_suffix(".profile.txt"))],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"worker did not start; see {self.log.name}")

    def rss(self) -> float:
        return round(rss_mb(self.pid) or 0.0, 1)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait()
        self.log.close()
        if self.spy is not None:
            self.spy.wait()  # it writes its profile once the worker has gone


async def start(client: Any, wid: str, due: float | None) -> None:
    await client.start_workflow("ScaleWaiter", due, id=wid, task_queue=TASK_QUEUE)


async def start_all(client: Any, runs: list[tuple[str, float | None]], concurrency: int) -> float:
    """Start every run, ``concurrency`` calls at a time; returns the wall seconds."""
    it = iter(runs)
    if not runs:
        return 0.0

    async def starter() -> None:
        for wid, due in it:
            await start(client, wid, due)

    t0 = time.monotonic()
    await start(client, *next(it))
    await asyncio.gather(*(starter() for _ in range(concurrency)))
    return time.monotonic() - t0


async def wait_for(
    store: Any, key: str, target: int, timeout: float, worker: WorkerProc | None = None
) -> float | None:
    """Seconds until ``counts()[key]`` reaches ``target``, or None after ``timeout``; raises if
    ``worker`` has exited meanwhile."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if worker is not None and worker.proc.poll() is not None:
            raise RuntimeError(f"the worker exited (code {worker.proc.returncode}); see {worker.log.name}")
        got = await store.transact(NAMESPACE, lambda tx: probe.counts(tx, TASK_QUEUE))
        if got[key] >= target:
            return time.monotonic() - t0
        await asyncio.sleep(1.0)
    return None


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg
    from temporalio.client import Client

    from dbosify._store import SERVER_PARAM, get_store, resolve_url

    server = f"sc{uuid.uuid4().hex[:8]}"
    url = f"{args.db}{'&' if '?' in args.db else '?'}{SERVER_PARAM}={server}"
    rundir = WORK / f"scale-{time.strftime('%Y%m%d-%H%M%S')}"
    rundir.mkdir(parents=True, exist_ok=True)
    store = get_store(resolve_url(url))
    # Registered before the worker starts: a worker on an unknown namespace fails validation.
    await asyncio.to_thread(store.register_namespace, NAMESPACE)
    client = await Client.connect(url, namespace=NAMESPACE)
    admin = psycopg.connect(args.db, autocommit=True)
    out: dict[str, Any] = {"runs": args.runs, "sandboxed": not args.unsandboxed,
                           "load_before": load(), "dir": str(rundir)}
    workers: list[WorkerProc] = []

    def spawn() -> WorkerProc:
        w = WorkerProc(url, rundir / f"worker-{len(workers) + 1}.log", args.unsandboxed, args.py_spy,
                       args.max_cached)
        workers.append(w)
        return w

    try:
        worker = spawn()
        await worker.ready()
        cpu = probe.PhaseCpu(args.db, {"worker": worker.pid, "client": os.getpid()})
        t0 = time.time()
        first, burst_ids = plan(args.runs, t0)
        print(f"scale: starting {args.runs:,} runs", flush=True)
        start_s = await start_all(client, first, args.concurrency)
        # The rate is read once the worker has caught up with a tenth of the runs started.
        await wait_for(store, "waiting", len(first) // 10, timeout=3600, worker=worker)
        counted = await store.transact(NAMESPACE, lambda tx: probe.counts(tx, TASK_QUEUE))
        due = burst_due(args, t0, counted["waiting"])
        spread = [(wid, due + args.burst_window * k / len(burst_ids)) for k, wid in enumerate(burst_ids)]
        print(f"scale: the burst of {len(burst_ids):,} timers falls due in {due - time.time():.0f} s", flush=True)
        start_s += await start_all(client, spread, args.concurrency)
        runs = first + spread
        out["start_s"] = round(start_s, 1)
        out["starts_per_s"] = round(args.runs / start_s, 1)
        waited = await wait_for(store, "waiting", args.runs, timeout=3600, worker=worker)
        assert waited is not None, "runs did not all reach their wait"
        out["all_waiting_s"] = round(time.time() - t0, 1)
        out["cpu_s_to_all_waiting"] = cpu.stop()
        print(f"scale: started in {start_s:.1f} s; all waiting after {out['all_waiting_s']} s", flush=True)
        await asyncio.sleep(5)  # evictions finish, the heap settles
        out["rss_mb"] = worker.rss()
        out["counts"] = await store.transact(NAMESPACE, lambda tx: probe.counts(tx, TASK_QUEUE))
        sessions = probe.session_pids(admin, worker.pid)
        out["idle_cpu_pct"] = await asyncio.to_thread(probe.cpu_percent, [worker.pid], args.idle_seconds)
        out["idle_pg_sessions_cpu_pct"] = await asyncio.to_thread(
            probe.cpu_percent, sessions, args.idle_seconds)
        schema = store.ident(NAMESPACE)
        out["pg_bytes"] = probe.schema_bytes(admin, schema)
        out["pg_tables_bytes"] = probe.table_bytes(admin, schema)
        out["pg_dbos_bytes"] = probe.schema_bytes(admin, store.dbos_schema) if store.dbos_schema else 0
        out["load_idle"] = load()

        # Restart: SIGKILL, a fresh process, and at that moment a signal to a random dormant run
        # and one to a random run the killed worker held (released by the takeover first). The
        # dormant one waits on the signal only: the time to its result. The held ones are the
        # runs started last, the burst's, which sleep until their timer: the time until a query
        # shows the signal handled.
        rng = random.Random(args.seed)
        held = await store.transact(NAMESPACE, lambda tx: probe.owned_ids(tx, TASK_QUEUE))
        targets = {"dormant": rng.choice(sorted({w for w, due in runs if due is None} - set(held))),
                   "held": rng.choice(sorted(held))}
        out["restart_targets"] = {}
        for kind, wid in targets.items():
            state = await store.transact(NAMESPACE, functools.partial(probe.run_state, workflow_id=wid))
            out["restart_targets"][kind] = {"workflow_id": wid, **state}
        worker.stop()
        t1 = time.monotonic()
        worker = spawn()

        async def to_result(wid: str) -> float:
            handle = client.get_workflow_handle(wid)
            await handle.signal("give", "hello")
            assert await handle.result() == "hello"
            return round(time.monotonic() - t1, 2)

        async def to_handled(wid: str) -> float:
            handle = client.get_workflow_handle(wid)
            await handle.signal("give", "hello")
            assert await handle.query("given") == "hello"
            return round(time.monotonic() - t1, 2)

        took = await asyncio.gather(to_result(targets["dormant"]), to_handled(targets["held"]))
        out["restart_to_signal_s"], out["restart_to_signal_held_s"] = took
        await worker.ready()  # long since
        print(f"scale: restart to the signal's result in a dormant run {out['restart_to_signal_s']} s,"
              f" to a query seeing it in a run the killed worker held {out['restart_to_signal_held_s']} s",
              flush=True)
        await asyncio.sleep(5)
        out["rss_mb_after_restart"] = worker.rss()
        out["counts_after_restart"] = await store.transact(NAMESPACE, lambda tx: probe.counts(tx, TASK_QUEUE))

        # The burst.
        out["burst"] = burst = len(burst_ids)
        out["burst_due_in_s_after_restart"] = round(due - time.time(), 1)
        if due < time.time():
            print("scale: the burst fell due before the restart was over (raise --burst-at)", flush=True)
        await asyncio.sleep(max(0.0, due - time.time()))
        cpu = probe.PhaseCpu(args.db, {"worker": worker.pid})
        rss_peak = worker.rss()
        t2 = time.monotonic()
        while time.monotonic() - t2 < 1800:
            got = await store.transact(NAMESPACE, lambda tx: probe.counts(tx, TASK_QUEUE))
            rss_peak = max(rss_peak, worker.rss())
            # (The held run signalled after the restart counts once its signal is handled: the
            # history says when every timer has fired and its run resumed.)
            if got["burst_resumed"] >= burst:
                out["timers"] = await store.transact(NAMESPACE, probe.timer_lateness)
                if out["timers"]["resumed"] >= burst:
                    break
            await asyncio.sleep(1.0)
        out["burst_done_after_due_s"] = round(time.time() - due, 1)
        out["cpu_s_burst"] = cpu.stop()
        out["rss_mb_burst_peak"] = rss_peak
        out["timers"] = await store.transact(NAMESPACE, probe.timer_lateness)
        await asyncio.sleep(5)
        out["rss_mb_after_burst"] = worker.rss()
        out["counts_after_burst"] = await store.transact(NAMESPACE, lambda tx: probe.counts(tx, TASK_QUEUE))
        out["load_after"] = load()
    finally:
        for w in workers:
            w.stop()
        admin.close()
        await asyncio.to_thread(store.drop_server)
    return out


def per_run(cpu: dict[str, float] | None, n: int, keys: tuple[str, ...]) -> str:
    if not cpu:
        return "-"
    ms = [f"{1000 * cpu.get(k, 0.0) / n:.1f}" for k in keys]
    return ", ".join(ms) + " ms"


def table(r: dict[str, Any]) -> str:
    def late(k: str) -> str:
        s = r.get("timers", {}).get(k)
        return "-" if not s else f"{s['p50']} / {s['p99']} / {s['max']}"

    mb = 1024 * 1024
    c = r.get("counts", {})
    rows = [
        ("open runs (signal only / timer, of which burst)",
         f"{r['runs']:,} ({r['runs'] - r['runs'] // 2:,} / {r['runs'] // 2:,}, {r.get('burst', 0):,})"),
        ("time to start all; starts/s", f"{r.get('start_s')} s; {r.get('starts_per_s')}"),
        ("first start to all waiting", f"{r.get('all_waiting_s')} s"),
        ("CPU per run until all wait: worker, its Postgres sessions; client, its sessions",
         per_run(r.get("cpu_s_to_all_waiting"), r["runs"], ("worker", "worker_pg", "client", "client_pg"))),
        ("worker RSS, all waiting", f"{r.get('rss_mb')} MB"),
        ("dormant / owned runs", f"{c.get('dormant', 0):,} / {c.get('owned', 0):,}"),
        ("idle worker CPU; its Postgres sessions", f"{r.get('idle_cpu_pct')}%; {r.get('idle_pg_sessions_cpu_pct')}%"),
        ("Postgres, namespace schema; per run",
         f"{r.get('pg_bytes', 0) / mb:.0f} MB; {r.get('pg_bytes', 0) / r['runs'] / 1024:.1f} KiB"),
        ("Postgres, DBOS rows (schema of their own)", f"{r.get('pg_dbos_bytes', 0) / mb:.0f} MB"),
        ("restart to a signal's result in a dormant run; to its effect in a held run (query)",
         f"{r.get('restart_to_signal_s')} s; {r.get('restart_to_signal_held_s')} s"),
        ("worker RSS after restart", f"{r.get('rss_mb_after_restart')} MB"),
        ("burst timers fired late, p50 / p99 / max", late("fired_late_s") + " s"),
        ("burst workflows resumed late, p50 / p99 / max", late("resumed_late_s") + " s"),
        ("CPU per burst timer: worker, its Postgres sessions",
         per_run(r.get("cpu_s_burst"), r.get("burst") or 1, ("worker", "worker_pg"))),
        ("worker RSS, burst peak / after", f"{r.get('rss_mb_burst_peak')} / {r.get('rss_mb_after_burst')} MB"),
        ("load average before / idle / after", f"{r.get('load_before')} / {r.get('load_idle')} / {r.get('load_after')}"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # a worker process of this bench (WorkerProc)
        from bench.scale_app import worker

        cached = [int(a.split("=", 1)[1]) for a in argv if a.startswith("--max-cached=")]
        asyncio.run(worker(argv[1], NAMESPACE, TASK_QUEUE, "--unsandboxed" not in argv,
                           cached[0] if cached else None))
        return 0
    args = parse(argv)
    result = asyncio.run(run(args))
    print(table(result))
    print(json.dumps(result))
    path = WORK / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
