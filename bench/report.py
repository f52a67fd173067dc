"""The table: one row per metric, medians per backend, ratios to Temporal, the issue's targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.measure import median

DBOSIFY = ("dbosify-pg", "dbosify-pg-nodbos", "dbosify-sqlite")

# (label, workload, metric, aggregate over repeats, target)
# target: (kind, value) with kind ratio_ge / ratio_le (dbosify ÷ temporal) or abs_le / abs_ge / abs_eq.
ROWS: list[tuple[str, str, str, str, tuple[str, float] | None]] = [
    ("W1 throughput, workflows/s", "W1", "wf_per_s", "median", ("ratio_ge", 10)),
    ("W1 CPU-seconds, all processes", "W1", "cpu_s", "median", ("ratio_le", 0.2)),
    ("W1 CPU-s: client + worker", "W1", "cpu_app_s", "median", None),
    ("W1 CPU-s: worker alone", "W1", "cpu_worker_s", "median", None),
    ("W1 CPU-s: server / DB backends", "W1", "cpu_server_s", "median", None),
    ("W1 Postgres commits per workflow", "W1", "pg_commits_per_workflow", "median", None),
    ("W1 two workers, workflows/s", "W1x2", "wf_per_s", "median", None),
    ("W1 two workers ÷ one", "W1x2/W1", "wf_per_s", "median", ("abs_ge", 1.5)),
    ("W2 latency p50, ms", "W2", "p50_ms", "median", ("ratio_le", 0.25)),
    ("W2 latency p95, ms", "W2", "p95_ms", "median", None),
    ("W3 ms per activity", "W3", "ms_per_activity", "median", ("ratio_le", 1)),
    ("W3 Postgres commits per activity", "W3", "pg_commits_per_activity", "median", None),
    ("W4 ms per signal", "W4", "ms_per_signal", "median", ("ratio_le", 1)),
    ("W4 query, ms", "W4", "query_ms", "median", ("ratio_le", 1)),
    ("W4 update, ms", "W4", "update_ms", "median", ("ratio_le", 1)),
    ("W5 wall, concurrent 1 s sleeps, s", "W5", "wall_s", "median", ("abs_le", 2)),
    ("W6 recovery, kill -> all results, s", "W6", "recovery_s", "median", ("ratio_le", 1 / 3)),
    ("W6 total, s", "W6", "total_s", "median", None),
    ("W6 completed activity executions", "W6", "completed_executions", "median", None),
    ("W6 completed activities run again (max)", "W6", "completed_twice", "max", None),
    ("W6 ... of those, finished >= 1 s before kill", "W6", "completed_twice_settled", "max", ("abs_eq", 0)),
    ("W7 worker RSS with all waiting, MB", "W7", "worker_rss_mb", "median", ("abs_le", 200)),
    ("W7 Postgres connections", "W7", "pg_connections", "median", ("abs_le", 20)),
    ("W7 CPU % while all wait: client + worker", "W7", "idle_cpu_pct_app", "median", None),
    ("W7 CPU % while all wait: server / DB", "W7", "idle_cpu_pct_server", "median", None),
    ("W7 Temporal server / PG backends RSS, MB", "W7", "server_rss_mb", "median", None),
    ("W7 start + first query of all, s", "W7", "start_and_query_s", "median", None),
]

AGG: dict[str, Callable[[list[float]], float | None]] = {
    "median": median,
    "max": lambda v: max(v) if v else None,
}


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _values(results: list[dict[str, Any]], workload: str, backend: str, metric: str) -> tuple[list[float], int]:
    vals, failed = [], 0
    for r in results:
        if r["workload"] != workload or r["backend"] != backend:
            continue
        if "error" in r:
            failed += 1
        elif metric in r["metrics"]:
            vals.append(float(r["metrics"][metric]))
    return vals, failed


def cell(results: list[dict[str, Any]], workload: str, backend: str, metric: str, agg: str) -> tuple[float | None, str]:
    if "/" in workload:
        top, bottom = workload.split("/")
        a, _ = cell(results, top, backend, metric, agg)
        b, _ = cell(results, bottom, backend, metric, agg)
        v = a / b if a is not None and b else None
        return v, fmt(v)
    vals, failed = _values(results, workload, backend, metric)
    v = AGG[agg](vals)
    text = fmt(v)
    if failed:
        text = "FAIL" if v is None else f"{text} ({failed} failed)"
    return v, text


def met(target: tuple[str, float] | None, value: float | None, temporal: float | None) -> str:
    if target is None:
        return ""
    kind, want = target
    if value is None:
        return "?"
    if kind.startswith("ratio"):
        if temporal is None or temporal == 0:
            return "?"
        ratio = value / temporal
        ok = ratio >= want if kind == "ratio_ge" else ratio <= want
    elif kind == "abs_le":
        ok = value <= want
    elif kind == "abs_ge":
        ok = value >= want
    else:
        ok = value == want
    return "yes" if ok else "NO"


def describe(target: tuple[str, float] | None) -> str:
    if target is None:
        return ""
    kind, v = target
    shown = "1/3" if abs(v - 1 / 3) < 1e-9 else fmt(v)
    return {
        "ratio_ge": f">= {shown}x Temporal",
        "ratio_le": f"<= {shown}x Temporal",
        "abs_le": f"<= {shown}",
        "abs_ge": f">= {shown}",
        "abs_eq": f"= {shown}",
    }[kind]


def render(payload: dict[str, Any], backends: list[str]) -> str:
    info, results = payload["info"], payload["results"]
    shown = [b for b in backends if b not in info["missing"]]
    ours = [b for b in shown if b in DBOSIFY]
    head = ["metric", *shown]
    if "temporal" in shown:
        head += [f"{b.removeprefix('dbosify-')} ÷ temporal" for b in ours]
    head += ["target", *[f"met: {b.removeprefix('dbosify-')}" for b in ours]]
    rows = []
    for label, workload, metric, agg, target in ROWS:
        if not all(any(r["workload"] == w for r in results) for w in workload.split("/")):
            continue
        if metric == "pg_connections" and "dbosify-pg" not in shown:
            continue
        values = {b: cell(results, workload, b, metric, agg) for b in shown}
        t = values.get("temporal", (None, ""))[0]
        row = [label, *[values[b][1] for b in shown]]
        if "temporal" in shown:
            for b in ours:
                v = values[b][0]
                row.append(fmt(v / t) if v is not None and t else "-")
        row.append(describe(target))
        for b in ours:
            applicable = not (metric == "pg_connections" and b != "dbosify-pg")
            row.append(met(target, values[b][0], t) if applicable else "")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) + " |")

    out = [
        "",
        f"dbosify bench{' (smoke)' if info['smoke'] else ''}: {info['repeat']} repeat(s), "
        f"medians; sizes {info['sizes']}",
        f"load before: {info['load_before']}",
        f"load after:  {info['load_after']}",
    ]
    if info.get("engine"):
        out.append(f"dbosify: {info['engine']}")
    for k, v in info.get("versions", {}).items():
        out.append(f"{k}: {v}")
    if info.get("postgres_settings"):
        out.append("postgres settings: " + ", ".join(f"{k}={v}" for k, v in info["postgres_settings"].items()))
    out += ["", *lines, ""]
    pg = info["pgbench"]
    rates = pg["commits_per_s"]
    if rates["1"] or rates["8"]:
        out.append(
            f"Postgres commit rate (pgbench, one-row INSERT per transaction, {pg['seconds']} s runs): "
            f"{fmt(median(rates['1']))} commits/s with 1 client, {fmt(median(rates['8']))} with 8 clients"
        )
    if pg["error"]:
        out.append(f"pgbench: {pg['error']}")
    for name, why in info["missing"].items():
        out.append(f"{name}: not run: {why}")
    for r in results:
        if "error" in r:
            out.append(f"FAILED {r['workload']} {r['backend']} r{r['repeat']}: {r['error']} (logs: {r['workdir']})")
    w6 = [r for r in results if r["workload"] == "W6" and "metrics" in r]
    if w6:
        expected = int(w6[0]["metrics"]["expected"])
        out.append(f"W6: {expected} activities expected; 'completed executions' counts every attempt that "
                   f"finished (a finished attempt re-run after the kill counts twice).")
    return "\n".join(out)
