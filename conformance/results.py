"""Per-test outcomes of one pytest run, from its junit XML and the plugin's JSON lines.

Outcomes: passed, failed (the test body failed), error (setup/teardown or collection
failed, or the test was still running when the run was stopped), skipped (includes
pytest xfail). Junit XML is the primary source; the JSON lines fill in what the XML
lacks, which is everything when the run was stopped before pytest wrote the XML.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

TestId = tuple[str, str]
COLLECT = "<collect>"
INTERRUPTED = "interrupted: the run was stopped before this test finished (hang?)"


@dataclass
class Result:
    outcome: str
    seconds: float = 0.0
    message: str = ""


def normalise_id(classname: str, name: str) -> TestId:
    """Collection failures come as ("", "tests.mod"); give them a stable id of their own."""
    if not classname:
        return (name, COLLECT)
    return (classname, name)


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def parse_junit(path: Path) -> dict[TestId, Result]:
    out: dict[TestId, Result] = {}
    if not path.exists() or path.stat().st_size == 0:
        return out
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return out
    for case in root.iter("testcase"):
        if not case.get("classname") and not case.get("name"):
            continue  # pytest adds an anonymous entry when interrupted
        tid = normalise_id(case.get("classname", ""), case.get("name", ""))
        seconds = float(case.get("time") or 0.0)
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            outcome, el = "failed", failure
        elif error is not None:
            outcome, el = "error", error
        elif skipped is not None:
            outcome, el = "skipped", skipped
        else:
            outcome, el = "passed", None
        message = ""
        if el is not None:
            message = el.get("message") or _first_line(el.text)
        out[tid] = Result(outcome, seconds, message[:2000])
    return out


def parse_jsonl(path: Path) -> dict[TestId, Result]:
    """Fold the per-phase records (setup/call/teardown/collect) into one result per test."""
    phases: dict[TestId, list[dict]] = {}
    if not path.exists():
        return {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            tid = normalise_id(rec.get("classname", ""), rec.get("name", ""))
            phases.setdefault(tid, []).append(rec)
    out: dict[TestId, Result] = {}
    for tid, recs in phases.items():
        seconds = round(sum(float(r.get("seconds") or 0) for r in recs), 3)
        by = {r.get("when"): r for r in recs}
        call, setup, teardown, collect = (by.get(k) for k in ("call", "setup", "teardown", "collect"))
        if collect is not None:
            res = Result("error", seconds, collect.get("message", ""))
        elif call is not None and call["outcome"] == "failed":
            res = Result("failed", seconds, call.get("message", ""))
        elif setup is not None and setup["outcome"] == "failed":
            res = Result("error", seconds, "failed on setup: " + setup.get("message", ""))
        elif setup is not None and setup["outcome"] == "skipped":
            res = Result("skipped", seconds, setup.get("message", ""))
        elif call is not None and call["outcome"] == "skipped":
            res = Result("skipped", seconds, call.get("message", ""))
        elif teardown is not None and teardown["outcome"] == "failed":
            res = Result("error", seconds, "failed on teardown: " + teardown.get("message", ""))
        elif call is not None and call["outcome"] == "passed":
            res = Result("passed", seconds, "")
        else:
            res = Result("error", seconds, INTERRUPTED)
        out[tid] = res
    return out


def parse_collected(path: Path) -> set[TestId] | None:
    if not path.exists():
        return None
    out: set[TestId] = set()
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 2:
                out.add(normalise_id(*parts))
    return out


def merge(junit: dict[TestId, Result], jsonl: dict[TestId, Result]) -> dict[TestId, Result]:
    merged = dict(jsonl)
    merged.update(junit)
    return merged
