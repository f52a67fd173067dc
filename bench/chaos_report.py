"""The table ``python -m bench chaos`` prints (the same numbers are in its chaos.json)."""

from __future__ import annotations

from typing import Any


def fmt(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def rows(p: dict[str, Any]) -> list[tuple[str, str, str]]:
    m = p["metrics"]
    w, r, t, f, rp = m["workflows"], m["reruns"], m["takeover"], m["fenced"], m["replay"]
    must0 = "must be 0"
    out = [
        ("workflows", fmt(w["workflows"]), ""),
        ("completed with the right result", fmt(w["completed"]), ""),
        ("lost (not finished by the deadline)", fmt(w["lost"]), must0),
        ("wrong results (incl. failed runs)", fmt(w["wrong_results"]), must0),
        ("activity executions recorded", fmt(r["executions"]), ""),
        ("re-runs of an execution in flight (killed/frozen mid-activity)", fmt(r["in_flight"]), "allowed"),
        ("... of those, the earlier worker was neither killed nor frozen", fmt(r["in_flight_worker_alive"]), "note"),
        ("re-runs after return, worker killed before its result was recorded", fmt(r["after_return_killed"]), "allowed"),
        ("re-runs of completed work", fmt(r["after_completion"]), must0),
        ("SIGKILLs; runs the killed workers owned", f"{t['kills']}; {t['runs_owned_at_kills']}"
         + (f" ({t['taken_by_the_worker_frozen_next']} then frozen with their new owner)"
            if t.get("taken_by_the_worker_frozen_next") else ""), ""),
        ("takeover: kill -> run claimed by another worker, p50 / max s",
         f"{_s(t['claim_p50_s'])} / {_s(t['claim_max_s'])}", ""),
        (f"takeover: work pending before the claim -> new owner's workflow task "
         f"({t['waited_runs']} runs), p50 / max s", f"{_s(t['waited_p50_s'])} / {_s(t['waited_max_s'])}", ""),
        ("takeover: kill -> first new event of any kind, p50 / max s",
         f"{_s(t['first_any_event_p50_s'])} / {_s(t['first_any_event_max_s'])}", ""),
    ]
    if f.get("frozen"):
        out += [
            ("frozen worker: runs owned; claimed by others", f"{f['runs_owned_at_freeze']}; {f['claimed_by_others']}", ""),
            ("frozen worker: freeze -> claimed by another, p50 / max s",
             f"{_s(f['claim_p50_s'])} / {_s(f['claim_max_s'])}", ""),
            ("frozen worker: workflow tasks written after the takeover",
             f"{f['workflow_tasks_after_takeover']} in {f['runs_written_after_takeover']} run(s)", must0),
            ("frozen worker: activity results for attempts others ran",
             fmt(f["activity_results_for_taken_attempts"]), must0),
        ]
    else:
        out.append(("frozen worker", "not run (--no-freeze)", ""))
    rs = p.get("restart")
    if rs and "seconds" in rs:
        out.append(("Postgres restart (pg_ctl restart -m fast), s", f"{rs['seconds']:.2f}", ""))
    elif rs and "error" in rs:
        out.append(("Postgres restart", f"FAILED: {rs['error'][:80]}", ""))
    else:
        out.append(("Postgres restart", "skipped", ""))
    out += [
        ("histories replayed with temporalio Replayer", fmt(rp["replayed"]), ""),
        ("replay failures; history fetch errors", f"{rp['failures']}; {rp['fetch_errors']}", must0),
    ]
    return out


def render(p: dict[str, Any]) -> str:
    info, m = p["info"], p["metrics"]
    table = rows(p)
    head = ("metric", "value", "")
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(3)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in table]
    o = info["options"]
    out = [
        "",
        f"dbosify chaos{' (smoke)' if o['smoke'] else ''} on {info['backend']}: {o['workflows']} workflows, "
        f"{o['workers']} workers, kill every {o['kill_every']:g} s, "
        + ("no freeze" if o["no_freeze"] else f"freeze {o['freeze_seconds']:g} s")
        + f"; {info['wall_s']:.0f} s",
        f"dbosify: {info['engine']}",
        f"load before: {info['load_before']}",
        f"load after:  {info['load_after']}",
        *[f"note: {n}" for n in info["notes"]],
        "",
        *lines,
        "",
        "timeline: " + "; ".join(f"+{e['t']:.1f}s {e['what']}" for e in p["timeline"]),
    ]
    for name, section in (("workflows", m["workflows"]), ("re-runs", m["reruns"]),
                          ("frozen worker", m["fenced"]), ("replay", m["replay"])):
        for kind, ex in (section.get("examples") or {}).items() if isinstance(section.get("examples"), dict) else []:
            if ex:
                out.append(f"examples, {name} {kind}: {ex}")
        if isinstance(section.get("examples"), list) and section["examples"]:
            out.append(f"examples, {name}: {section['examples']}")
    out.append("PASS" if not m["faults"] else "FAIL: " + "; ".join(m["faults"]))
    return "\n".join(out)
