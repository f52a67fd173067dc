"""``python -m bench``: run the workloads on every backend, interleaved, and print the table."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import pgbench, report
from bench.backends import (
    BACKENDS,
    DEFAULT_PG,
    WORK_DIR,
    DbosifyPgBackend,
    DbosifyPgNoDbosBackend,
    DbosifySqliteBackend,
    TemporalBackend,
    Unavailable,
    snapshot_engine,
)
from bench.measure import load
from bench.session import Session
from bench.workloads import WORKLOADS, Context, Sizes

ALL_WORKLOADS = [*WORKLOADS, "pgbench"]


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the same temporalio app on Temporal and on dbosify, interleaved, "
        "and print medians and ratios.",
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (CI)")
    p.add_argument("--repeat", type=int, default=None, help="repeats per workload (default 3; 1 with --smoke)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma list of " + ", ".join(BACKENDS))
    p.add_argument("--workloads", default=",".join(ALL_WORKLOADS), help="comma list of " + ", ".join(ALL_WORKLOADS))
    p.add_argument("--pg-url", default=os.environ.get("DBOSIFY_TEST_DATABASE_URL") or DEFAULT_PG,
                   help="Postgres to create bench_* databases on (default: %(default)s)")
    p.add_argument("--no-install", action="store_true",
                   help="do not create the Temporal venv; skip `temporal` if it is missing")
    p.add_argument("--require", default="",
                   help="comma list of backends that must be available (else exit 2)")
    p.add_argument("--keep", action="store_true", help="keep every run's directory (logs, databases)")
    p.add_argument("--json", type=Path, default=None, help="write the raw results here too")
    p.add_argument("--engine", default=None, metavar="REV",
                   help="run the dbosify side on dbosify/ as of this git commit (default: the working tree)")
    p.add_argument("--py-spy", default=None, metavar="PATH",
                   help="profile the first worker of every dbosify run with this py-spy binary "
                   "(collapsed stacks kept in the run directory; summarise with python -m bench.profile)")
    sizes = p.add_argument_group("sizes (defaults: the issue's; --smoke shrinks them)")
    for name in ("n", "m", "k", "s", "q", "u", "t", "crash_workflows", "crash_activities",
                 "crash_kill_after", "waiters"):
        sizes.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    p.add_argument("--pgbench-seconds", type=int, default=None, help="per pgbench run (default 5; 1 with --smoke)")
    return p.parse_args(argv)


def make_backends(names: list[str], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    made: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            if name == "temporal":
                made[name] = TemporalBackend(log, install=not args.no_install)
            elif name == "dbosify-pg":
                made[name] = DbosifyPgBackend(args.pg_url)
            elif name == "dbosify-pg-nodbos":
                made[name] = DbosifyPgNoDbosBackend(args.pg_url)
            elif name == "dbosify-sqlite":
                made[name] = DbosifySqliteBackend()
            else:
                raise SystemExit(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
        except Unavailable as err:
            missing[name] = str(err)
            log(f"{name} unavailable: {err}")
    return made, missing


def run_one(workload: str, backend: Any, sizes: Sizes, workdir: Path, py_spy: str | None = None) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    t0 = time.monotonic()
    env = backend.fresh(workdir)
    out_setup = time.monotonic() - t0
    session = Session(env, workdir, py_spy if backend.name != "temporal" else None)
    out: dict[str, Any] = {"setup_s": out_setup}
    try:
        ctx = Context(session, sizes, tag=f"{workload.lower()}", backend=backend)
        out["metrics"] = WORKLOADS[workload](ctx)
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {err}"
        if not isinstance(err, RuntimeError):
            out["traceback"] = traceback.format_exc()
    finally:
        t_close = time.monotonic()
        session.close(sizes.shutdown_grace)
        env.close()
        out["close_s"] = time.monotonic() - t_close
    out["notes"] = session.notes + env.notes
    out["wall_s"] = time.monotonic() - t0
    return out


def engine_revision() -> str:
    """The commit the dbosify side ran, and whether dbosify/ had uncommitted edits."""
    import subprocess

    from bench.backends import REPO_ROOT

    def git(*a: str) -> str:
        res = subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "dbosify")
    return head + (" + uncommitted edits in dbosify/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = Sizes.smoke() if args.smoke else Sizes()
    for name in ("n", "m", "k", "s", "q", "u", "t", "crash_workflows", "crash_activities",
                 "crash_kill_after", "waiters"):
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    repeat = args.repeat if args.repeat is not None else (1 if args.smoke else 3)
    pgbench_seconds = args.pgbench_seconds or (1 if args.smoke else 5)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in ALL_WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; choose from {', '.join(ALL_WORKLOADS)}")
    names = [b.strip() for b in args.backends.split(",") if b.strip()]

    started = time.strftime("%Y%m%d-%H%M%S")
    load_before = load()
    log(f"machine: {load_before}")
    # The pid keeps two runs started in the same second (e.g. the smoke tests) apart.
    run_dir = WORK_DIR / "runs" / f"{started}-{os.getpid()}"
    engine = engine_revision() if args.engine is None else args.engine
    if any(n.startswith("dbosify") for n in names):
        where = snapshot_engine(run_dir / "engine", args.engine)
        log(f"dbosify side runs a snapshot of dbosify/ at {engine}: {where}")
    backends, missing = make_backends(names, args)
    required = [b.strip() for b in args.require.split(",") if b.strip()]
    if any(r in missing for r in required):
        log("a required backend is unavailable")
        return 2

    results: list[dict[str, Any]] = []
    pg_rates: dict[str, list[float]] = {"1": [], "8": []}
    pg_error: str | None = None

    if "pgbench" in workloads:
        admin = backends.get("dbosify-pg")
        if admin is None:
            try:
                admin = DbosifyPgBackend(args.pg_url)
            except Unavailable as err:
                pg_error = str(err)
        if admin is not None and pgbench.available() is None:
            pg_error = "pgbench not installed (Debian package postgresql-contrib / postgresql-client)"
        if admin is not None and pg_error is None:
            for r in range(repeat):
                for clients in (1, 8):
                    try:
                        tps = pgbench.commit_rate(admin, clients, pgbench_seconds)
                        pg_rates[str(clients)].append(tps)
                        log(f"pgbench r{r + 1}/{repeat} {clients} client(s): {tps:.0f} commits/s")
                    except Exception as err:
                        pg_error = str(err)
                        log(f"pgbench: {err}")

    for workload in [w for w in workloads if w != "pgbench"]:
        for r in range(repeat):
            for name in names:
                if name not in backends:
                    continue
                workdir = run_dir / f"{workload}-{name}-r{r + 1}"
                log(f"{workload} {name} r{r + 1}/{repeat} ...")
                out = run_one(workload, backends[name], sizes, workdir, args.py_spy)
                out.update(workload=workload, backend=name, repeat=r + 1, workdir=str(workdir))
                results.append(out)
                if "error" in out:
                    log(f"{workload} {name} r{r + 1}: FAILED: {out['error']} (logs kept in {workdir})")
                else:
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in out["metrics"].items())
                    log(f"{workload} {name} r{r + 1}: {shown} ({out['wall_s']:.1f} s; "
                        f"db {out['setup_s']:.1f} s, teardown {out['close_s']:.1f} s)")
                    if not args.keep and not (args.py_spy and name != "temporal"):
                        shutil.rmtree(workdir, ignore_errors=True)
                for note in out["notes"]:
                    log(f"{workload} {name} r{r + 1}: note: {note}")

    load_after = load()
    info: dict[str, Any] = {
        "started": started,
        "argv": sys.argv[1:] if argv is None else argv,
        "smoke": args.smoke,
        "repeat": repeat,
        "sizes": asdict(sizes),
        "load_before": load_before,
        "load_after": load_after,
        "missing": missing,
        "pgbench": {"commits_per_s": pg_rates, "error": pg_error, "seconds": pgbench_seconds},
        "versions": {},
    }
    if "temporal" in backends:
        info["versions"]["temporal"] = backends["temporal"].version()
    if "dbosify-pg" in backends:
        b = backends["dbosify-pg"]
        info["versions"]["postgres"] = b.server_version
        info["postgres_settings"] = b.settings
    info["engine"] = engine
    payload = {"info": info, "results": results}
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    out_path = args.json or (WORK_DIR / f"results-{started}.json")
    out_path.write_text(json.dumps(payload, indent=1))
    print(report.render(payload, names))
    log(f"raw results: {out_path}")
    if not args.keep:
        shutil.rmtree(run_dir / "engine", ignore_errors=True)
        if run_dir.exists() and not any(run_dir.iterdir()):
            run_dir.rmdir()
    failed = [r for r in results if "error" in r]
    return 1 if failed else 0
