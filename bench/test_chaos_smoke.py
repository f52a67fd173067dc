"""The chaos harness, ``python -m bench chaos``: its smoke run, and its analysis on made-up records.

``test_chaos_smoke`` runs ``python -m bench chaos --smoke`` in a subprocess (about a minute: 50
workflows, two SIGKILLs, one worker SIGSTOPped past its lease, one Postgres restart, on a
throwaway cluster the harness starts itself) and asserts that it exits 0. It is skipped, with
the reason, when PostgreSQL's server binaries are not installed or no cluster can be started.

The other tests hand `bench/chaos_analysis.py` histories and activity executions with a known
fault in each, so that every fault the harness must report is known to be reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import chaos_analysis as ca
from bench.pg_cluster import server_bindir

REPO = Path(__file__).resolve().parent.parent
LIMIT = 240  # seconds; the smoke takes about one minute on two cores


@pytest.mark.timeout(LIMIT + 60)
def test_chaos_smoke(tmp_path: Path) -> None:
    if server_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres) under "
                    "/usr/lib/postgresql/*/bin or on PATH: the chaos smoke needs a cluster of its own")
    env = dict(os.environ)
    env.pop("DBOSIFY_ACTIVATE", None)
    out = tmp_path / "chaos.json"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "chaos", "--smoke", "--json", str(out)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=LIMIT,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"bench chaos --smoke did not finish within {LIMIT} s:\n{str(err.stderr)[-3000:]}")
    output = proc.stdout + proc.stderr
    if proc.returncode == 2 and "cannot start a throwaway Postgres cluster" in output:
        pytest.skip(output.strip().splitlines()[-1])
    assert proc.returncode == 0, output[-5000:]
    m = json.loads(out.read_text())
    assert m["metrics"]["workflows"]["completed"] == 50
    assert m["metrics"]["takeover"]["kills"] == 2
    assert m["metrics"]["fenced"]["runs_owned_at_freeze"] >= 1, "the frozen worker owned no run"
    assert m["restart"] and m["restart"].get("seconds") is not None, m["restart"]
    assert m["metrics"]["replay"]["replayed"] == 50


# --------------------------------------------------------------------------- the analysis


def ev(i: int, kind: str, t: float, who: str = "", attempt: int = 0, sched: int = 0, act: str = "") -> list:
    return [i, kind, t, who, attempt, sched, act]


def execution(act: str, attempt: int, pid: int, start: float, end: float | None, wid: str = "w") -> dict:
    return {"exec_id": f"{act}{attempt}{pid}", "workflow_id": wid, "activity": act, "attempt": attempt,
            "pid": pid, "identity": f"chaos-worker-{pid}@h", "started_at": start, "ended_at": end}


def one_activity(attempt: int, pid: int, t: float) -> list[list]:
    """A history whose activity ``first`` has an outcome from ``attempt`` run by ``pid``."""
    who = f"chaos-worker-{pid}@h"
    return [ev(5, "ACTIVITY_TASK_SCHEDULED", 1.0, act="first"),
            ev(6, "ACTIVITY_TASK_STARTED", t, who, attempt, 5), ev(7, "ACTIVITY_TASK_COMPLETED", t, who, 0, 5)]


def test_outcomes_lost_wrong_and_a_resent_signal() -> None:
    ids = ["a", "b", "c", "d", "e"]
    results = {"a": ca.expected_result("a"), "b": "nonsense", "c": ca.expected_result("c", 2),
               "d": ca.expected_result("d", 2)}
    got = ca.outcomes(ids, results, {}, signal_retried={"d"})
    assert (got["completed"], got["lost"], got["wrong_results"]) == (2, 1, 2)
    assert got["signal_resent_and_doubled"] == 1
    assert got["examples"]["lost"] == ["e"]


def test_reruns_in_flight_after_return_and_after_completion() -> None:
    # In flight: the first execution never ended; its worker was killed.
    r = ca.reruns([execution("first", 1, 1, 10, None), execution("first", 2, 2, 12, 12.2)],
                  {"w": one_activity(2, 2, 12.2)}, stops=[(1, 11)])
    assert (r["in_flight"], r["in_flight_worker_alive"], r["after_completion"]) == (1, 0, 0)
    # In flight, but nobody killed or froze the first execution's worker: noted.
    r = ca.reruns([execution("first", 1, 1, 10, None), execution("first", 2, 2, 12, 12.2)],
                  {"w": one_activity(2, 2, 12.2)}, stops=[])
    assert (r["in_flight"], r["in_flight_worker_alive"]) == (1, 1)
    # Returned, killed before reporting: its result is not in history.
    execs = [execution("first", 1, 1, 10, 10.2), execution("first", 2, 2, 11, 11.2)]
    r = ca.reruns(execs, {"w": one_activity(2, 2, 11.2)}, stops=[(1, 10.25)])
    assert (r["after_return_killed"], r["after_completion"]) == (1, 0)
    # Returned and recorded, then run again: a fault.
    r = ca.reruns(execs, {"w": one_activity(1, 1, 10.21)}, stops=[(1, 10.25)])
    assert (r["after_return_killed"], r["after_completion"]) == (0, 1)
    # Returned, never recorded, and its worker lived on: also a fault.
    r = ca.reruns(execs, {"w": one_activity(2, 2, 11.2)}, stops=[])
    assert r["after_completion"] == 1


def test_writes_by_the_frozen_worker() -> None:
    f, b = "chaos-worker-7@h", "chaos-worker-8@h"
    freeze = {"pid": 7, "identity": f, "t": 100.0, "t_resume": 110.0,
              "runs": {"r1": "w1", "r2": "w2", "r3": "w3"}, "claims": {"r1": 5.0, "r2": 5.0}}
    histories = {
        # F wrote before the freeze, B took over: fine. Then F wrote after B's task: counted.
        "w1": [ev(4, "WORKFLOW_TASK_COMPLETED", 90, f), ev(10, "WORKFLOW_TASK_COMPLETED", 106, b),
               ev(14, "WORKFLOW_TASK_COMPLETED", 111, f)],
        # After SIGCONT, on a run B had claimed, F wrote first: counted.
        "w2": [ev(4, "WORKFLOW_TASK_COMPLETED", 90, f), ev(10, "WORKFLOW_TASK_COMPLETED", 110.5, f)],
        # F's own run, never claimed by anyone else, written after SIGCONT: not counted.
        "w3": [ev(4, "WORKFLOW_TASK_COMPLETED", 90, f), ev(10, "WORKFLOW_TASK_COMPLETED", 112, f)],
        # F recorded an outcome for attempt 1 while B had run attempt 2: counted.
        "w4": [ev(5, "ACTIVITY_TASK_SCHEDULED", 90, act="first"),
               ev(6, "ACTIVITY_TASK_STARTED", 111, f, 1, 5), ev(7, "ACTIVITY_TASK_COMPLETED", 111, f, 0, 5)],
    }
    execs = [execution("first", 1, 7, 99, 111, "w4"), execution("first", 2, 8, 106, 106.2, "w4")]
    got = ca.fenced_writes(freeze, histories, execs)
    assert got["workflow_tasks_after_takeover"] == 2
    assert got["runs_written_after_takeover"] == 2
    assert got["activity_results_for_taken_attempts"] == 1
    assert "frozen worker wrote" in " ".join(ca.faults({
        "workflows": {"lost": 0, "wrong_results": 0}, "reruns": {"after_completion": 0},
        "fenced": got, "replay": {"failures": 0, "fetch_errors": 0}}))


def test_takeover_waits_count_only_work_pending_before_the_claim() -> None:
    w = "chaos-worker-9@h"
    kill = {"pid": 1, "t": 100.0, "runs": {"r1": "w1", "r2": "w2", "r3": "w3"},
            "claims": {"r1": 0.4, "r2": 0.4, "r3": 0.4}}
    histories = {
        # An activity result was waiting at the kill; the new owner's task came 0.6 s later.
        "w1": [ev(9, "ACTIVITY_TASK_COMPLETED", 99.9), ev(10, "WORKFLOW_TASK_SCHEDULED", 100.6),
               ev(11, "WORKFLOW_TASK_STARTED", 100.6, w)],
        # Idle until the harness's signal 5 s after the kill: not a takeover wait.
        "w2": [ev(9, "WORKFLOW_TASK_COMPLETED", 90), ev(10, "WORKFLOW_EXECUTION_SIGNALED", 105),
               ev(11, "WORKFLOW_TASK_SCHEDULED", 105.01)],
        # A timer due at 100.2 fired by the new owner at 100.5.
        "w3": [ev(8, "TIMER_STARTED", 99.2), ev(9, "TIMER_FIRED", 100.5)],
    }
    got = ca.takeover([kill], histories, timer=1.0)
    assert got["waited_runs"] == 2 and got["idle_until_claimed"] == 1
    assert got["waited_max_s"] == pytest.approx(0.6)
    assert got["waited_p50_s"] == pytest.approx(0.45)
    assert got["first_any_event_max_s"] == pytest.approx(5.0)
