"""The processes of a chaos run and the faults it injects on schedule.

`ChaosRun.run()` starts the workers and the client (``bench/chaos_app.py``), hands the client
its load, then, while results stream back, follows the plan: SIGKILL a worker (and start a
replacement at once), SIGSTOP one worker for a while and SIGCONT it, restart Postgres. Before
each SIGKILL or SIGSTOP it reads which runs that worker owns (``executions.owner``) and then
polls those runs' owners every 0.1 s to see when another worker claims each.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos_db import Db, owner_pid
from bench.pg_cluster import Cluster

APP = Path(__file__).resolve().parent / "chaos_app.py"
TASK_QUEUE = "chaos"
CLAIM_TRACKING = 120.0  # seconds a takeover is watched for


def log(msg: str) -> None:
    print(f"chaos: {msg}", file=sys.stderr, flush=True)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    started: float
    frozen: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Takeover:
    """Runs a worker owned when it was killed or frozen, and when others claimed them."""

    pid: int
    t: float  # wall-clock time of the signal
    runs: dict[str, str]  # run id -> workflow id
    claims: dict[str, float] = field(default_factory=dict)  # run id -> seconds after t
    pending: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "t": self.t, "runs": self.runs, "claims": self.claims}


def plan(kill_every: float, freeze: float | None, observe: float, restart: bool,
         kills: int | None) -> list[tuple[float, str]]:
    """The scheduled faults, seconds after the load starts: a kill, the freeze (ended by killing
    the frozen worker) or a second kill, the restart. Periodic kills follow while ``kills``
    allows; the frozen worker's kill is always made and counts as one."""
    s = kill_every
    out = [(s, "kill")]
    t = s
    if freeze is not None:
        out += [(t + s / 2, "freeze"), (t + s / 2 + freeze, "resume"),
                (t + s / 2 + freeze + observe, "kill_frozen")]
        t += s / 2 + freeze + observe
    else:
        t += s
        out.append((t, "kill"))
    if restart:
        out.append((t + s / 2, "restart"))
    if kills is not None:
        drop = sum(1 for _, what in out if what.startswith("kill")) - max(kills, 1 if freeze is None else 2)
        while drop > 0 and [w for _, w in out].count("kill"):
            out.remove(next(a for a in reversed(out) if a[1] == "kill"))
            drop -= 1
    return out


class ChaosRun:
    def __init__(self, args: Any, db: Db, cluster: Cluster | None, env: dict[str, str],
                 python: str, run_dir: Path, namespace: str) -> None:
        self.args = args
        self.db = db
        self.cluster = cluster
        self.env = {**env, "PYTHONUNBUFFERED": "1"}
        self.python = python
        self.dir = run_dir
        self.namespace = namespace
        self.workers: list[Worker] = []
        self.client: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self.takeovers: list[Takeover] = []
        self.kills: list[Takeover] = []
        self.freeze: dict[str, Any] | None = None
        self.restart: dict[str, Any] = {}
        self.timeline: list[dict[str, Any]] = []
        self.started: list[str] = []
        self.results: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self.signal_retried: set[str] = set()
        self.client_notes: list[str] = []
        self.t0 = 0.0

    # -- processes -------------------------------------------------------------------------------

    def spawn_worker(self) -> Worker:
        path = self.dir / f"worker-{len(self.workers)}.log"
        with open(path, "wb") as out:
            proc = subprocess.Popen(
                [self.python, str(APP), "worker", self.db.target, self.namespace, TASK_QUEUE,
                 self.db.record_spec],
                env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        w = Worker(proc, path, time.monotonic())
        self.workers.append(w)
        return w

    def wait_ready(self, w: Worker, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while f"READY {w.pid}" not in w.log.read_text(errors="replace"):
            if not w.alive or time.monotonic() > deadline:
                raise RuntimeError(f"worker {w.pid} did not start: {w.log.read_text(errors='replace')[-1500:]}")
            time.sleep(0.05)

    def start_client(self) -> None:
        with open(self.dir / "client.log", "wb") as err:
            self.client = subprocess.Popen(
                [self.python, str(APP), "client", self.db.target, self.namespace, TASK_QUEUE],
                env=self.env, cwd=self.dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            )
        line = self.read(90)
        if line is None or not line.get("ok"):
            raise RuntimeError(f"client did not start: {line} {(self.dir / 'client.log').read_text()[-1500:]}")

    def send(self, **req: Any) -> None:
        assert self.client is not None and self.client.stdin is not None
        self.client.stdin.write(json.dumps(req).encode() + b"\n")
        self.client.stdin.flush()

    def read(self, timeout: float) -> dict[str, Any] | None:
        """One line from the client, or None if none came within ``timeout``."""
        assert self.client is not None and self.client.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if select.select([self.client.stdout], [], [], left)[0]:
                chunk = os.read(self.client.stdout.fileno(), 1 << 16)
                if not chunk:
                    raise RuntimeError(f"client exited: {(self.dir / 'client.log').read_text()[-1500:]}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        out: dict[str, Any] = json.loads(line)
        return out

    def close(self) -> None:
        for w in self.workers:
            if w.alive:
                try:
                    os.kill(w.pid, signal.SIGCONT)
                    w.proc.terminate()
                    w.proc.wait(10)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
        if self.client is not None and self.client.poll() is None:
            self.client.kill()
            self.client.wait()

    # -- faults ----------------------------------------------------------------------------------

    def note(self, what: str, **detail: Any) -> None:
        t = time.time()
        self.timeline.append({"t": round(t - self.t0, 3), "what": what, **detail})
        shown = ", ".join(f"{k}={v}" for k, v in detail.items())
        log(f"+{t - self.t0:6.1f}s {what} {shown}")

    def victim(self) -> Worker | None:
        live = [w for w in self.workers if w.alive and not w.frozen]
        return min(live, key=lambda w: w.started) if live else None

    def _watch(self, pid: int, runs: dict[str, str], t: float) -> Takeover:
        tk = Takeover(pid, t, runs, pending=set(runs))
        self.takeovers.append(tk)
        return tk

    def kill(self, w: Worker | None) -> None:
        if w is None or not w.alive:
            return
        runs = self.db.owned_by(w.pid)
        os.kill(w.pid, signal.SIGKILL)
        t = time.time()
        w.proc.wait()
        self.kills.append(self._watch(w.pid, runs, t))
        new = self.spawn_worker()
        self.note("SIGKILL", pid=w.pid, owned=len(runs), replacement=new.pid)

    def do_freeze(self) -> None:
        w = self.victim()
        if w is None:
            return
        runs = self.db.owned_by(w.pid)
        os.kill(w.pid, signal.SIGSTOP)
        t = time.time()
        w.frozen = True
        self.freeze = {"worker": w, "takeover": self._watch(w.pid, runs, t)}
        self.note("SIGSTOP", pid=w.pid, owned=len(runs))

    def do_resume(self) -> None:
        if self.freeze is None:
            return
        w = self.freeze["worker"]
        os.kill(w.pid, signal.SIGCONT)
        self.freeze["t_resume"] = time.time()
        self.note("SIGCONT", pid=w.pid)

    def kill_frozen(self) -> None:
        if self.freeze is None:
            return
        w = self.freeze["worker"]
        w.frozen = False
        self.freeze["t_end"] = time.time()
        self.kill(w)

    def do_restart(self) -> None:
        if self.cluster is None:
            return
        try:
            took = self.cluster.restart()
            self.restart = {"t": time.time() - took - self.t0, "seconds": took}
            self.note("pg_ctl restart -m fast", seconds=round(took, 2))
        except Exception as err:
            self.restart = {"error": str(err)}
            self.note("pg_ctl restart FAILED", error=str(err)[:300])

    def poll_claims(self) -> None:
        now = time.time()
        for tk in self.takeovers:
            if not tk.pending or now - tk.t > CLAIM_TRACKING:
                continue
            for run_id, (owner, status) in self.db.owners(sorted(tk.pending)).items():
                if status != 1:
                    tk.pending.discard(run_id)
                elif owner is not None and owner_pid(owner) != tk.pid:
                    tk.claims[run_id] = time.time() - tk.t
                    tk.pending.discard(run_id)

    # -- the run ---------------------------------------------------------------------------------

    def handle(self, line: dict[str, Any]) -> bool:
        """Take in one client line; True once the load is over."""
        ev = line.get("ev")
        if ev == "started":
            self.started.append(line["id"])
        elif ev == "result":
            self.results[line["id"]] = line["value"]
        elif ev == "failed":
            self.failed[line["id"]] = line["error"]
        elif ev == "signal_retried":
            self.signal_retried.add(line["id"])
        elif ev == "done":
            self.client_notes += [f"client: {e}" for e in line.get("errors", [])]
            return True
        elif "ok" in line and not line["ok"]:
            raise RuntimeError(f"client failed: {line.get('error')}")
        else:
            self.client_notes.append(f"client: {line}")
        return False

    def run(self) -> None:
        a = self.args
        first = [self.spawn_worker() for _ in range(a.workers)]
        for w in first:
            self.wait_ready(w)
        self.db.find_namespace(self.namespace)
        self.start_client()
        actions = plan(a.kill_every, None if a.no_freeze else a.freeze_seconds, a.observe,
                       not a.no_restart and self.cluster is not None, a.kills)
        span = max(t for t, _ in actions) + a.kill_every
        rate = a.rate or max(1.0, a.workflows / span)
        self.t0 = time.time()
        mono0 = time.monotonic()
        signal_within = a.signal_within or next((t for t, w in actions if w == "kill_frozen"), 20.0)
        self.send(op="run", n=a.workflows, rate=rate, seconds=a.activity_seconds, timer=a.timer,
                  signal_min=0.5, signal_max=max(0.5, signal_within), deadline=a.deadline, tag=self.namespace)
        self.note("load", workflows=a.workflows, rate=round(rate, 1), workers=a.workers,
                  signals_within=round(signal_within, 1))
        next_kill = max(t for t, _ in actions) + a.kill_every
        last_poll = 0.0
        done = False
        give_up = time.monotonic() + a.workflows / rate + a.deadline + 120
        while not done:
            if time.monotonic() > give_up:
                raise RuntimeError("the client did not report the end of the load within its deadline + 120 s")
            line = self.read(0.05)
            while line is not None and not done:
                done = self.handle(line)
                line = self.read(0) if not done else None
            now = time.monotonic() - mono0
            finished = len(self.results) + len(self.failed) >= a.workflows
            while actions and actions[0][0] <= now:
                _, what = actions.pop(0)
                if finished and what in ("kill", "freeze", "restart"):
                    self.note(f"skipped {what}: every workflow had finished")
                    continue
                {"kill": lambda: self.kill(self.victim()), "freeze": self.do_freeze,
                 "resume": self.do_resume, "kill_frozen": self.kill_frozen,
                 "restart": self.do_restart}[what]()
            more = a.kills is None or len(self.kills) < a.kills
            if not actions and now >= next_kill and more and not finished:
                self.kill(self.victim())
                next_kill += a.kill_every
            if time.monotonic() - last_poll >= 0.1:
                self.poll_claims()
                last_poll = time.monotonic()
        for what in [w for _, w in actions if w in ("resume", "kill_frozen")]:
            {"resume": self.do_resume, "kill_frozen": self.kill_frozen}[what]()
        self.note("load over", completed=len(self.results), failed=len(self.failed))

    def fetch_histories(self) -> dict[str, Any]:
        """Stop the workers, then have the client fetch every history and replay the closed runs."""
        for w in self.workers:
            if w.alive:
                os.kill(w.pid, signal.SIGCONT)
                w.proc.terminate()
        for w in self.workers:
            try:
                w.proc.wait(15)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        out = self.dir / "histories.jsonl"
        closed = sorted({*self.results, *self.failed})
        self.send(op="histories", ids=self.started, replay=closed, out=str(out), timeout=600)
        line = self.read(900)
        while line is not None and "ok" not in line:
            line = self.read(900)
        if line is None or not line.get("ok"):
            raise RuntimeError(f"fetching histories failed: {line}")
        line["histories"] = {}
        with open(out) as f:
            for row in f:
                item = json.loads(row)
                line["histories"][item["id"]] = item["events"]
        return line

    def freeze_record(self) -> dict[str, Any] | None:
        if self.freeze is None:
            return None
        tk: Takeover = self.freeze["takeover"]
        return {**tk.as_dict(), "identity": self._identity(tk.pid),
                "t_resume": self.freeze.get("t_resume"), "t_end": self.freeze.get("t_end")}

    def _identity(self, pid: int) -> str:
        for w in self.workers:
            if w.pid == pid:
                for line in w.log.read_text(errors="replace").splitlines():
                    if line.startswith(f"READY {pid} "):
                        return line.split(" ", 2)[2].strip()
        return f"chaos-worker-{pid}@?"
