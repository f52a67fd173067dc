"""The isolated venv the upstream suite runs in.

It holds the pinned test dependencies, the pinned temporalio wheel and this repo
installed editable (so engine edits take effect without a reinstall). It is rebuilt
only when the pins, the interpreter or this repo's pyproject.toml change; the hash of
those is stored inside the venv.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conformance import pins
from conformance.paths import REPO_ROOT, WORK_DIR

VENV_DIR = WORK_DIR / "venv"
DIGEST_FILE = ".conformance-digest"


class VenvError(RuntimeError):
    pass


def requirements() -> list[str]:
    return [pins.TEMPORALIO, *pins.TEST_REQUIREMENTS]


def digest(python: str) -> str:
    pyproject = (REPO_ROOT / "pyproject.toml").read_bytes()
    ver = subprocess.run(
        [python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    blob = json.dumps(
        {"requirements": requirements(), "python": ver},
        sort_keys=True,
    ).encode()
    return hashlib.sha256(blob + b"\0" + pyproject).hexdigest()


def venv_python(venv: Path = VENV_DIR) -> Path:
    return venv / "bin" / "python"


def ensure(
    log: Callable[[str], None], *, python: str | None = None, rebuild: bool = False,
    venv: Path = VENV_DIR,
) -> Path:
    """Return the venv's python, creating or rebuilding the venv when needed."""
    python = python or sys.executable
    want = digest(python)
    stamp = venv / DIGEST_FILE
    if not rebuild and venv_python(venv).exists() and stamp.exists() and stamp.read_text().strip() == want:
        return venv_python(venv)
    if venv.exists():
        log(f"rebuilding venv {venv} (pins, interpreter or pyproject changed)")
        shutil.rmtree(venv)
    else:
        log(f"creating venv {venv}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([python, "-m", "venv", str(venv)], "creating the venv")
    py = str(venv_python(venv))
    reqs = requirements()
    log("installing: " + " ".join(reqs) + f" -e {REPO_ROOT}[metrics]")
    _run(
        [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
         *reqs, "-e", f"{REPO_ROOT}[metrics]"],
        "installing the pinned test dependencies and this repo (editable)",
    )
    stamp.write_text(want + "\n")
    return venv_python(venv)


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        out = (res.stdout + res.stderr).strip()
        tail = "\n".join(out.splitlines()[-25:])
        hint = ""
        if "Readme file does not exist" in out:
            hint = ("\nhint: this repo's pyproject.toml names a readme file that does not exist, "
                    "so `pip install -e` of the repo fails; add the file.")
        raise VenvError(f"failed {what} (exit {res.returncode}):\n{tail}{hint}")
