"""Unit tests for the conformance runner (conformance/): parsing, verdicts, expectations, CI hook.

None of these needs the upstream checkout, the conformance venv or a database.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from conformance import expectations as exps  # noqa: E402
from conformance import report, results, run, scope  # noqa: E402
from conformance.paths import EXPECTATIONS, FAST_LIST, PLUGIN_DIR  # noqa: E402


def _plugin():
    spec = importlib.util.spec_from_file_location(
        "dbosify_conformance_plugin", PLUGIN_DIR / "dbosify_conformance_plugin.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("nodeid", "expected"),
    [
        ("tests/test_workflow.py::test_workflow_defn_good", ("tests.test_workflow", "test_workflow_defn_good")),
        ("tests/test_activity.py::TestDescribe::test_describe", ("tests.test_activity.TestDescribe", "test_describe")),
        ("tests/worker/test_workflow.py::test_workflow_cancel_activity[True]",
         ("tests.worker.test_workflow", "test_workflow_cancel_activity[True]")),
        ("tests/nexus/test_x.py", ("", "tests.nexus.test_x")),
    ],
)
def test_plugin_ids_match_junit(nodeid: str, expected: tuple[str, str]) -> None:
    assert _plugin().junit_id(nodeid) == expected


def test_parse_junit(tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    xml.write_text(textwrap.dedent("""\
        <?xml version="1.0" encoding="utf-8"?>
        <testsuites><testsuite name="pytest">
        <testcase classname="tests.a" name="t_pass" time="1.5" />
        <testcase classname="tests.a" name="t_fail" time="2"><failure message="AssertionError: boom">tb</failure></testcase>
        <testcase classname="tests.a" name="t_err" time="0.1"><error message="failed on setup with &quot;x&quot;">tb</error></testcase>
        <testcase classname="tests.a" name="t_skip" time="0"><skipped type="pytest.skip" message="no">s</skipped></testcase>
        <testcase classname="" name="tests.broken" time="0"><error message="collection failure">e</error></testcase>
        <testcase time="0.002" />
        </testsuite></testsuites>
        """))
    got = results.parse_junit(xml)
    assert got[("tests.a", "t_pass")].outcome == "passed"
    assert got[("tests.a", "t_pass")].seconds == 1.5
    assert got[("tests.a", "t_fail")].outcome == "failed"
    assert got[("tests.a", "t_fail")].message == "AssertionError: boom"
    assert got[("tests.a", "t_err")].outcome == "error"
    assert got[("tests.a", "t_skip")].outcome == "skipped"
    assert got[("tests.broken", results.COLLECT)].outcome == "error"
    assert len(got) == 5


def test_parse_jsonl_folds_phases(tmp_path: Path) -> None:
    recs = [
        ("t_pass", "setup", "passed"), ("t_pass", "call", "passed"), ("t_pass", "teardown", "passed"),
        ("t_fail", "setup", "passed"), ("t_fail", "call", "failed"), ("t_fail", "teardown", "passed"),
        ("t_setup", "setup", "failed"), ("t_setup", "teardown", "passed"),
        ("t_skip", "setup", "skipped"), ("t_skip", "teardown", "passed"),
        ("t_tear", "setup", "passed"), ("t_tear", "call", "passed"), ("t_tear", "teardown", "failed"),
        ("t_hung", "setup", "passed"),
    ]
    path = tmp_path / "r.jsonl"
    with path.open("w") as f:
        for name, when, outcome in recs:
            f.write(json.dumps({"classname": "tests.a", "name": name, "when": when,
                                "outcome": outcome, "seconds": 1.0, "message": f"{name} msg"}) + "\n")
        f.write('{"classname": "tests.a", "name": "t_cut"')  # line cut short by a kill
    got = results.parse_jsonl(path)
    outcome = {name: r.outcome for (_, name), r in got.items()}
    assert outcome == {"t_pass": "passed", "t_fail": "failed", "t_setup": "error", "t_skip": "skipped",
                       "t_tear": "error", "t_hung": "error"}
    assert got[("tests.a", "t_hung")].message == results.INTERRUPTED
    assert got[("tests.a", "t_pass")].seconds == 3.0


def _exp(**kw: str) -> dict[tuple[str, str], exps.Expectation]:
    return {("tests.test_x", k): exps.Expectation(v, "r") for k, v in kw.items()}


def test_verdicts_and_gate() -> None:
    expect = _exp(a="pass", b="pass", c="fail", d="fail", e="baseline-fail", f="pass", g="fail",
                  h="out-of-scope")
    got = {
        ("tests.test_x", "a"): results.Result("passed"),
        ("tests.test_x", "b"): results.Result("failed", message="boom"),
        ("tests.test_x", "c"): results.Result("passed"),
        ("tests.test_x", "d"): results.Result("error"),
        ("tests.test_x", "e"): results.Result("passed"),
        ("tests.test_x", "new"): results.Result("passed"),
    }
    collected = set(got) | {("tests.test_x", "f"), ("tests.test_x", "g")}
    rep = report.build(got, collected, expect, deselected={("tests.test_x", "h")},
                       files_in_scope_of_run=None, meta={})
    verdict = {t.name: t.verdict for t in rep.tests}
    assert verdict == {"a": "pass", "b": "newly-failing", "c": "newly-passing", "d": "expected-fail",
                       "e": "newly-passing", "f": "newly-failing", "g": "not-run",
                       "new": "newly-passing", "h": "out-of-scope"}
    assert not rep.gate_ok
    assert {t.name for t in rep.tests if t.unknown} == {"new"}
    c = rep.counts()
    assert (c["passed"], c["failed"], c["errored"], c["not-run"], c["out-of-scope"]) == (4, 1, 1, 2, 1)
    assert "tests/test_x.py" in rep.per_file()
    assert "NEWLY FAILING (2)" in rep.banner()
    md = rep.to_markdown()
    assert "## Newly failing" in md and "tests.test_x::b" in md
    json.dumps(rep.to_json())

    ok = report.build({("tests.test_x", "a"): results.Result("passed")}, None, expect,
                      deselected=set(), files_in_scope_of_run=None, meta={})
    assert ok.gate_ok


def test_module_file() -> None:
    assert report.module_file("tests.test_activity.TestDescribe") == "tests/test_activity.py"
    assert report.module_file("tests.worker.test_workflow") == "tests/worker/test_workflow.py"


def test_promote_never_demotes() -> None:
    rows = _exp(a="fail", b="pass", c="baseline-fail", d="out-of-scope", e="fail")
    res = exps.promote(rows, [
        (("tests.test_x", "a"), "passed"),
        (("tests.test_x", "b"), "failed"),
        (("tests.test_x", "c"), "passed"),
        (("tests.test_x", "d"), "passed"),
        (("tests.test_x", "e"), "error"),
        (("tests.test_x", "z"), "passed"),
    ])
    assert {k[1]: v.expect for k, v in rows.items()} == {
        "a": "pass", "b": "pass", "c": "pass", "d": "out-of-scope", "e": "fail", "z": "pass"}
    assert [t[1] for t in res.promoted] == ["a", "c"]
    assert [t[1] for t in res.still_failing_expected_pass] == ["b"]
    assert [t[1] for t in res.passing_out_of_scope] == ["d"]
    assert [t[1] for t in res.added] == ["z"]


def test_tsv_roundtrip(tmp_path: Path) -> None:
    rows = {("tests.a", "t[x\ty]"): exps.Expectation("fail", "not yet"),
            ("tests.a", "u"): exps.Expectation("pass", "")}
    path = tmp_path / "e.tsv"
    exps.save(path, rows)
    assert exps.load(path) == rows


def test_scope_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nexus is in scope; its known failures name what they need.
    assert scope.classify("tests.nexus.test_workflow_caller", "test_x") == ("fail", "not yet")
    expect, reason = scope.classify("tests.nexus.test_standalone_operations", "test_errors", "passed")
    assert expect == "fail" and reason.startswith("COMPAT: Nexus (standalone")
    assert scope.classify("tests.test_tls", "test_y", "passed")[0] == "out-of-scope"
    assert scope.classify("tests.worker.test_worker", "test_worker_deployment_ramp")[0] == "out-of-scope"
    assert scope.classify("tests.worker.test_workflow", "test_workflow_hello", "passed") == ("fail", "not yet")
    # A known failure names its COMPATIBILITY row, before the baseline's own reason.
    monkeypatch.setitem(scope.KNOWN_FAILURES, ("tests.a", "test_known"), "COMPAT: a documented gap")
    expect, reason = scope.classify("tests.a", "test_known", "failed", "RuntimeError: download")
    assert expect == "baseline-fail" and reason.startswith("COMPAT: a documented gap")
    expect, reason = scope.classify("tests.test_service", "test_version", "failed", "assert '1.35.0' == '1.31.0'")
    assert expect == "baseline-fail" and "1.35.0" in reason


def test_initial_keeps_promotions() -> None:
    baseline = {("tests.a", "t1"): ("passed", ""), ("tests.a", "t2"): ("failed", "boom")}
    existing = {("tests.a", "t1"): exps.Expectation("pass", "")}
    rows = exps.initial(baseline, existing)
    assert rows[("tests.a", "t1")].expect == "pass"
    assert rows[("tests.a", "t2")].expect == "baseline-fail"


def test_committed_expectations_are_well_formed() -> None:
    rows = exps.load(EXPECTATIONS)
    assert len(rows) >= 900
    for (classname, name), e in rows.items():
        assert classname.startswith("tests.") and name, (classname, name)
        assert e.expect in exps.STATUSES
        if e.expect in ("fail", "baseline-fail", "out-of-scope"):
            assert e.reason, f"{classname}::{name} needs a reason"
        if e.expect == "fail":
            assert e.reason == scope.NOT_YET or e.reason.startswith("COMPAT:"), e.reason


def test_fast_list_is_in_scope() -> None:
    rows = exps.load(EXPECTATIONS)
    entries = [ln.split("#", 1)[0].strip() for ln in FAST_LIST.read_text().splitlines()]
    entries = [e for e in entries if e]
    assert 10 <= len(entries) <= 60
    for entry in entries:
        path, _, rest = entry.partition("::")
        module = path[:-3].replace("/", ".")
        name = rest.rsplit("::", 1)[-1]  # "TestClass::test_name" -> "test_name"
        matching = [e for (c, n), e in rows.items()
                    if c.split(".Test")[0] == module and (not rest or scope.base_name(n) == name)]
        assert matching, f"{entry} matches no test in expectations.tsv"
        assert all(e.expect != "out-of-scope" for e in matching), entry


def test_run_stops_a_hung_process_group(tmp_path: Path) -> None:
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    out = run.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ),
                  log_path=tmp_path / "log", deadline_seconds=1.0, echo=False, log=lambda _m: None)
    assert out.stopped_at_deadline
    assert out.seconds < 30


def test_ci_hook_skips_without_checkout() -> None:
    env = {**os.environ, "DBOSIFY_UPSTREAM": "/nonexistent/sdk-python", "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(REPO / "conformance" / "ci.sh")], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0
    assert res.stdout == "conformance: skipped (no upstream checkout; set DBOSIFY_UPSTREAM)\n"


def test_cli_check_upstream_reports_missing() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "conformance", "--check-upstream",
                          "--upstream", "/nonexistent/sdk-python"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1
    assert "no upstream checkout" in res.stdout


def test_combine_outcomes_requires_every_report() -> None:
    from conformance.__main__ import combine_outcomes

    a = {("m", "t1"): "passed", ("m", "t2"): "passed", ("m", "t3"): "passed", ("m", "t4"): "skipped"}
    b = {("m", "t1"): "passed", ("m", "t2"): "failed", ("m", "t4"): "skipped"}
    got = dict(combine_outcomes([a, b]))
    assert got[("m", "t1")] == "passed"
    assert got[("m", "t2")] == "failed"
    assert got[("m", "t3")] != "passed"  # absent from one report: not confirmed
    assert got[("m", "t4")] == "skipped"
