"""A throwaway PostgreSQL cluster for tests, when the server binaries are installed.

``ThrowawayPostgres.create()`` runs ``initdb`` into a fresh temporary directory and starts the
server on a free port bound to 127.0.0.1 only, with its unix socket inside that directory, trust
authentication and settings meant for tests (``fsync=off``: a crash of the machine loses the
cluster, which is thrown away anyway). ``stop``/``start``/``restart`` let tests take the server down
under a running workload; ``close`` stops it and removes the directory.

The binaries are looked up under ``/usr/lib/postgresql/*/bin`` (newest version first), then on
``PATH``. ``initdb`` refuses to run as root, and tests (and CI) often run as root: then every server
binary runs as the ``postgres`` OS user (through ``runuser`` or ``setpriv``) and the directory is
handed to that user. Whatever makes this impossible raises `Unavailable` with the reason, so
callers can skip cleanly.
"""

from __future__ import annotations

import atexit
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

SERVER_USER = "postgres"

_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


class Unavailable(RuntimeError):
    """A throwaway cluster cannot be started here; the message says why."""


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, newest version first."""

    def version(path: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([0-9.]+)/bin$", path)
        return tuple(int(p) for p in m.group(1).split(".") if p) if m else (0,)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for d in candidates:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """One temporary cluster; use `create`, then `url`, `stop`, `start`, `restart`, `close`."""

    def __init__(self, bindir: Path, root: Path, prefix: list[str]) -> None:
        self.bindir = bindir
        self.root = root
        self.datadir = root / "data"
        self.sockdir = root / "sock"
        self.logfile = root / "server.log"
        self._prefix = prefix  # how to run a server binary as the right OS user
        self.port = 0
        self._closed = False

    # -- setup -------------------------------------------------------------------------------

    @classmethod
    def create(cls, start: bool = True) -> ThrowawayPostgres:
        """Initialise (and by default start) a new cluster; raises `Unavailable` if impossible."""
        bindir = find_bindir()
        if bindir is None:
            raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        prefix: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            try:
                owner = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise Unavailable(
                    f"running as root and there is no {SERVER_USER!r} OS user to run the server as"
                ) from None
            if shutil.which("runuser"):
                prefix = ["runuser", "-u", SERVER_USER, "--"]
            elif shutil.which("setpriv"):
                prefix = [
                    "setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups",
                ]
            else:
                raise Unavailable("running as root and neither runuser nor setpriv is available")
        # The server user must reach the directory: under /tmp if $TMPDIR is private to root.
        root: Path | None = None
        for parent in (None, "/tmp"):
            candidate = Path(tempfile.mkdtemp(prefix="dbosify-pg-", dir=parent))
            if owner is not None:
                os.chown(candidate, owner.pw_uid, owner.pw_gid)
            if not prefix or subprocess.run(
                [*prefix, "test", "-w", str(candidate)], capture_output=True, timeout=30
            ).returncode == 0:
                root = candidate
                break
            shutil.rmtree(candidate, ignore_errors=True)
        if root is None:
            raise Unavailable(f"the {SERVER_USER!r} OS user cannot write to a temporary directory")
        pg = cls(bindir, root, prefix)
        atexit.register(pg.close)
        try:
            pg._run("mkdir", "-p", str(pg.sockdir))
            pg._run(
                str(bindir / "initdb"), "-D", str(pg.datadir), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )
            conf = "".join(f"{k} = {v}\n" for k, v in _SETTINGS.items())
            conf += f"unix_socket_directories = '{pg.sockdir}'\n"
            pg._run("sh", "-c", f"cat >> '{pg.datadir}/postgresql.conf'", input=conf)
            if start:
                pg.start()
        except Unavailable:
            pg.close()
            raise
        except Exception as err:
            pg.close()
            raise Unavailable(f"could not set up a throwaway cluster: {err}") from err
        return pg

    def _run(self, *cmd: str, input: str | None = None, timeout: float = 60) -> str:
        proc = subprocess.run(
            [*self._prefix, *cmd],
            cwd=self.root,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        if proc.returncode != 0:
            raise Unavailable(
                f"{Path(cmd[0]).name} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc.stdout

    def _pg_ctl(self, *args: str) -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
            "-w", "-t", "60", *args,
        )

    # -- use ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server (on a new free port the first time, the same port afterwards)."""
        tries = 1 if self.port else 3
        for i in range(tries):
            if not self.port or i:
                self.port = _free_port()
            try:
                self._pg_ctl("-o", f"-p {self.port}", "start")
                return
            except Unavailable:
                if i == tries - 1:
                    raise Unavailable(f"the server did not start: {self.log_tail()}") from None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session at once, ``immediate`` is like a crash."""
        self._pg_ctl("-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start the server on the same port."""
        self._pg_ctl("-m", mode, "-o", f"-p {self.port}", "restart")

    def is_running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def close(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        if self._closed:
            return
        self._closed = True
        if self.is_running():
            for mode in ("fast", "immediate"):
                try:
                    self._pg_ctl("-m", mode, "stop")
                    break
                except Exception:
                    continue
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until_ready(url: str, timeout: float = 30.0) -> None:
    """Poll until ``url`` accepts a connection (psycopg), or raise TimeoutError."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.1)
