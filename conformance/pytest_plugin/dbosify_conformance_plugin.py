"""pytest plugin loaded (with -p) into the upstream suite's pytest by the conformance runner.

It does not change how any test runs. It
- deselects the test ids listed in $DBOSIFY_CONFORMANCE_DESELECT (one "classname<TAB>name"
  a line: the out-of-scope tests of expectations.tsv);
- writes every test report as one JSON line to $DBOSIFY_CONFORMANCE_RESULTS as soon as it
  arrives, so that results survive a run that is stopped by the runner's overall deadline
  (junit XML is only written at the very end);
- writes the collected ids to $DBOSIFY_CONFORMANCE_COLLECTED, so the runner can tell
  which selected tests never ran.
It must stay importable with nothing but pytest installed.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

_config: pytest.Config | None = None
_lock = threading.Lock()


def junit_id(nodeid: str) -> tuple[str, str]:
    """(classname, name) as pytest's junit XML spells them for this node id."""
    parts = [p for p in nodeid.split("::") if p != "()"]
    path = parts[0]
    module = (path[:-3] if path.endswith(".py") else path).replace("/", ".")
    rest = parts[1:]
    if not rest:
        return ("", module)
    return (".".join([module, *rest[:-1]]), rest[-1])


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _write(env: str, record: dict) -> None:
    path = os.environ.get(env)
    if not path:
        return
    line = json.dumps(record, default=str)
    with _lock, open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = os.environ.get("DBOSIFY_CONFORMANCE_DESELECT")
    if not path or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        drop = {tuple(line.rstrip("\n").split("\t", 1)) for line in f if "\t" in line}
    if not drop:
        return
    keep, gone = [], []
    for item in items:
        (gone if junit_id(item.nodeid) in drop else keep).append(item)
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = keep


def _collected(nodeids: list[str]) -> None:
    path = os.environ.get("DBOSIFY_CONFORMANCE_COLLECTED")
    if not path or os.path.exists(path):
        return  # xdist: every worker reports the same list; keep the first
    with open(path, "w", encoding="utf-8") as f:
        for nid in nodeids:
            f.write("\t".join(junit_id(nid)) + "\n")


def pytest_collection_finish(session: pytest.Session) -> None:
    if not _is_worker(session.config) and not getattr(session.config.option, "numprocesses", None):
        _collected([item.nodeid for item in session.items])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids) -> None:  # type: ignore[no-untyped-def]
    _collected(list(ids))


def _message(report: pytest.BaseReport) -> str:
    if report.passed:
        return ""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (path, line, reason)
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    text = getattr(report, "longreprtext", "") or str(longrepr or "")
    for line in text.splitlines():
        if line.startswith("E "):
            return line[2:].strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _config is None or _is_worker(_config):
        return
    classname, name = junit_id(report.nodeid)
    _write(
        "DBOSIFY_CONFORMANCE_RESULTS",
        {
            "classname": classname,
            "name": name,
            "when": report.when,
            "outcome": report.outcome,
            "xfail": bool(getattr(report, "wasxfail", None) is not None),
            "seconds": round(float(report.duration), 3),
            "message": _message(report)[:2000],
            "worker": getattr(getattr(getattr(report, "node", None), "gateway", None), "id", None),
        },
    )


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if _config is None or _is_worker(_config) or not report.failed:
        return
    classname, name = junit_id(report.nodeid)
    _write(
        "DBOSIFY_CONFORMANCE_RESULTS",
        {
            "classname": classname,
            "name": name,
            "when": "collect",
            "outcome": "failed",
            "xfail": False,
            "seconds": 0.0,
            "message": _message(report)[:2000],
        },
    )
