"""Where things live. The work dir is gitignored and safe to delete at any time."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
REPO_ROOT = CONF_DIR.parent
WORK_DIR = CONF_DIR / ".work"
EXPECTATIONS = CONF_DIR / "expectations.tsv"
FAST_LIST = CONF_DIR / "fast.txt"
PLUGIN_DIR = CONF_DIR / "pytest_plugin"
DEFAULT_REPORT_DIR = WORK_DIR / "report"
