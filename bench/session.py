"""The processes of one workload run: worker subprocesses and a client subprocess."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.backends import BENCH_DIR, Env, stop_process

APP = BENCH_DIR / "bench_app.py"
TASK_QUEUE = "bench"


class WorkloadError(RuntimeError):
    """A workload failed or hung; the message says where."""


class Session:
    def __init__(self, env: Env, workdir: Path, py_spy: str | None = None) -> None:
        self.env = env
        self.py_spy = py_spy
        self._profilers: list[subprocess.Popen[bytes]] = []
        self.workdir = workdir
        self.marker = workdir / "marker.log"
        self.marker.touch()
        self.workers: list[subprocess.Popen[bytes]] = []
        self._worker_logs: list[Path] = []
        self.client: subprocess.Popen[bytes] | None = None
        self._client_log = workdir / "client.log"
        self._buf = b""
        self.notes: list[str] = []

    # -- processes -------------------------------------------------------------------------

    def spawn_worker(self) -> subprocess.Popen[bytes]:
        log = self.workdir / f"worker-{len(self.workers)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [self.env.python, str(APP), "worker", self.env.target, TASK_QUEUE, str(self.marker)],
                env=self.env.env, cwd=self.workdir,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        self.workers.append(proc)
        self._worker_logs.append(log)
        return proc

    def wait_worker_ready(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        log = self._worker_logs[self.workers.index(proc)]
        deadline = time.monotonic() + timeout
        while f"READY {proc.pid}" not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                raise WorkloadError(f"worker exited with {proc.returncode}: {self.tail(log)}")
            if time.monotonic() > deadline:
                raise WorkloadError(f"worker not ready in {timeout:.0f} s: {self.tail(log)}")
            time.sleep(0.02)

    def start(self, workers: int = 1) -> None:
        """Start the workers and the client together, and wait until all are ready."""
        procs = [self.spawn_worker() for _ in range(workers)]
        with open(self._client_log, "wb") as err:
            self.client = subprocess.Popen(
                [self.env.python, str(APP), "client", self.env.target, TASK_QUEUE],
                env=self.env.env, cwd=self.workdir,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            )
        for proc in procs:
            self.wait_worker_ready(proc)
        if self.py_spy:
            self.profile(procs[0], "worker-0")
        self._read(60, "the client to connect")

    def profile(self, proc: subprocess.Popen[bytes], name: str) -> None:
        """Sample ``proc`` with py-spy until it exits (collapsed stacks in the run directory).

        Only the thread holding the GIL is sampled (``--gil``): the profile shows where the
        worker's Python CPU goes, not where its threads wait.
        """
        assert self.py_spy is not None
        out = self.workdir / f"profile-{name}.txt"
        with open(self.workdir / f"py-spy-{name}.log", "wb") as log:
            self._profilers.append(subprocess.Popen(
                [self.py_spy, "record", "--pid", str(proc.pid), "--rate", "200", "--nonblocking", "--gil",
                 "--format", "raw", "--output", str(out)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            ))

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> float:
        os.kill(proc.pid, signal.SIGKILL)
        t = time.monotonic()
        proc.wait()
        return t

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.workers if p.poll() is None]

    def app_pids(self) -> list[int]:
        procs = [*self.workers, *([self.client] if self.client else [])]
        return [p.pid for p in procs if p.poll() is None]

    def close(self, grace: float = 15.0) -> None:
        """End the client, then the workers: SIGTERM and ``grace`` seconds to shut down
        gracefully (a worker that needs longer is noted); with ``grace=0``, SIGKILL at once."""
        if grace <= 0:
            for proc in [*self.workers, *([self.client] if self.client else [])]:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for prof in self._profilers:
                stop_process_after(prof, 10)
            return
        if self.client is not None and self.client.poll() is None:
            assert self.client.stdin is not None
            try:
                self.client.stdin.close()
            except OSError:
                pass
            if not stop_process_after(self.client, 5):
                self.notes.append("client did not exit within 5 s of end of input")
        for i, proc in enumerate(self.workers):
            if proc.poll() is None and not stop_process(proc, grace):
                self.notes.append(f"worker {i} did not shut down within {grace:.0f} s of SIGTERM (killed)")
        for prof in self._profilers:
            stop_process_after(prof, 10)

    # -- the client's request/answer lines --------------------------------------------------

    def _read(self, timeout: float, what: str) -> dict[str, Any]:
        assert self.client is not None and self.client.stdout is not None
        fd = self.client.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkloadError(f"no answer from the client within {timeout:.0f} s waiting for {what}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise WorkloadError(
                        f"client exited ({self.client.poll()}) waiting for {what}: "
                        f"{self.tail(self._client_log)}"
                    )
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise WorkloadError(f"{what} failed in the client: {answer.get('error')}")
        return answer

    def call(self, timeout: float, **request: Any) -> dict[str, Any]:
        assert self.client is not None and self.client.stdin is not None
        self.client.stdin.write(json.dumps(request).encode() + b"\n")
        self.client.stdin.flush()
        return self._read(timeout, f"op {request['op']}")

    # -- W6's marker file --------------------------------------------------------------------

    def marks(self) -> list[tuple[str, str, int, str, int, float]]:
        """(workflow id, activity id, attempt, phase, pid, wall-clock time) per marker line."""
        text = self.marker.read_text()
        out = []
        for line in text[: text.rfind("\n") + 1].splitlines():
            wf, act, attempt, phase, pid, at = line.rsplit(":", 5)
            out.append((wf, act, int(attempt), phase, int(pid), float(at)))
        return out

    @staticmethod
    def tail(path: Path, chars: int = 1500) -> str:
        try:
            return path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""


def stop_process_after(proc: subprocess.Popen[bytes], grace: float) -> bool:
    """Wait ``grace`` seconds for a process to exit on its own, then stop it."""
    try:
        proc.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        stop_process(proc, 5)
        return False
