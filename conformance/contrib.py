"""The contrib (plugin) suites: which ones a run selects, and their dependencies.

Each suite under `tests/contrib/<suite>` needs the packages of upstream's optional
group for it (pinned in `pins.CONTRIB_REQUIREMENTS`). They are installed into the
runner's venv on first use, together with the core pins so that nothing the core
suite relies on moves, and the venv records which suites are in (a rebuilt venv
starts without any).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from conformance import pins, venv
from conformance.paths import CONF_DIR

STAMP_FILE = ".conformance-contrib"
# Every version the suites pull in, resolved once: a fresh venv installs without backtracking.
CONSTRAINTS = CONF_DIR / "contrib-constraints.txt"
ALL_SUITES: tuple[str, ...] = tuple(sorted(pins.CONTRIB_REQUIREMENTS))


def suite_of(path: str) -> str | None:
    """`tests/contrib/langgraph/test_x.py::t` -> "langgraph"; None outside contrib."""
    rel = path.split("::", 1)[0].strip("/").replace("\\", "/")
    prefix = pins.CONTRIB_DIR + "/"
    if not rel.startswith(prefix):
        return None
    suite = rel[len(prefix):].split("/", 1)[0]
    return suite or None


def suites_for(selection: Iterable[str], *, contrib_flag: bool) -> list[str]:
    """The contrib suites a run touches, so their dependencies can be installed."""
    wanted: set[str] = set(ALL_SUITES) if contrib_flag else set()
    for path in selection:
        suite = suite_of(path)
        if suite is not None:
            wanted.add(suite)
        elif path.split("::", 1)[0].strip("/") == pins.CONTRIB_DIR:
            wanted.update(ALL_SUITES)
    return sorted(s for s in wanted if s in pins.CONTRIB_REQUIREMENTS)


def _suite_digest(suite: str) -> str:
    blob = json.dumps([suite, list(pins.CONTRIB_REQUIREMENTS[suite])]).encode()
    return hashlib.sha256(blob + CONSTRAINTS.read_bytes()).hexdigest()[:16]


def _installed(venv_dir: Path) -> dict[str, str]:
    stamp = venv_dir / STAMP_FILE
    if not stamp.exists():
        return {}
    out = {}
    for line in stamp.read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            suite, dig = line.split("\t", 1)
            out[suite] = dig
    return out


def ensure(py: Path, suites: list[str], log: Callable[[str], None]) -> list[str]:
    """Install the dependencies of `suites` that the venv lacks; return what it installed."""
    venv_dir = py.parent.parent
    have = _installed(venv_dir)
    missing = [s for s in suites if have.get(s) != _suite_digest(s)]
    if not missing:
        return []
    # The suites already in are resolved again with the new ones, so that no later
    # install moves a package an earlier suite needs.
    everything = set(missing) | {s for s in have if s in pins.CONTRIB_REQUIREMENTS}
    reqs = sorted({r for s in everything for r in pins.CONTRIB_REQUIREMENTS[s]})
    if reqs:
        log(f"installing contrib dependencies for {', '.join(missing)}: {' '.join(reqs)}")
        res = subprocess.run(
            [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
             "-c", str(CONSTRAINTS), *venv.requirements(), *reqs],
            capture_output=True, text=True, check=False,
        )
        if res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-25:])
            raise venv.VenvError(f"failed installing the contrib dependencies (exit {res.returncode}):\n{tail}")
    have.update({s: _suite_digest(s) for s in missing})
    (venv_dir / STAMP_FILE).write_text("".join(f"{s}\t{d}\n" for s, d in sorted(have.items())),
                                       encoding="utf-8")
    return missing
