"""Unit tests for the conformance runner's contrib suites and dev-server baselines.

None of these needs the upstream checkout, the conformance venv, a server or a database.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from conformance import baseline, contrib, devserver, pins, scope  # noqa: E402
from conformance import expectations as exps  # noqa: E402
from conformance.paths import CONF_DIR  # noqa: E402


def test_suites_for_selection() -> None:
    assert contrib.suites_for(["tests/test_client.py"], contrib_flag=False) == []
    assert contrib.suites_for(
        ["tests/contrib/langgraph/test_send.py::test_send", "tests/contrib/pydantic"],
        contrib_flag=False) == ["langgraph", "pydantic"]
    every = sorted(pins.CONTRIB_REQUIREMENTS)
    assert contrib.suites_for(["tests/contrib"], contrib_flag=False) == every
    assert contrib.suites_for([], contrib_flag=True) == every


def test_every_plugin_package_is_pinned_exactly() -> None:
    for suite, reqs in pins.CONTRIB_REQUIREMENTS.items():
        for req in reqs:
            assert "==" in req, (suite, req)
    named = {r.split("==")[0] for reqs in pins.CONTRIB_REQUIREMENTS.values() for r in reqs}
    for package in ("temporalio-openai-agents", "temporalio-langgraph", "temporalio-langsmith",
                    "temporalio-google-adk", "temporalio-google-genai",
                    "temporalio-strands-agents", "temporalio-deepagents"):
        assert package in named


def test_dev_server_args_are_read_from_the_conftest(tmp_path: Path) -> None:
    conftest = tmp_path / "conftest.py"
    conftest.write_text(textwrap.dedent('''
        LIMIT = 50
        async def env(env_type):
            return await WorkflowEnvironment.start_local(
                dev_server_extra_args=[
                    "--dynamic-config-value",
                    f"limit.historyCount.suggestContinueAsNew={LIMIT}",
                    "--dynamic-config-value",
                    'system.refreshMinWait="0s"',
                ],
            )
    '''))
    assert devserver.upstream_dev_server_args(conftest) == [
        "--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=50",
        "--dynamic-config-value", 'system.refreshMinWait="0s"']


def test_node_ids_for_a_rerun() -> None:
    assert baseline.node_id("tests.contrib.pydantic.test_pydantic", "test_x[True]") == \
        "tests/contrib/pydantic/test_pydantic.py::test_x[True]"
    assert baseline.node_id("tests.contrib.aws.s3driver.test_s3driver.TestKeys", "test_k") == \
        "tests/contrib/aws/s3driver/test_s3driver.py::TestKeys::test_k"
    assert baseline.node_id("tests.contrib.strands.test_mcp", "<collect>") == \
        "tests/contrib/strands/test_mcp.py"


def _report(path: Path, tests: list[dict]) -> Path:
    path.mkdir()
    (path / "report.json").write_text(json.dumps({"meta": {}, "tests": tests}))
    return path


def test_baseline_keeps_the_serial_rerun_and_drops_local_paths(tmp_path: Path) -> None:
    par = _report(tmp_path / "p", [
        {"classname": "tests.contrib.a.test_a", "name": "test_ok", "outcome": "passed", "seconds": 1},
        {"classname": "tests.contrib.a.test_a", "name": "test_flaky", "outcome": "failed",
         "seconds": 2, "message": "boom"},
        {"classname": "tests.contrib.a.test_a", "name": "test_bad", "outcome": "failed",
         "seconds": 2, "message": "No such file: '/x/y/.work/upstream/dir-1/temporalio/README.md'"},
    ])
    ser = _report(tmp_path / "s", [
        {"classname": "tests.contrib.a.test_a", "name": "test_flaky", "outcome": "passed"},
        {"classname": "tests.contrib.a.test_a", "name": "test_bad", "outcome": "failed",
         "message": "No such file: '/x/y/.work/upstream/dir-1/temporalio/README.md'"},
    ])
    out = tmp_path / "b.tsv"
    assert baseline.write(out, par, ser) == (2, 1, 0)
    rows = exps.read_baseline(out)
    assert rows[("tests.contrib.a.test_a", "test_flaky")][0] == "passed"
    assert rows[("tests.contrib.a.test_a", "test_bad")] == (
        "failed", "No such file: 'temporalio/README.md'")


def test_contrib_scope() -> None:
    drift = scope.out_of_scope_reason("tests.contrib.openai_agents.test_openai", "test_hello")
    assert drift and "_invoke_model_activity" in drift
    adk = "tests.contrib.google_adk_agents.test_google_adk_agents"
    assert scope.out_of_scope_reason(adk, "test_single_agent[False]")
    assert scope.out_of_scope_reason(adk, "test_single_agent[True]") is None
    assert scope.out_of_scope_reason(adk, "test_mcp_agent[False]")
    assert scope.out_of_scope_reason(adk, "test_mcp_agent[True]") is None
    assert scope.out_of_scope_reason("tests.contrib.langgraph.test_send", "test_send") is None


def test_committed_contrib_baseline_covers_the_expectations() -> None:
    base = exps.read_baseline(CONF_DIR / "contrib-dev-server-baseline.tsv")
    rows = exps.load(CONF_DIR / "expectations.tsv")
    assert len(base) >= 400
    for tid, (outcome, _) in base.items():
        assert tid in rows, tid
        if outcome == "failed" and rows[tid].expect != "out-of-scope":
            assert rows[tid].expect == "baseline-fail", tid
