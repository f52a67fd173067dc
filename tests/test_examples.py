"""The examples in examples/ run as a user runs them: a fresh interpreter with DBOSIFY_ACTIVATE=1.

No database is configured, so each run uses the embedded default (SQLite files under a private
DBOSIFY_HOME).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run_example(name: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOSIFY_", "OPENAI_"))}
    env.update(DBOSIFY_ACTIVATE="1", DBOSIFY_HOME=str(home))
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_openai_agents_mocked_runs_on_the_embedded_default(tmp_path: Path) -> None:
    proc = _run_example("openai_agents_mocked.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Durable agents need no server: this answer came through dbosify." in proc.stdout
    # The run is in the embedded store under DBOSIFY_HOME, not anywhere else.
    assert (tmp_path / "dbosify_ns_default.sqlite").is_file(), sorted(p.name for p in tmp_path.iterdir())
