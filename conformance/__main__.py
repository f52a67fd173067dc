"""python -m conformance: run the upstream sdk-python suite on dbosify and report."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
from pathlib import Path

from conformance import (
    baseline,
    contrib,
    devserver,
    pins,
    report,
    results,
    run,
    scope,
    upstream,
    venv,
)
from conformance import db as dbmod
from conformance import expectations as exps
from conformance.paths import DEFAULT_REPORT_DIR, EXPECTATIONS, FAST_LIST, PLUGIN_DIR

EXIT_OK, EXIT_NEWLY_FAILING, EXIT_RUNNER_ERROR = 0, 1, 2
ARTIFACTS = ("junit.xml", "results.jsonl", "collected.tsv", "deselect.tsv", "pytest.log",
             "report.md", "report.json", "preflight.json")


def log(msg: str) -> None:
    print(f"conformance: {msg}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Run the upstream temporalio/sdk-python tests on dbosify and compare the "
        "outcomes with conformance/expectations.tsv. Exit 0 when nothing expected to pass "
        "failed, 1 when something did, 2 when the runner itself could not run.",
        epilog="Arguments after `--` go to pytest unchanged.",
    )
    p.add_argument("selection", nargs="*",
                   help="pytest paths or node ids relative to the upstream root, e.g. "
                   "tests/test_workflow.py (default: all of tests/ but contrib; with --contrib: "
                   "tests/contrib)")
    p.add_argument("--contrib", action="store_true",
                   help="collect the contrib (plugin) suites too, installing each suite's "
                   "pinned dependencies into the venv first; alone, runs all of tests/contrib")
    p.add_argument("--server", choices=("dbosify", "devserver"), default="dbosify",
                   help="dbosify (default): the hook on a fresh database; devserver: no hook, "
                   "a real `temporal server start-dev` started for the run (for baselines)")
    p.add_argument("--temporal-cli", metavar="PATH",
                   help=f"with --server devserver: the temporal CLI (default: ${devserver.DEFAULT_BINARY_ENV}, "
                   "then `temporal` on PATH)")
    p.add_argument("--upstream", metavar="PATH",
                   help="upstream checkout or bare git dir (default: $DBOSIFY_UPSTREAM, then known "
                   "locations, then a shallow clone of the pinned commit)")
    p.add_argument("--ref", default=pins.UPSTREAM_SHA,
                   help=f"upstream commit to export (default: the pin, {pins.UPSTREAM_SHA[:12]})")
    p.add_argument("--no-clone", action="store_true", help="never try to clone the upstream repo")
    p.add_argument("--db", choices=("postgres", "sqlite"), default="postgres",
                   help="database for DBOSIFY_DATABASE_URL; postgres server from "
                   "$DBOSIFY_TEST_DATABASE_URL (default: %(default)s)")
    p.add_argument("--keep-db", action="store_true", help="do not drop the run's database")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression")
    p.add_argument("--fast", action="store_true",
                   help=f"run the curated quick selection in {FAST_LIST.name} (for CI)")
    p.add_argument("--strict", action="store_true",
                   help="also fail (exit 1) when a test expected to fail passed: the expectations "
                   "must match the run exactly (CI's gate on the fast selection)")
    p.add_argument("--workers", type=int, default=2,
                   help="pytest-xdist workers; 0 or 1 runs in one process (default: %(default)s)")
    p.add_argument("--report", metavar="DIR", type=Path, default=DEFAULT_REPORT_DIR,
                   help="where report.md, report.json, junit.xml and pytest.log go "
                   "(default: conformance/.work/report)")
    p.add_argument("--max-minutes", type=float,
                   help="overall deadline for the pytest run (default: 120, or 6 with --fast)")
    p.add_argument("--timeout", type=float,
                   help="per-test timeout in seconds (default: upstream's, 60)")
    p.add_argument("--upstream-ini-only", action="store_true",
                   help="keep upstream's timeout_func_only=true (by default fixtures are bounded "
                   "by the per-test timeout too, so a hanging fixture cannot wedge the run)")
    p.add_argument("--include-out-of-scope", action="store_true",
                   help="also run tests that expectations.tsv marks out-of-scope")
    p.add_argument("--from-report", metavar="DIR", type=Path, action="append",
                   help="with --update-expectations: a report dir to read; repeat it to promote "
                   "only tests that passed in every one (guards against flaky passes)")
    p.add_argument("--rerun-failures-of", metavar="DIR", type=Path,
                   help="select the tests that failed or errored in that report (for a "
                   "baseline's serial rerun)")
    p.add_argument("--expectations", type=Path, default=EXPECTATIONS, help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not echo pytest's output (it is still in pytest.log)")
    p.add_argument("--python", help="interpreter for the venv (default: the one running this)")
    p.add_argument("--rebuild-venv", action="store_true", help="recreate the venv")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--update-expectations", action="store_true",
                      help="promote the tests that passed in the last report (--report DIR, or "
                      "every --from-report DIR) to `pass` in expectations.tsv; never demotes; "
                      "runs nothing")
    mode.add_argument("--init-expectations", metavar="BASELINE_TSV", type=Path,
                      help="(re)generate expectations.tsv from a dev-server baseline and "
                      "conformance/scope.py, keeping `pass` and COMPAT rows; runs nothing")
    mode.add_argument("--write-baseline", metavar="TSV", type=Path,
                      help="write a dev-server baseline TSV from --from-report DIR (the parallel "
                      "run) and an optional second --from-report DIR (the serial rerun of its "
                      "failures, --rerun-failures-of); runs nothing")
    mode.add_argument("--check-upstream", action="store_true",
                      help="exit 0 if an upstream checkout with the pinned commit is available "
                      "locally (no network), else 1; runs nothing")
    return p


# ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = parser().parse_args(argv)
    if args.update_expectations:
        return cmd_update(args)
    if args.init_expectations:
        return cmd_init(args)
    if args.check_upstream:
        return cmd_check(args)
    if args.write_baseline:
        return cmd_write_baseline(args)
    if args.fast and args.selection:
        log("--fast and an explicit selection do not mix")
        return EXIT_RUNNER_ERROR
    return cmd_run(args, extra)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        src = upstream.locate(args.upstream, args.ref, allow_clone=False, log=log)
    except upstream.UpstreamError as e:
        print(f"conformance: no upstream checkout: {str(e).splitlines()[0]}")
        return 1
    print(f"conformance: upstream available at {src}")
    return 0


def cmd_write_baseline(args: argparse.Namespace) -> int:
    dirs = args.from_report or []
    if not 1 <= len(dirs) <= 2:
        log("--write-baseline needs one or two --from-report DIR (parallel run, serial rerun)")
        return EXIT_RUNNER_ERROR
    passed, failed, skipped = baseline.write(args.write_baseline, dirs[0],
                                             dirs[1] if len(dirs) > 1 else None)
    log(f"wrote {args.write_baseline}: {passed} passed, {failed} failed, {skipped} skipped")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    baseline = exps.read_baseline(args.init_expectations)
    existing = exps.load(args.expectations)
    rows = exps.initial(baseline, existing)
    exps.save(args.expectations, rows)
    counts: dict[str, int] = {}
    for e in rows.values():
        counts[e.expect] = counts.get(e.expect, 0) + 1
    log(f"wrote {args.expectations}: {len(rows)} tests, "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return EXIT_OK


def _report_outcomes(report_dir: Path) -> dict[exps.TestId, str] | None:
    path = report_dir / "report.json"
    if not path.exists():
        log(f"no report at {path}: run the suite first")
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    sha = data.get("meta", {}).get("upstream_sha")
    if sha and sha != pins.UPSTREAM_SHA:
        log(f"WARNING: {path} is for upstream {sha[:12]}, not the pinned {pins.UPSTREAM_SHA[:12]}")
    return {(t["classname"], t["name"]): t["outcome"] for t in data.get("tests", [])
            if t["name"] != results.COLLECT}


def combine_outcomes(runs: list[dict[exps.TestId, str]]) -> list[tuple[exps.TestId, str]]:
    """One outcome per test over several reports: `passed` only if it passed in every one."""
    out = []
    for tid in sorted(set().union(*runs)):
        seen = [r.get(tid) for r in runs]
        if all(o == "passed" for o in seen):
            out.append((tid, "passed"))
        elif any(o in ("failed", "error") for o in seen):
            out.append((tid, "failed"))
        elif any(o == "passed" for o in seen):
            out.append((tid, "unconfirmed"))  # passed somewhere, absent elsewhere
        else:
            out.append((tid, next((o for o in seen if o), "not-run")))
    return out


def cmd_update(args: argparse.Namespace) -> int:
    dirs = args.from_report or [args.report]
    runs = []
    for d in dirs:
        got = _report_outcomes(d)
        if got is None:
            return EXIT_RUNNER_ERROR
        runs.append(got)
    rows = exps.load(args.expectations)
    res = exps.promote(rows, combine_outcomes(runs))
    exps.save(args.expectations, rows)
    log(f"promoted {len(res.promoted)} test(s) to `pass`"
        + (f" (passed in all {len(dirs)} reports)" if len(dirs) > 1 else "")
        + (f", added {len(res.added)} new passing id(s)" if res.added else ""))
    for tid in res.promoted + res.added:
        print(f"  + {tid[0]}::{tid[1]}")
    if res.passing_out_of_scope:
        log(f"{len(res.passing_out_of_scope)} out-of-scope test(s) passed; left out-of-scope "
            "(change by hand if the scope decision changed):")
        for tid in res.passing_out_of_scope:
            print(f"  ? {tid[0]}::{tid[1]}")
    if res.still_failing_expected_pass:
        log(f"{len(res.still_failing_expected_pass)} test(s) expected to pass failed; "
            "left as `pass` (never demoted): fix them or demote by hand with a reason")
        for tid in res.still_failing_expected_pass:
            print(f"  - {tid[0]}::{tid[1]}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
_PREFLIGHT = r"""
import json, sys
info = {"python": sys.version.split()[0]}
try:
    import importlib.metadata as md
    import temporalio
    info["temporalio"] = md.version("temporalio") + " at " + str(temporalio.__file__)
    import temporalio.bridge.temporal_sdk_bridge as m
    spec = getattr(m, "__spec__", None)
    origin = getattr(m, "__file__", None) or (spec.origin if spec else None)
    info["native_name"] = getattr(m, "__name__", "?")
    info["native_origin"] = origin
    info["active"] = bool((origin and "dbosify" in origin.replace("\\", "/").split("/"))
                          or str(getattr(m, "__name__", "")).startswith("dbosify"))
except BaseException as e:
    info["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(info))
"""


def preflight(py: Path, cwd: Path, env: dict[str, str]) -> dict:
    try:
        res = subprocess.run([str(py), "-c", _PREFLIGHT], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "importing temporalio with DBOSIFY_ACTIVATE=1 hung for 120 s"}
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (res.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"preflight crashed (exit {res.returncode}): {tail}"}


def out_of_scope_ignores(up_root: Path) -> list[str]:
    """Paths never collected: always-ignored ones plus whole out-of-scope modules/dirs."""
    paths = list(pins.ALWAYS_IGNORED)
    for prefix in scope.OUT_OF_SCOPE_MODULES:
        rel = prefix.replace(".", "/")
        if (up_root / rel).is_dir():
            paths.append(rel)
        elif (up_root / f"{rel}.py").is_file():
            paths.append(f"{rel}.py")
    return paths


def read_fast_list() -> list[str]:
    out = []
    for line in FAST_LIST.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    started = _dt.datetime.now().astimezone()
    report_dir: Path = args.report.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        (report_dir / name).unlink(missing_ok=True)
    warnings: list[str] = []

    # 1. upstream tests
    try:
        src = upstream.locate(args.upstream, args.ref, allow_clone=not args.no_clone, log=log)
        up = upstream.materialise(src, args.ref, log)
    except upstream.UpstreamError as e:
        log(str(e))
        return EXIT_RUNNER_ERROR
    if not up.pinned:
        warnings.append(f"upstream {up.sha[:12]} is not the pinned commit {pins.UPSTREAM_SHA[:12]}: "
                        "expectations may not match")
    log(f"upstream tests: {up.root} (from {up.source})")

    # 2. venv
    try:
        py = venv.ensure(log, python=args.python, rebuild=args.rebuild_venv)
    except (venv.VenvError, subprocess.CalledProcessError) as e:
        log(str(e))
        return EXIT_RUNNER_ERROR

    selection = run_selection(args)
    suites = contrib.suites_for(selection, contrib_flag=args.contrib)
    if suites:
        try:
            done = contrib.ensure(py, suites, log)
        except venv.VenvError as e:
            log(str(e))
            return EXIT_RUNNER_ERROR
        if done:
            log(f"contrib dependencies installed for: {', '.join(done)}")

    if args.server == "devserver":
        try:
            server = devserver.start(devserver.find_binary(args.temporal_cli),
                                     up.root / "tests" / "conftest.py", report_dir / "devserver.log")
        except devserver.DevServerError as e:
            log(f"dev server: {e}")
            return EXIT_RUNNER_ERROR
        log(f"dev server: pid {server.proc.pid} on {server.target}")
        try:
            return _run_with_db(args, extra, up, py, None, report_dir, started, warnings,
                                server_target=server.target)
        finally:
            server.stop()

    # 3. database
    try:
        database = dbmod.create(args.db, py, report_dir)
    except dbmod.DatabaseError as e:
        log(f"database: {e}")
        return EXIT_RUNNER_ERROR
    log(f"database: {database.display}")

    try:
        return _run_with_db(args, extra, up, py, database, report_dir, started, warnings)
    finally:
        if args.keep_db:
            log(f"keeping database {database.display}")
        else:
            try:
                dropped = dbmod.drop(database, py)
                log(f"dropped database(s): {dropped or '(none left)'}")
            except (dbmod.DatabaseError, subprocess.TimeoutExpired) as e:
                log(f"WARNING: could not drop database {database.name}: {e}")


def run_selection(args: argparse.Namespace) -> list[str]:
    if args.fast:
        return read_fast_list()
    if args.rerun_failures_of:
        return baseline.failed_node_ids(args.rerun_failures_of)
    if args.selection:
        return list(args.selection)
    return [pins.CONTRIB_DIR] if args.contrib else ["tests"]


def contrib_collected(args: argparse.Namespace, selection: list[str]) -> bool:
    return args.contrib or any(
        contrib.suite_of(p) is not None or p.split("::", 1)[0].strip("/") == pins.CONTRIB_DIR
        for p in selection)


def _run_with_db(args: argparse.Namespace, extra: list[str], up: upstream.Upstream, py: Path,
                 database: dbmod.FreshDatabase | None, report_dir: Path, started: _dt.datetime,
                 warnings: list[str], server_target: str | None = None) -> int:
    expectations = exps.load(args.expectations)
    # PYTHONDONTWRITEBYTECODE is dropped too: the workflow sandbox re-imports each test module
    # per workflow instance, and without cached bytecode it recompiles the 10,000-line
    # tests/worker/test_workflow.py every time (about 0.7 s on the event loop thread).
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONHOME",
                        "PYTHONDONTWRITEBYTECODE")}
    venv_dir = py.parent.parent
    env.update({
        "VIRTUAL_ENV": str(venv_dir),
        "PATH": f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(PLUGIN_DIR),
        "DBOSIFY_CONFORMANCE_RESULTS": str(report_dir / "results.jsonl"),
        "DBOSIFY_CONFORMANCE_COLLECTED": str(report_dir / "collected.tsv"),
        "DBOSIFY_CONFORMANCE_DESELECT": str(report_dir / "deselect.tsv"),
    })

    if database is not None:
        env.update({"DBOSIFY_ACTIVATE": "1", "DBOSIFY_DATABASE_URL": database.url})
    else:
        env.pop("DBOSIFY_ACTIVATE", None)

    # 4. is the engine actually in place?
    pre = preflight(py, up.root, env)
    (report_dir / "preflight.json").write_text(json.dumps(pre, indent=1) + "\n")
    if database is None:
        native = ("temporalio's own (dev server at " + str(server_target) + ")"
                  + (f"; WARNING: {pre['error']}" if "error" in pre else ""))
        if pre.get("active"):
            warnings.append("dbosify's hook is active in a dev-server run")
    elif "error" in pre:
        native = f"IMPORT FAILED: {pre['error']}"
        warnings.append(f"importing temporalio.bridge.temporal_sdk_bridge with DBOSIFY_ACTIVATE=1 failed: {pre['error']}")
    elif pre.get("active"):
        native = f"dbosify ({pre.get('native_name')} from {pre.get('native_origin')})"
    else:
        native = f"NOT dbosify: {pre.get('native_name')} from {pre.get('native_origin')}"
        warnings.append("the import hook is not active: temporalio.bridge.temporal_sdk_bridge is "
                        f"{pre.get('native_origin')}, not dbosify's (results are not about dbosify)")
    log(f"native module: {native}")

    # 5. selection
    deselect: set[exps.TestId] = set()
    ignores = list(pins.ALWAYS_IGNORED)
    if not args.include_out_of_scope:
        deselect = {tid for tid, e in expectations.items() if e.expect == "out-of-scope"}
        ignores = out_of_scope_ignores(up.root)
    selection = run_selection(args)
    if not contrib_collected(args, selection):
        ignores.append(pins.CONTRIB_DIR)
    (report_dir / "deselect.tsv").write_text("".join(f"{c}\t{n}\n" for c, n in sorted(deselect)))
    default_selection = (not args.fast and not args.selection and not args.keyword
                         and not args.contrib and not args.rerun_failures_of)
    max_minutes = args.max_minutes if args.max_minutes is not None else (6.0 if args.fast else 120.0)

    cmd = [str(py), "-m", "pytest",
           "-c", str(up.root / "pyproject.toml"), "--rootdir", str(up.root),
           "-p", "dbosify_conformance_plugin",
           f"--junitxml={report_dir / 'junit.xml'}",
           "-o", f"cache_dir={report_dir / '.pytest_cache'}",
           "--continue-on-collection-errors", "-rfE",
           # Native tracebacks: pytest's short/long formats re-parse test sources with `ast`,
           # which CPython 3.11 can fail inside ("AST constructor recursion depth mismatch")
           # after a timeout, turning one failure into an INTERNALERROR that ends the run.
           "--tb=native"]
    if not args.upstream_ini_only:
        cmd += ["-o", "timeout_func_only=false"]
    if args.timeout is not None:
        cmd += [f"--timeout={args.timeout:g}"]
    if args.workers >= 2:
        cmd += ["-n", str(args.workers), "--dist", "worksteal"]
    else:
        cmd += ["-p", "no:xdist"]
    for path in ignores:
        cmd += [f"--ignore={path}"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    if server_target is not None:
        cmd += [f"--workflow-environment={server_target}"]
    cmd += [*selection, *extra]

    log(f"running pytest ({'--fast, ' if args.fast else ''}{args.workers} worker(s), "
        f"deadline {max_minutes:g} min); log: {report_dir / 'pytest.log'}")
    outcome = run.run(cmd, cwd=up.root, env=env, log_path=report_dir / "pytest.log",
                      deadline_seconds=max_minutes * 60, echo=not args.quiet, log=log)
    if outcome.stopped_at_deadline:
        warnings.append(f"the run hit its overall deadline of {max_minutes:g} min and was stopped; "
                        "tests that had not finished are counted as not run / interrupted")
    if outcome.interrupted_by_user:
        warnings.append("the run was interrupted by the user")
    if outcome.returncode == 5:
        warnings.append("pytest collected no tests"
                        + ("" if args.include_out_of_scope else
                           " (is the selection out of scope? see --include-out-of-scope)"))

    # 6. results and report
    got = results.merge(results.parse_junit(report_dir / "junit.xml"),
                        results.parse_jsonl(report_dir / "results.jsonl"))
    collected = results.parse_collected(report_dir / "collected.tsv")
    files = None
    if not default_selection:
        files = {report.module_file(c) for c, _ in got} | {report.module_file(c) for c, _ in collected or ()}
    meta = {
        "upstream": f"{pins.UPSTREAM_REPO} @ {up.sha}"
                    + (f" ({pins.UPSTREAM_DESCRIBE})" if up.pinned else " (NOT the pinned commit)"),
        "upstream_sha": up.sha,
        "upstream_source": str(up.source),
        "database": (f"{database.kind}: {database.display}" if database is not None
                     else f"none: real dev server at {server_target}"),
        "server": args.server,
        "native_module": native,
        "temporalio": pre.get("temporalio", "?"),
        "selection": ("--fast" if args.fast else " ".join(selection))
                     + (f" -k {args.keyword!r}" if args.keyword else "")
                     + (" (out-of-scope included)" if args.include_out_of_scope else ""),
        "workers": args.workers,
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": outcome.seconds,
        "pytest_exit_code": outcome.returncode,
        "stopped_at_deadline": outcome.stopped_at_deadline,
        "command": cmd,
        "warnings": warnings,
    }
    rep = report.build(got, collected, expectations, deselected=deselect,
                       files_in_scope_of_run=files, meta=meta)
    md, js = report.write(rep, report_dir)
    print(rep.banner(), flush=True)
    log(f"report: {md}")

    if outcome.returncode in (3, 4) and not outcome.stopped_at_deadline:
        log(f"pytest could not run (exit {outcome.returncode}: internal or usage error); "
            f"see {report_dir / 'pytest.log'}")
        return EXIT_RUNNER_ERROR
    if outcome.interrupted_by_user:
        return EXIT_RUNNER_ERROR
    if args.strict and rep.newly_passing:
        log("--strict: tests expected to fail passed; promote them with --update-expectations")
        return EXIT_NEWLY_FAILING
    return EXIT_OK if rep.gate_ok else EXIT_NEWLY_FAILING


if __name__ == "__main__":
    sys.exit(main())
