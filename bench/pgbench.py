"""The Postgres commit rate on this machine, measured with ``pgbench`` in the same run.

Each transaction is one single-row INSERT and its COMMIT, so the rate is what the server's
WAL flush allows (with ``synchronous_commit`` as configured). Measured with 1 client (one
commit at a time, like one sequential chain of workflow steps) and 8 clients (group commit).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.backends import DbosifyPgBackend, with_database

SCRIPT = "INSERT INTO commit_probe (v) VALUES (1);\n"


def available() -> str | None:
    """The pgbench binary, or None."""
    return shutil.which("pgbench")


def commit_rate(backend: DbosifyPgBackend, clients: int, seconds: int) -> float:
    binary = available()
    if binary is None:
        raise RuntimeError("pgbench is not installed (Debian: postgresql-contrib or postgresql-client)")
    dbname = backend.create_database("bench_pgbench")
    try:
        url = with_database(backend.admin_url, dbname)
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE commit_probe (id bigserial PRIMARY KEY, v int)")
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "commit.sql"
            script.write_text(SCRIPT)
            res = subprocess.run(
                [binary, "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
                 "-f", str(script), url],
                capture_output=True, text=True, check=False, timeout=seconds + 60,
            )
        m = re.search(r"tps = ([0-9.]+)", res.stdout)
        if res.returncode != 0 or m is None:
            raise RuntimeError(f"pgbench failed: {(res.stderr or res.stdout).strip()[-400:]}")
        return float(m.group(1))
    finally:
        backend.drop_database(dbname)
