"""A throwaway PostgreSQL cluster that the chaos harness starts, restarts and removes itself.

``Cluster.create()`` runs ``initdb`` into a fresh directory under /tmp and starts the server on a free
loopback port (unix socket inside ``root``, trust authentication, ``fsync=off``: the cluster is
thrown away). ``restart()`` is ``pg_ctl restart -m fast``, which ends every session, as the
chaos run needs. The server binaries come from ``/usr/lib/postgresql/<version>/bin`` (newest
first) or ``PATH``. ``initdb`` and ``postgres`` refuse to run as root: as root they run as the
``postgres`` OS user through ``runuser``, and the directory is handed to that user. Whatever makes
this impossible raises `NoCluster` with the reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CONF = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


class NoCluster(RuntimeError):
    """No throwaway cluster can be made here; the message says why."""


def server_bindir() -> Path | None:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are, newest installed version first."""

    def version(path: str) -> float:
        m = re.search(r"/postgresql/(\d+(?:\.\d+)?)/bin$", path)
        return float(m.group(1)) if m else 0.0

    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    which = shutil.which("pg_ctl")
    if which:
        dirs.append(str(Path(which).parent))
    for d in dirs:
        if all(os.access(Path(d) / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(root: Path) -> list[str]:
    """As root: the prefix that runs a command as the 'postgres' OS user, who gets ``root``."""
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise NoCluster("running as root, and there is no 'postgres' OS user") from None
    if not shutil.which("runuser"):
        raise NoCluster("running as root, and runuser is not available")
    prefix = ["runuser", "-u", "postgres", "--"]
    os.chown(root, user.pw_uid, user.pw_gid)
    if subprocess.run([*prefix, "test", "-w", str(root)], capture_output=True).returncode != 0:
        raise NoCluster(f"the 'postgres' OS user cannot write to {root}")
    return prefix


class Cluster:
    def __init__(self, bindir: Path, root: Path, as_user: list[str]) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.as_user = as_user  # prefix that runs a server binary as the server's OS user
        self.port = 0

    @classmethod
    def create(cls) -> Cluster:
        """A new cluster in a fresh directory under /tmp (which the server's OS user can reach)."""
        bindir = server_bindir()
        if bindir is None:
            raise NoCluster("no PostgreSQL server binaries (initdb, pg_ctl, postgres) installed")
        root = Path(tempfile.mkdtemp(prefix="dbosify-chaos-pg-", dir="/tmp"))
        cluster = cls(bindir, root, [])
        try:
            if os.geteuid() == 0:
                cluster.as_user = _as_server_user(root)
            cluster._run(str(bindir / "initdb"), "-D", str(cluster.data), "-U", "postgres",
                         "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
            conf = "".join(f"{k} = {v}\n" for k, v in CONF.items())
            conf += f"unix_socket_directories = '{root}'\n"
            cluster._run("sh", "-c", f"cat >> '{cluster.data}/postgresql.conf'", stdin=conf)
            cluster.start()
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _run(self, *cmd: str, stdin: str | None = None, timeout: float = 120) -> None:
        res = subprocess.run([*self.as_user, *cmd], input=stdin, capture_output=True, text=True,
                             timeout=timeout, cwd=self.root, env={**os.environ, "LC_ALL": "C"})
        if res.returncode != 0:
            raise NoCluster(f"{Path(cmd[0]).name} failed: {(res.stderr or res.stdout).strip()[-1500:]}")

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-w", "-t", "60", *args)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def version(self) -> str:
        res = subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True, text=True)
        return res.stdout.strip()

    def start(self) -> None:
        for attempt in range(3):
            self.port = _free_port()
            try:
                self._pg_ctl("-o", f"-p {self.port}", "start")
                return
            except NoCluster:
                if attempt == 2:
                    raise NoCluster(f"the server did not start: {self.log_tail()}") from None

    def restart(self) -> float:
        """``pg_ctl restart -m fast`` on the same port; returns the seconds it took."""
        t0 = time.monotonic()
        self._pg_ctl("-m", "fast", "-o", f"-p {self.port}", "restart")
        return time.monotonic() - t0

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self, keep_log: Path | None = None) -> None:
        """Stop the server (fast, else immediate) and delete the cluster; ``keep_log``: copy
        the server's log there first."""
        if (self.data / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                try:
                    self._pg_ctl("-m", mode, "stop")
                    break
                except Exception:
                    continue
        if keep_log is not None and self.log.exists():
            shutil.copyfile(self.log, keep_log)
        shutil.rmtree(self.root, ignore_errors=True)
