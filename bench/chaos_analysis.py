"""What a chaos run measured: pure functions from what was recorded to the numbers and verdicts.

Inputs (all wall-clock seconds, one machine):

- ``ids``: every workflow id the run was to start; ``results`` (id -> returned value),
  ``failed`` (id -> error), ``signal_retried`` (ids whose signal the client had to send again);
- ``execs``: the activity executions table, one dict per execution (``workflow_id``,
  ``activity``, ``attempt``, ``pid``, ``identity``, ``started_at``, ``ended_at`` or None);
- ``histories``: id -> events, each ``[id, type, time, identity, attempt, scheduled id,
  activity type]`` (``chaos_app.summarise``);
- ``kills``: ``{"pid", "t", "runs": {run id: workflow id}, "claims": {run id: seconds}}`` per
  SIGKILL; ``freeze``: the same for the frozen worker plus ``identity``, ``t_resume``,
  ``t_end`` (when it was killed), or None;
- ``replay``: the client's answer (``replayed``, ``replay_failures``, ``fetch_errors``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

# A re-run is explained by a kill (or the freeze) of the earlier execution's worker if that came
# within this many seconds after the earlier execution returned (before its result was recorded).
KILL_WINDOW = 5.0
DRIVER_EVENTS = {"WORKFLOW_TASK_SCHEDULED", "WORKFLOW_TASK_STARTED", "WORKFLOW_TASK_COMPLETED",
                 "TIMER_FIRED"}
OUTCOMES = {"ACTIVITY_TASK_COMPLETED", "ACTIVITY_TASK_FAILED", "ACTIVITY_TASK_TIMED_OUT",
            "ACTIVITY_TASK_CANCELED"}
INPUTS = OUTCOMES | {"WORKFLOW_EXECUTION_SIGNALED"}
EXAMPLES = 5


def expected_result(workflow_id: str, tokens: int = 1) -> str:
    """What ``ChaosWorkflow`` returns for ``workflow_id`` given ``tokens`` copies of its signal."""
    sig = ",".join([f"sig-{workflow_id}"] * tokens)
    return f"third(second(first({workflow_id}))+{sig})|timer-ok"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def outcomes(ids: list[str], results: dict[str, Any], failed: dict[str, str],
             signal_retried: set[str]) -> dict[str, Any]:
    wrong, doubled = [], []
    for wid, value in results.items():
        if value == expected_result(wid):
            continue
        if wid in signal_retried and value == expected_result(wid, 2):
            doubled.append(wid)  # the client re-sent a signal whose first send had committed
            continue
        wrong.append({"id": wid, "got": value, "want": expected_result(wid)})
    wrong += [{"id": wid, "got": f"failed: {err}"} for wid, err in failed.items()]
    lost = [w for w in ids if w not in results and w not in failed]
    return {
        "workflows": len(ids),
        "completed": len(results) - len([w for w in wrong if w["id"] in results]),
        "lost": len(lost),
        "wrong_results": len(wrong),
        "signal_resent_and_doubled": len(doubled),
        "examples": {"lost": lost[:EXAMPLES], "wrong": wrong[:EXAMPLES]},
    }


def recorded_outcomes(events: list[list[Any]]) -> set[tuple[str, int, str]]:
    """(activity, attempt, identity) of every attempt whose outcome is in the history: Started is
    recorded with the outcome, carrying the attempt and the identity of the worker that ran it."""
    types = {e[0]: e[6] for e in events if e[1] == "ACTIVITY_TASK_SCHEDULED"}
    return {(types.get(e[5], ""), e[4], e[3]) for e in events if e[1] == "ACTIVITY_TASK_STARTED"}


def reruns(execs: list[dict[str, Any]], histories: dict[str, list[list[Any]]],
           stops: list[tuple[int, float]]) -> dict[str, Any]:
    """Classify every execution that was not the first of its workflow's activity.

    - ``in_flight``: no earlier execution had ended when it started (killed or frozen
      mid-activity; allowed). Those whose earlier worker was neither killed nor frozen are
      counted again in ``in_flight_worker_alive`` (a live worker's attempt was given away).
    - ``after_return_killed``: an earlier execution had returned, its result is not in the
      history, and its worker was killed or frozen within `KILL_WINDOW` s after it returned
      (between returning and reporting; allowed).
    - ``after_completion``: an earlier execution had returned and its result was recorded, or
      its worker lived on and the result was never recorded: completed work done again (fault).
    """
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in execs:
        by_key[(e["workflow_id"], e["activity"])].append(e)
    stopped: dict[int, list[float]] = defaultdict(list)
    for pid, t in stops:
        stopped[pid].append(t)
    recorded = {wid: recorded_outcomes(ev) for wid, ev in histories.items()}
    out: dict[str, Any] = {"executions": len(execs), "unfinished_executions":
                           sum(1 for e in execs if e["ended_at"] is None)}
    counts = {"in_flight": 0, "in_flight_worker_alive": 0, "after_return_killed": 0,
              "after_completion": 0}
    examples: dict[str, list[dict[str, Any]]] = {k: [] for k in counts}

    def note(kind: str, e: dict[str, Any], before: dict[str, Any]) -> None:
        counts[kind] += 1
        if len(examples[kind]) < EXAMPLES:
            examples[kind].append({"workflow_id": e["workflow_id"], "activity": e["activity"],
                                   "earlier": _brief(before), "later": _brief(e)})

    for (wid, act), group in by_key.items():
        group.sort(key=lambda e: e["started_at"])
        for i, e in enumerate(group[1:], 1):
            earlier = group[:i]
            ended = [x for x in earlier if x["ended_at"] is not None and x["ended_at"] <= e["started_at"]]
            if not ended:
                x = earlier[-1]
                note("in_flight", e, x)
                if not any(t >= x["started_at"] for t in stopped.get(x["pid"], [])):
                    note("in_flight_worker_alive", e, x)
                continue
            x = ended[-1]
            done = (act, x["attempt"], x["identity"]) in recorded.get(wid, set())
            killed = any(x["ended_at"] <= t <= x["ended_at"] + KILL_WINDOW for t in stopped.get(x["pid"], []))
            note("after_return_killed" if killed and not done else "after_completion", e, x)
    out.update(counts)
    out["examples"] = {k: v for k, v in examples.items() if v}
    return out


def _brief(e: dict[str, Any]) -> dict[str, Any]:
    return {k: e[k] for k in ("attempt", "pid", "started_at", "ended_at")}


def _waited(events: list[list[Any]], t_kill: float, timer: float) -> tuple[float | None, float | None, float]:
    """For one run owned by a killed worker: (seconds from the kill to its first new event of any
    kind, seconds its first pending work waited after the kill for a new owner's driver, when
    that work became pending).

    The second clock starts at the kill, or later when the run had nothing to do at the kill: at
    the first input (activity outcome, signal) the driver's next workflow task consumed, or when
    the timer it fired was due. A run idle until the harness's signal is not charged for that wait.
    """
    after = [e[2] - t_kill for e in events if e[2] >= t_kill]
    first_any = min(after) if after else None
    idx = next((i for i, e in enumerate(events) if e[2] >= t_kill and e[1] in DRIVER_EVENTS), None)
    if idx is None:
        return first_any, None, t_kill
    ev = events[idx]
    if ev[1] == "TIMER_FIRED":
        starts = [e[2] for e in events[:idx] if e[1] == "TIMER_STARTED"]
        ready = starts[-1] + timer if starts else t_kill
    else:
        prev = max((i for i in range(idx) if events[i][1] == "WORKFLOW_TASK_COMPLETED"), default=-1)
        inputs = [e[2] for e in events[prev + 1:idx] if e[1] in INPUTS]
        ready = min(inputs) if inputs else t_kill
    return first_any, ev[2] - max(t_kill, ready), max(t_kill, ready)


def takeover(kills: list[dict[str, Any]], histories: dict[str, list[list[Any]]], timer: float,
             freeze: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per SIGKILL, for the runs the killed worker owned: how long their pending work waited for
    a new owner's driver (`_waited`), when another worker claimed them (polled), and the
    literal time to the first new event of any kind.

    Only runs whose work was pending before the new owner's claim count in the waits; runs idle
    until after the claim (waiting for the harness's signal, say) are counted apart, as are runs
    whose new owner was then frozen before it wrote (the freeze's takeover covers those)."""
    waited_all: list[float] = []
    any_all: list[float] = []
    claims: list[float] = []
    per_kill, never = [], []
    frozen_runs = set(freeze["runs"]) if freeze else set()
    to_frozen = idle = 0
    for k in kills:
        waited = []
        for run_id, wid in k["runs"].items():
            first_any, w, ready = _waited(histories.get(wid, []), k["t"], timer)
            if first_any is not None:
                any_all.append(first_any)
            if run_id in k["claims"]:
                claims.append(k["claims"][run_id])
            if w is None:
                never.append(wid)
            elif freeze and run_id in frozen_runs and k["t"] < freeze["t"] < ready + w:
                to_frozen += 1
            elif run_id in k["claims"] and ready > k["t"] + k["claims"][run_id]:
                idle += 1
            else:
                waited.append(w)
        waited_all += waited
        per_kill.append({"pid": k["pid"], "owned": len(k["runs"]), "claimed": len(k["claims"]),
                         "p50_s": percentile(waited, 50), "max_s": max(waited) if waited else None})
    return {
        "kills": len(kills),
        "runs_owned_at_kills": sum(len(k["runs"]) for k in kills),
        "waited_p50_s": percentile(waited_all, 50),
        "waited_max_s": max(waited_all) if waited_all else None,
        "claim_p50_s": percentile(claims, 50),
        "claim_max_s": max(claims) if claims else None,
        "first_any_event_p50_s": percentile(any_all, 50),
        "first_any_event_max_s": max(any_all) if any_all else None,
        "no_workflow_task_after_kill": len(never),
        "taken_by_the_worker_frozen_next": to_frozen,
        "idle_until_claimed": idle,
        "waited_runs": len(waited_all),
        "per_kill": per_kill,
    }


def fenced_writes(freeze: dict[str, Any] | None, histories: dict[str, list[list[Any]]],
                  execs: list[dict[str, Any]]) -> dict[str, Any]:
    """Writes by the frozen worker after another worker took over its work.

    Between the SIGSTOP and the frozen worker's SIGKILL no other worker is killed, so no run
    another worker holds can legitimately come back to the frozen one. Counted:

    - a WorkflowTaskCompleted by the frozen worker's identity that comes (in event order) after
      a WorkflowTaskCompleted by another identity recorded after the freeze began, or that was
      recorded after SIGCONT in a run another worker had claimed during the freeze;
    - an activity outcome recorded under the frozen worker's identity for an attempt when
      another worker also ran that activity of that workflow at that attempt or a later one.
    """
    if freeze is None:
        return {"frozen": False}
    who, t0 = freeze["identity"], freeze["t"]
    t_resume = freeze.get("t_resume") or float("inf")
    claimed = {freeze["runs"][r] for r in freeze["claims"] if r in freeze["runs"]}
    wft, runs, acts = 0, set(), 0
    examples: list[dict[str, Any]] = []
    others = defaultdict(list)
    for e in execs:
        if e["identity"] != who:
            others[(e["workflow_id"], e["activity"])].append(e["attempt"])
    for wid, events in histories.items():
        taken = False
        types = {e[0]: e[6] for e in events if e[1] == "ACTIVITY_TASK_SCHEDULED"}
        started = {e[5]: e for e in events if e[1] == "ACTIVITY_TASK_STARTED"}
        for e in events:
            if e[1] == "WORKFLOW_TASK_COMPLETED":
                if e[3] != who and e[2] >= t0:
                    taken = True
                elif e[3] == who and (taken or (wid in claimed and e[2] >= t_resume)):
                    wft += 1
                    runs.add(wid)
                    if len(examples) < EXAMPLES:
                        examples.append({"workflow_id": wid, "event_id": e[0], "time": e[2]})
            elif e[1] in OUTCOMES and e[5] in started and started[e[5]][3] == who:
                attempt = started[e[5]][4]
                if any(a >= attempt for a in others.get((wid, types.get(e[5], "")), [])):
                    acts += 1
                    if len(examples) < EXAMPLES:
                        examples.append({"workflow_id": wid, "event_id": e[0], "activity_attempt": attempt})
    return {
        "frozen": True,
        "runs_owned_at_freeze": len(freeze["runs"]),
        "claimed_by_others": len(freeze["claims"]),
        "claim_p50_s": percentile(list(freeze["claims"].values()), 50),
        "claim_max_s": max(freeze["claims"].values()) if freeze["claims"] else None,
        "workflow_tasks_after_takeover": wft,
        "runs_written_after_takeover": len(runs),
        "activity_results_for_taken_attempts": acts,
        "examples": examples,
    }


def analyse(ids: list[str], results: dict[str, Any], failed: dict[str, str], signal_retried: set[str],
            execs: list[dict[str, Any]], histories: dict[str, list[list[Any]]],
            kills: list[dict[str, Any]], freeze: dict[str, Any] | None,
            replay: dict[str, Any], timer: float) -> dict[str, Any]:
    stops = [(k["pid"], k["t"]) for k in kills] + ([(freeze["pid"], freeze["t"])] if freeze else [])
    out = {
        "workflows": outcomes(ids, results, failed, signal_retried),
        "reruns": reruns(execs, histories, stops),
        "takeover": takeover(kills, histories, timer, freeze),
        "fenced": fenced_writes(freeze, histories, execs),
        "replay": {
            "replayed": replay.get("replayed", 0),
            "failures": len(replay.get("replay_failures", {})),
            "fetch_errors": len(replay.get("fetch_errors", {})),
            "examples": dict(list(replay.get("replay_failures", {}).items())[:EXAMPLES]),
        },
    }
    out["faults"] = faults(out)
    return out


def faults(m: dict[str, Any]) -> list[str]:
    """Why the run fails (empty: it passes)."""
    out = []
    w, r, f, p = m["workflows"], m["reruns"], m["fenced"], m["replay"]
    if w["lost"]:
        out.append(f"{w['lost']} workflow(s) lost")
    if w["wrong_results"]:
        out.append(f"{w['wrong_results']} wrong result(s)")
    if r["after_completion"]:
        out.append(f"{r['after_completion']} activity execution(s) re-ran completed work")
    if f.get("workflow_tasks_after_takeover") or f.get("activity_results_for_taken_attempts"):
        out.append(f"the frozen worker wrote after its takeover ({f['workflow_tasks_after_takeover']} workflow "
                   f"task(s) in {f['runs_written_after_takeover']} run(s), "
                   f"{f['activity_results_for_taken_attempts']} activity result(s))")
    if p["failures"] or p["fetch_errors"]:
        out.append(f"{p['failures']} replay failure(s), {p['fetch_errors']} history fetch error(s)")
    return out
