"""Dev-server baselines: a parallel run, then a serial rerun of what failed.

    python -m conformance --server devserver --contrib --report R1
    python -m conformance --server devserver --workers 1 --rerun-failures-of R1 --report R2
    python -m conformance --write-baseline conformance/contrib-dev-server-baseline.tsv \\
        --from-report R1 --from-report R2

The TSV has the columns of the core suite's baseline: classname, name,
outcome_parallel_run, seconds, outcome_serial_rerun (empty when not rerun), message.
A module that fails at collection is one row named `<collect>`, outcome `failed`.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from conformance import report, results

HEADER = ("classname", "name", "outcome_parallel_run", "seconds", "outcome_serial_rerun", "message")
_FAILED = ("failed", "error")
# Local paths in messages: the run's export dir and the venv's site-packages.
_LOCAL_PATHS = re.compile(r"/\S*?/(?:upstream/[^/\s]+|site-packages)/")


def _tests(report_dir: Path) -> list[dict]:
    data = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    return list(data.get("tests", []))


def _outcome(t: dict) -> str:
    if t["name"] == results.COLLECT:
        return "failed"
    return "failed" if t["outcome"] in _FAILED else t["outcome"]


def node_id(classname: str, name: str) -> str:
    """pytest node id of a junit (classname, name); a collection row is its module file."""
    path = report.module_file(classname)
    if name == results.COLLECT:
        return path
    module = path[:-3].replace("/", ".")
    cls = classname[len(module) + 1:] if classname != module else ""
    return "::".join([path, *([cls] if cls else []), name])


def failed_node_ids(report_dir: Path) -> list[str]:
    return sorted({node_id(t["classname"], t["name"]) for t in _tests(report_dir)
                   if _outcome(t) == "failed" and t["outcome"] != "not-run"})


_COLLECT_HEAD = re.compile(r"ERROR collecting (\S+\.py)")


def collection_errors(report_dir: Path) -> dict[str, str]:
    """{module classname: first `E   ` line} from the collection errors in pytest.log."""
    out: dict[str, str] = {}
    log = report_dir / "pytest.log"
    current = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []:
        head = _COLLECT_HEAD.search(line)
        if head:
            current = head.group(1)[:-3].replace("/", ".")
        elif current and line.startswith("E   "):
            out.setdefault(current, line[4:].strip())
            current = None
    return out


def write(out: Path, parallel: Path, serial: Path | None) -> tuple[int, int, int]:
    """Write the baseline TSV; return (passed, failed, skipped) after the rerun."""
    rerun = {(t["classname"], t["name"]): t for t in _tests(serial)} if serial else {}
    import_errors = collection_errors(parallel)
    rows = []
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for t in sorted(_tests(parallel), key=lambda t: (t["classname"], t["name"])):
        first = _outcome(t)
        again = rerun.get((t["classname"], t["name"]))
        second = _outcome(again) if (again is not None and first == "failed") else ""
        final = second or first
        msg_src = again if second == "failed" and again is not None else t
        message = ""
        if final == "failed":
            raw = str(msg_src.get("message") or "")
            if t["name"] == results.COLLECT:
                raw = import_errors.get(t["classname"], raw)
            message = _LOCAL_PATHS.sub("", " ".join(raw.split()))[:300]
        counts[final] = counts.get(final, 0) + 1
        rows.append((t["classname"], t["name"], first, f"{float(t.get('seconds') or 0):.3f}",
                     second, message))
    with out.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows)
    return counts["passed"], counts["failed"], counts["skipped"]
