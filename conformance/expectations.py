"""conformance/expectations.tsv: what each upstream test is expected to do under dbosify.

Columns: classname, name (as in junit XML / the dev-server baseline), expect, reason.
expect is one of
  pass           expected to pass; a failure is a regression and fails the run
  fail           in scope but known to fail; reason "not yet" or "COMPAT: <row of docs/COMPATIBILITY.md>"
  baseline-fail  fails on the real dev server here too (from the baseline), so not a target
  out-of-scope   needs something dbosify does not aim to provide (reason says what); not run
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from conformance import scope

STATUSES = ("pass", "fail", "baseline-fail", "out-of-scope")
HEADER = ("classname", "name", "expect", "reason")

TestId = tuple[str, str]


@dataclass
class Expectation:
    expect: str
    reason: str = ""


def load(path: Path) -> dict[TestId, Expectation]:
    out: dict[TestId, Expectation] = {}
    if not path.exists():
        return out
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or row[0].startswith("#") or tuple(row[:4]) == HEADER:
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{lineno}: expected at least 3 tab-separated columns")
            classname, name, expect = row[0], row[1], row[2]
            reason = row[3] if len(row) > 3 else ""
            if expect not in STATUSES:
                raise ValueError(f"{path}:{lineno}: unknown expectation {expect!r}")
            out[(classname, name)] = Expectation(expect, reason)
    return out


def dump(rows: dict[TestId, Expectation]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(HEADER)
    for (classname, name), e in sorted(rows.items()):
        w.writerow((classname, name, e.expect, e.reason))
    return buf.getvalue()


def save(path: Path, rows: dict[TestId, Expectation]) -> None:
    path.write_text(dump(rows), encoding="utf-8")


def read_baseline(path: Path) -> dict[TestId, tuple[str, str]]:
    """Baseline tsv -> {id: (final outcome, message)}; the serial rerun wins when present."""
    out: dict[TestId, tuple[str, str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        for row in reader:
            final = row.get("outcome_serial_rerun") or row["outcome_parallel_run"]
            out[(row["classname"], row["name"])] = (final, row.get("message") or "")
    return out


def initial(baseline: dict[TestId, tuple[str, str]],
            existing: dict[TestId, Expectation] | None = None) -> dict[TestId, Expectation]:
    """Expectations derived from the scope rules and the baseline.

    Rows already promoted to `pass`, and `fail` rows with a COMPAT reason (written by a
    person), are kept as they are: regenerating never demotes.
    """
    existing = existing or {}
    rows: dict[TestId, Expectation] = {}
    for tid, (outcome, message) in baseline.items():
        old = existing.get(tid)
        if old is not None and (old.expect == "pass" or old.reason.startswith("COMPAT:")):
            rows[tid] = old
            continue
        rows[tid] = Expectation(*scope.classify(tid[0], tid[1], outcome, message))
    for tid, old in existing.items():
        rows.setdefault(tid, old)
    return rows


@dataclass
class Promotion:
    promoted: list[TestId]
    still_failing_expected_pass: list[TestId]
    passing_out_of_scope: list[TestId]
    added: list[TestId]


def promote(rows: dict[TestId, Expectation], outcomes: Iterable[tuple[TestId, str]]) -> Promotion:
    """Mark tests that passed as `pass`. Never demotes; out-of-scope stays (a human call)."""
    res = Promotion([], [], [], [])
    for tid, outcome in outcomes:
        e = rows.get(tid)
        if e is None:
            if outcome == "passed":
                rows[tid] = Expectation("pass", "")
                res.added.append(tid)
            continue
        if outcome == "passed" and e.expect in ("fail", "baseline-fail"):
            rows[tid] = Expectation("pass", "")
            res.promoted.append(tid)
        elif outcome == "passed" and e.expect == "out-of-scope":
            res.passing_out_of_scope.append(tid)
        elif outcome in ("failed", "error") and e.expect == "pass":
            res.still_failing_expected_pass.append(tid)
    return res
