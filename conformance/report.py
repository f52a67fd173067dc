"""Compare a run's outcomes with expectations.tsv and write report.md / report.json.

Verdict of each test in the run:
  pass             expected pass, passed
  expected-fail    expected fail / baseline-fail (or out-of-scope, when run), failed or errored
  newly-failing    expected pass, failed or errored, or selected but never ran  -> gates (exit 1)
  newly-passing    not expected to pass, passed                                 -> run --update-expectations
  skipped          skipped by the test itself
  not-run          selected, not expected to pass, never ran (run stopped at its deadline)
  out-of-scope     not run because expectations.tsv says out-of-scope
Tests missing from expectations.tsv are classified by conformance/scope.py and flagged.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conformance import scope
from conformance.expectations import Expectation
from conformance.results import COLLECT, Result

TestId = tuple[str, str]

COLUMNS = ("passed", "failed", "errored", "skipped", "expected-fail", "not-run",
           "out-of-scope", "newly-passing", "newly-failing")


@dataclass
class TestRecord:
    classname: str
    name: str
    file: str
    expect: str
    reason: str
    outcome: str  # passed/failed/error/skipped/not-run/deselected
    verdict: str
    seconds: float = 0.0
    message: str = ""
    unknown: bool = False  # not in expectations.tsv


@dataclass
class Report:
    meta: dict
    tests: list[TestRecord] = field(default_factory=list)

    # ---- derived -------------------------------------------------------------------
    def by_verdict(self, verdict: str) -> list[TestRecord]:
        return [t for t in self.tests if t.verdict == verdict]

    @property
    def newly_failing(self) -> list[TestRecord]:
        return self.by_verdict("newly-failing")

    @property
    def newly_passing(self) -> list[TestRecord]:
        return self.by_verdict("newly-passing")

    def counts(self, tests: list[TestRecord] | None = None) -> dict[str, float]:
        tests = self.tests if tests is None else tests
        c: Counter[str] = Counter()
        for t in tests:
            if t.outcome == "passed":
                c["passed"] += 1
            elif t.outcome == "failed":
                c["failed"] += 1
            elif t.outcome == "error":
                c["errored"] += 1
            elif t.outcome == "skipped":
                c["skipped"] += 1
            elif t.outcome == "not-run":
                c["not-run"] += 1
            if t.verdict in ("expected-fail", "out-of-scope", "newly-passing", "newly-failing"):
                c[t.verdict] += 1
        out: dict[str, float] = {k: c.get(k, 0) for k in COLUMNS}
        out["seconds"] = round(sum(t.seconds for t in tests), 1)
        return out

    def per_file(self) -> dict[str, dict[str, float]]:
        groups: dict[str, list[TestRecord]] = defaultdict(list)
        for t in self.tests:
            groups[t.file].append(t)
        return {f: self.counts(ts) for f, ts in sorted(groups.items())}

    @property
    def gate_ok(self) -> bool:
        return not self.newly_failing

    def failure_modes(self, top: int = 15) -> list[tuple[int, str, str]]:
        """Most common first error lines among failed/errored tests: (count, message, example)."""
        groups: dict[str, list[TestRecord]] = defaultdict(list)
        for t in self.tests:
            if t.outcome in ("failed", "error"):
                groups[_shape(t.message)].append(t)
        ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        return [(len(ts), ts[0].message.splitlines()[0][:300] if ts[0].message else "(no message)",
                 f"{ts[0].classname}::{ts[0].name}") for _, ts in ranked[:top]]

    # ---- output --------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "meta": self.meta,
            "totals": self.counts(),
            "gate_ok": self.gate_ok,
            "files": self.per_file(),
            "newly_failing": [f"{t.classname}::{t.name}" for t in self.newly_failing],
            "newly_passing": [f"{t.classname}::{t.name}" for t in self.newly_passing],
            "failure_modes": [
                {"count": n, "message": m, "example": ex} for n, m, ex in self.failure_modes()
            ],
            "tests": [asdict(t) for t in self.tests],
        }

    def to_markdown(self) -> str:
        m = self.meta
        lines = ["# dbosify conformance report", ""]
        for key, label in (
            ("upstream", "upstream"), ("database", "database"), ("native_module", "native module"),
            ("temporalio", "temporalio"), ("selection", "selection"), ("workers", "workers"),
            ("started", "started"), ("wall_seconds", "wall time (s)"),
            ("pytest_exit_code", "pytest exit code"), ("stopped_at_deadline", "stopped at deadline"),
        ):
            if key in m:
                lines.append(f"- {label}: {m[key]}")
        for w in m.get("warnings", []):
            lines.append(f"- **WARNING**: {w}")
        lines += ["", "## Totals", ""]
        lines += _table(["", *COLUMNS, "seconds"], [["total", *_row(self.counts())]])
        lines += ["", f"Gate: {'OK (nothing newly failing)' if self.gate_ok else 'FAILED (tests newly failing)'}", ""]
        lines += ["## Newly failing (expected to pass)", ""]
        lines += _test_list(self.newly_failing) or ["(none)"]
        lines += ["", "## Newly passing (run `python -m conformance --update-expectations`)", ""]
        lines += _test_list(self.newly_passing, with_reason=True) or ["(none)"]
        unknown = [t for t in self.tests if t.unknown]
        if unknown:
            lines += ["", "## Not in expectations.tsv (classified by scope.py)", ""]
            lines += _test_list(unknown, with_reason=True)
        modes = self.failure_modes()
        if modes:
            lines += ["", "## Most common failure messages", ""]
            lines += _table(["count", "first error line", "example"],
                            [[str(n), _md(msg), _md(ex)] for n, msg, ex in modes])
        lines += ["", "## Per file", ""]
        lines += _table(["file", *COLUMNS, "seconds"],
                        [[f, *_row(c)] for f, c in self.per_file().items()])
        lines.append("")
        return "\n".join(lines)

    def banner(self) -> str:
        """The loud end-of-run summary for the console."""
        c = self.counts()
        bar = "=" * 78
        out = [bar, "CONFORMANCE: " + ", ".join(f"{int(c[k])} {k}" for k in COLUMNS if c[k]), bar]
        for w in self.meta.get("warnings", []):
            out.append(f"!!! WARNING: {w}")
        if self.newly_passing:
            out.append(f">>> NEWLY PASSING ({len(self.newly_passing)}): promote with "
                       "`python -m conformance --update-expectations`")
            out += [f"      + {t.classname}::{t.name}" for t in self.newly_passing[:50]]
            if len(self.newly_passing) > 50:
                out.append(f"      ... and {len(self.newly_passing) - 50} more (see report.md)")
        if self.newly_failing:
            out.append(f"!!! NEWLY FAILING ({len(self.newly_failing)}): expected to pass")
            out += [f"      - {t.classname}::{t.name}: {t.message.splitlines()[0][:160] if t.message else t.outcome}"
                    for t in self.newly_failing[:100]]
            if len(self.newly_failing) > 100:
                out.append(f"      ... and {len(self.newly_failing) - 100} more (see report.md)")
        out.append("gate: OK" if self.gate_ok else "gate: FAILED")
        # A plain closing count line for CI log readers.
        out.append(f"conformance: {int(c['passed'])} passed, {int(c['failed'] + c['errored'])} failed, "
                   f"{int(c['skipped'])} skipped")
        return "\n".join(out)


def _row(c: dict[str, float]) -> list[str]:
    return [str(int(c[k])) if c[k] else "" for k in COLUMNS] + [f"{c['seconds']:.1f}"]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _test_list(tests: list[TestRecord], with_reason: bool = False) -> list[str]:
    out = []
    for t in tests:
        detail = t.message.splitlines()[0][:200] if t.message else t.outcome
        extra = f" (was `{t.expect}`: {t.reason})" if with_reason and t.reason else (
            f" (was `{t.expect}`)" if with_reason else "")
        out.append(f"- `{t.classname}::{t.name}`{extra} — {_md(detail)}")
    return out


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_HEX = re.compile(r"0x[0-9a-f]+", re.I)
_NUM = re.compile(r"\d+(\.\d+)?")


def _shape(message: str) -> str:
    first = message.splitlines()[0] if message else ""
    first = _UUID.sub("<uuid>", first)
    first = _HEX.sub("<hex>", first)
    first = _NUM.sub("<n>", first)
    return first[:200]


def module_file(classname: str) -> str:
    """'tests.test_activity.TestDescribe' -> 'tests/test_activity.py'."""
    parts = classname.split(".")
    while len(parts) > 1 and parts[-1][:1].isupper():
        parts.pop()
    return "/".join(parts) + ".py"


def build(
    results: dict[TestId, Result],
    collected: set[TestId] | None,
    expectations: dict[TestId, Expectation],
    *,
    deselected: set[TestId],
    files_in_scope_of_run: set[str] | None,
    meta: dict,
) -> Report:
    """Join outcomes with expectations.

    `deselected` are the out-of-scope ids the runner kept out of the run.
    `files_in_scope_of_run`: files whose out-of-scope rows are listed (None: every file).
    """
    rep = Report(meta=meta)
    ids = set(results) | (collected or set())
    for tid in sorted(ids):
        classname, name = tid
        file = module_file(classname)
        exp = expectations.get(tid)
        unknown = exp is None
        if exp is None:
            exp = Expectation(*scope.classify(classname, name))
        res = results.get(tid)
        outcome = res.outcome if res else "not-run"
        verdict = _verdict(exp.expect, outcome)
        rep.tests.append(TestRecord(
            classname, name, file, exp.expect, exp.reason, outcome, verdict,
            res.seconds if res else 0.0, res.message if res else "", unknown and name != COLLECT,
        ))
    for tid in sorted(deselected - ids):
        classname, name = tid
        file = module_file(classname)
        if files_in_scope_of_run is not None and file not in files_in_scope_of_run:
            continue
        exp = expectations.get(tid) or Expectation("out-of-scope", "")
        rep.tests.append(TestRecord(classname, name, file, exp.expect, exp.reason,
                                    "deselected", "out-of-scope"))
    return rep


def _verdict(expect: str, outcome: str) -> str:
    if outcome == "passed":
        return "pass" if expect == "pass" else "newly-passing"
    if outcome in ("failed", "error"):
        return "newly-failing" if expect == "pass" else "expected-fail"
    if outcome == "skipped":
        return "skipped"
    # not-run: selected (collected) but no result
    return "newly-failing" if expect == "pass" else "not-run"


def write(rep: Report, report_dir: Path) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    md = report_dir / "report.md"
    js = report_dir / "report.json"
    md.write_text(rep.to_markdown(), encoding="utf-8")
    js.write_text(json.dumps(rep.to_json(), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return md, js
