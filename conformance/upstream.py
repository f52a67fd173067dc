"""Find an upstream sdk-python checkout and export its tests into the work dir.

Accepted sources: a bare git dir (what the `fetch` tool gives), a normal git checkout,
or a plain directory holding `tests/` and `pyproject.toml`. Nothing in the source is
modified: the pinned commit is exported with `git archive` into
`conformance/.work/upstream/<sha>/`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conformance import pins
from conformance.paths import WORK_DIR

CLONE_DIR = WORK_DIR / "upstream-src"
EXPORT_ROOT = WORK_DIR / "upstream"
# Optional default locations, tried in order when neither --upstream nor
# DBOSIFY_UPSTREAM is given. None of them is required to exist.
KNOWN_SOURCES: tuple[Path, ...] = (CLONE_DIR,)

HOW_TO_GET = f"""\
No upstream checkout of {pins.UPSTREAM_REPO} was found and cloning it failed.
Get one and point the runner at it, either of:
  git clone {pins.UPSTREAM_URL} /some/dir && \\
    git -C /some/dir checkout {pins.UPSTREAM_SHA}
  (or a plain directory holding that commit's tests/ and pyproject.toml, as `git archive`
   exports them)
then run:  python -m conformance --upstream /some/dir
      or:  DBOSIFY_UPSTREAM=/some/dir python -m conformance"""


class UpstreamError(RuntimeError):
    pass


@dataclass(frozen=True)
class Upstream:
    source: Path  # where the tests came from
    sha: str  # commit exported, or "dir-<hash>" for a plain directory
    root: Path  # exported tree: root/tests, root/pyproject.toml
    pinned: bool  # True when sha is the pinned commit


def _git(git_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def git_dir_of(path: Path) -> Path | None:
    """The git dir for a bare repo or a checkout at exactly `path`, else None."""
    if (path / ".git").exists():
        dot_git = path / ".git"
        if dot_git.is_file():  # worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text().strip()
            if text.startswith("gitdir:"):
                return (path / text.split(":", 1)[1].strip()).resolve()
        return dot_git
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return path
    return None


def candidate_sources(explicit: str | None) -> list[tuple[Path, str]]:
    """Sources to try, with where each came from. An explicit one is the only one."""
    if explicit:
        return [(Path(explicit).expanduser().resolve(), "--upstream")]
    env = os.environ.get("DBOSIFY_UPSTREAM")
    if env:
        return [(Path(env).expanduser().resolve(), "DBOSIFY_UPSTREAM")]
    return [(p, "default location") for p in KNOWN_SOURCES]


def usable(path: Path, ref: str) -> str | None:
    """None when `path` can provide `ref`, else the reason it cannot."""
    if not path.exists():
        return f"{path} does not exist"
    gd = git_dir_of(path)
    if gd is not None:
        if _git(gd, "cat-file", "-e", f"{ref}^{{commit}}").returncode != 0:
            return f"{path} is a git repository without commit {ref}"
        return None
    if (path / "tests").is_dir() and (path / "pyproject.toml").is_file():
        return None
    return f"{path} is neither a git repository nor a directory with tests/ and pyproject.toml"


def shallow_clone(ref: str, log: Callable[[str], None]) -> Path:
    """Fetch just `ref` from the upstream URL into CLONE_DIR (a bare repo)."""
    if CLONE_DIR.exists():
        shutil.rmtree(CLONE_DIR)
    CLONE_DIR.parent.mkdir(parents=True, exist_ok=True)
    log(f"cloning {pins.UPSTREAM_URL} at {ref} (shallow) into {CLONE_DIR} ...")
    subprocess.run(["git", "init", "-q", "--bare", str(CLONE_DIR)], check=True, capture_output=True)
    try:
        res = _git(CLONE_DIR, "fetch", "-q", "--depth", "1", pins.UPSTREAM_URL, ref, timeout=300)
    except subprocess.TimeoutExpired:
        shutil.rmtree(CLONE_DIR, ignore_errors=True)
        raise UpstreamError("git fetch timed out\n" + HOW_TO_GET) from None
    if res.returncode != 0:
        shutil.rmtree(CLONE_DIR, ignore_errors=True)
        first = (res.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise UpstreamError(f"git fetch failed: {first}\n" + HOW_TO_GET)
    return CLONE_DIR


def locate(explicit: str | None, ref: str, *, allow_clone: bool, log: Callable[[str], None]) -> Path:
    reasons = []
    for path, origin in candidate_sources(explicit):
        why = usable(path, ref)
        if why is None:
            return path
        reasons.append(f"{origin}: {why}")
    if explicit or os.environ.get("DBOSIFY_UPSTREAM"):
        # The user named a source: do not silently fall back to something else.
        raise UpstreamError(reasons[0] + "\n" + HOW_TO_GET)
    if not allow_clone:
        raise UpstreamError("; ".join(reasons) + "\n" + HOW_TO_GET)
    return shallow_clone(ref, log)


def _dir_fingerprint(path: Path) -> str:
    h = hashlib.sha256(str(path).encode())
    for sub in ("tests", "pyproject.toml"):
        for p in sorted((path / sub).rglob("*")) if (path / sub).is_dir() else [path / sub]:
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return "dir-" + h.hexdigest()[:16]


def materialise(source: Path, ref: str, log: Callable[[str], None]) -> Upstream:
    """Export tests/ and pyproject.toml of `ref` from `source` (idempotent)."""
    gd = git_dir_of(source)
    if gd is not None:
        res = _git(gd, "rev-parse", "--verify", f"{ref}^{{commit}}")
        if res.returncode != 0:
            raise UpstreamError(f"{source}: cannot resolve {ref}")
        sha = res.stdout.decode().strip()
    else:
        sha = _dir_fingerprint(source)
    dest = EXPORT_ROOT / sha
    marker = dest / ".conformance-export-complete"
    if marker.exists():
        return Upstream(source, sha, dest, sha == pins.UPSTREAM_SHA)
    EXPORT_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=EXPORT_ROOT))
    try:
        if gd is not None:
            log(f"exporting {', '.join(pins.EXPORT_PATHS)} of {sha[:12]} from {source}")
            archive = tmp / "export.tar"
            res = subprocess.run(
                ["git", f"--git-dir={gd}", "archive", "--format=tar", f"--output={archive}", sha,
                 *pins.EXPORT_PATHS],
                capture_output=True, check=False, timeout=300,
            )
            if res.returncode != 0:
                raise UpstreamError(f"git archive failed: {res.stderr.decode(errors='replace').strip()}")
            with tarfile.open(archive) as tf:
                try:
                    tf.extractall(tmp, filter="data")
                except TypeError:  # Python without extraction filters
                    tf.extractall(tmp)
            archive.unlink()
        else:
            log(f"copying tests/ and pyproject.toml from {source} (not a git repo: ref not verified)")
            shutil.copytree(source / "tests", tmp / "tests")
            shutil.copy2(source / "pyproject.toml", tmp / "pyproject.toml")
        (tmp / ".conformance-export-complete").write_text(f"{sha}\n{source}\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Upstream(source, sha, dest, sha == pins.UPSTREAM_SHA)
