"""``python -m bench chaos``: run workflows on several worker processes while killing workers,
freezing one past its liveness lease and restarting Postgres; then check that nothing was lost,
done twice or written by a worker that had been replaced. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench import chaos_analysis, chaos_report
from bench.backends import WORK_DIR, _dbosify_env, snapshot_engine
from bench.chaos_db import Db
from bench.chaos_run import ChaosRun, log
from bench.measure import load
from bench.pg_cluster import Cluster, NoCluster

SMOKE = {"workflows": 50, "kills": 2, "freeze_seconds": 10.0, "deadline": 60.0}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench chaos",
        description="Workflows under worker SIGKILLs, a SIGSTOPped worker and a Postgres restart; "
        "reports losses, wrong results, re-runs, takeover times, writes by the replaced worker "
        "and replay failures, and exits non-zero on any fault.",
    )
    p.add_argument("-n", "--workflows", type=int, default=None, help="workflows to run (default 1000; 50 with --smoke)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--kill-every", type=float, default=5.0, metavar="S", help="seconds between SIGKILLs (default 5)")
    p.add_argument("--kills", type=int, default=None,
                   help="stop killing after this many (default: until every workflow finished; 2 with --smoke)")
    p.add_argument("--freeze-seconds", type=float, default=None, metavar="F",
                   help="how long one worker is SIGSTOPped (default 15; 10 with --smoke)")
    p.add_argument("--no-freeze", action="store_true", help="do not freeze a worker")
    p.add_argument("--observe", type=float, default=10.0,
                   help="seconds the frozen worker runs after SIGCONT before it is killed (default 10)")
    p.add_argument("--no-restart", action="store_true", help="do not restart Postgres")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds after the last start by which every workflow must have finished "
                   "(default max(120, 0.3 x workflows); 60 with --smoke)")
    p.add_argument("--rate", type=float, default=None,
                   help="workflow starts per second (default: spread over the fault schedule)")
    p.add_argument("--activity-seconds", type=float, default=0.2, help="each activity sleeps this long")
    p.add_argument("--timer", type=float, default=1.0, help="the workflow's durable timer, seconds")
    p.add_argument("--signal-within", type=float, default=None, metavar="SECONDS",
                   help="each workflow's signal is sent at a random time up to this long after its "
                   "start (default: until the frozen worker is killed, so that its runs keep "
                   "getting signals while it runs again; 20 with --no-freeze)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--db", default=None, metavar="URL",
                       help="use this Postgres instead of a throwaway cluster (no restart then)")
    where.add_argument("--sqlite", action="store_true", help="use embedded SQLite (no restart then)")
    p.add_argument("--smoke", action="store_true", help="about 50 workflows, two kills, one freeze, one restart")
    p.add_argument("--engine", default=None, metavar="REV",
                   help="run dbosify/ as of this git commit (default: the working tree, copied at the start)")
    p.add_argument("--keep", action="store_true", help="keep the engine copy and, with --db, the schemas")
    p.add_argument("--json", type=Path, default=None, help="write the report's JSON here too")
    args = p.parse_args(argv)
    preset: dict[str, Any] = SMOKE if args.smoke else {"workflows": 1000, "freeze_seconds": 15.0}
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.deadline is None:
        args.deadline = max(120.0, 0.3 * args.workflows)
    if args.workers < 2:
        p.error("--workers must be at least 2 (a replacement is started at each kill, but the "
                "frozen worker's runs need a live worker to take them over)")
    return args


def engine_revision(rev: str | None) -> str:
    from bench.cli import engine_revision as working_tree

    return working_tree() if rev is None else rev


def setup_db(args: argparse.Namespace, run_dir: Path, tag: str) -> tuple[Db, Cluster | None, list[str]]:
    notes = []
    if args.sqlite:
        notes.append("embedded SQLite: the Postgres restart is skipped")
        return Db(None, run_dir / "sqlite", tag), None, notes
    if args.db:
        notes.append("Postgres given with --db: the restart is skipped (only a throwaway cluster is restarted)")
        return Db(args.db, None, tag), None, notes
    cluster = Cluster.create()
    notes.append(f"throwaway cluster: {cluster.version()} on port {cluster.port}")
    return Db(cluster.url, None, tag), cluster, notes


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.strftime("%Y%m%d-%H%M%S")
    run_dir = WORK_DIR / "runs" / f"chaos-{started}-{uuid.uuid4().hex[:4]}"
    run_dir.mkdir(parents=True)
    tag = uuid.uuid4().hex[:10]
    namespace = f"chaos-{tag}"
    load_before = load()
    log(f"run directory {run_dir}; machine: {load_before}")
    engine = engine_revision(args.engine)
    where = snapshot_engine(run_dir / "engine", args.engine)
    log(f"engine: a copy of dbosify/ at {engine}: {where}")
    try:
        db, cluster, notes = setup_db(args, run_dir, tag)
    except NoCluster as err:
        log(f"cannot start a throwaway Postgres cluster: {err} (use --db URL or --sqlite)")
        return 2
    for n in notes:
        log(n)
    # Every worker and client process registers the namespace as it connects (DBOSIFY_NAMESPACES).
    env = {**_dbosify_env(), "DBOSIFY_NAMESPACES": namespace}
    run = ChaosRun(args, db, cluster, env, sys.executable, run_dir, namespace)
    t_start = time.monotonic()
    error = None
    replay: dict[str, Any] = {}
    execs: list[dict[str, Any]] = []
    try:
        db.create_record()
        run.run()
        replay = run.fetch_histories()
        execs = db.executions()
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        log(f"the run failed: {error}")
    finally:
        run.close()
        db.close()
        if cluster is not None:
            cluster.close(keep_log=run_dir / "postgres.log")
        elif args.db and not args.keep:
            try:
                db.drop(namespace)
            except Exception as err:
                notes.append(f"could not drop the run's schemas: {err}")
            db.close()
        if not args.keep:
            shutil.rmtree(run_dir / "engine", ignore_errors=True)
    histories = replay.pop("histories", {})
    freeze = run.freeze_record()
    metrics = chaos_analysis.analyse(
        ids=[f"{namespace}-{i:05d}" for i in range(args.workflows)], results=run.results,
        failed=run.failed, signal_retried=run.signal_retried, execs=execs, histories=histories,
        kills=[k.as_dict() for k in run.kills], freeze=freeze, replay=replay, timer=args.timer,
    )
    if error:
        metrics["faults"].insert(0, f"the run failed: {error}")
    if cluster is not None and not args.no_restart and not run.restart:
        notes.append("the Postgres restart did not happen (the load ended first)")
    payload = {
        "info": {
            "started": started, "argv": sys.argv[1:] if argv is None else argv,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "engine": engine, "namespace": namespace, "backend": "sqlite" if args.sqlite else "postgres",
            "wall_s": time.monotonic() - t_start, "load_before": load_before, "load_after": load(),
            "notes": notes + run.client_notes[:20], "run_dir": str(run_dir),
        },
        "timeline": run.timeline,
        "restart": run.restart or None,
        "freeze": freeze,
        "kills": [k.as_dict() for k in run.kills],
        "metrics": metrics,
    }
    text = json.dumps(payload, indent=1, default=str)
    (run_dir / "chaos.json").write_text(text)
    if args.json:
        args.json.write_text(text)
    print(chaos_report.render(payload))
    log(f"report: {run_dir / 'chaos.json'}")
    return 1 if metrics["faults"] else 0
