"""Worker liveness: beats that say "alive", and the reaper that takes over the work of the dead.

One `Liveness` per store, namespace and process serves every worker of that process there. Its
two threads never wait behind the process's other work: each has its own store lane (thread
and connection), and neither runs on an event loop, so a busy loop, a slow claim or a blocked
takeover cannot make this process's beats late.

- The beat thread refreshes every local worker's row each `LIVENESS_INTERVAL`. A worker whose
  row has vanished was presumed dead by another process (its beats stopped, e.g. the process
  was frozen): its runs and attempts were handed to others, so it is told (`on_reaped`), fences
  its drivers, and registers again.
- The reaper, every `REAP_INTERVAL`, releases the runs and reschedules the running activity
  attempts of workers whose beats are older than `LIVENESS_EXPIRY`, or that ran on this machine
  and whose process is gone. It judges no one while this process's own beats are late.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dbosify._engine import deployments, task_queues
from dbosify._engine import nexus_tasks as _nexus_tasks
from dbosify._engine.liveness import RETRY_SET
from dbosify._metrics import engine as engine_metrics
from dbosify._store import Store, Tx
from dbosify._store.store import BEAT, REAP
from dbosify._worker import dormancy

logger = logging.getLogger("dbosify")

LIVENESS_INTERVAL = 1.0
LIVENESS_EXPIRY = 5.0
REAP_INTERVAL = 0.5
# The reaper judges others only while this process's last beat is at most this old.
OWN_BEAT_MAX_AGE = 2.5 * LIVENESS_INTERVAL


def _local_token() -> str:
    """This machine's boot and PID namespace: PIDs are comparable only between equal tokens."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}:{pidns}".encode()).hexdigest()[:12]


LOCAL_TOKEN = _local_token()


def local_process_gone(worker_id: str) -> bool:
    """True if ``worker_id`` ran in this machine's PID namespace and its process has exited.

    A restarted worker need not wait out the liveness expiry of the one that was killed. A
    reused PID only makes this say "alive"; the heartbeat expiry still applies then. A stopped
    (frozen) process is not gone: its work is taken over at the expiry.
    """
    if not LOCAL_TOKEN or not worker_id.endswith(f"@{LOCAL_TOKEN}"):
        return False
    try:
        pid = int(worker_id.split(":")[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, owned by someone else
    try:  # killed but not yet waited for by its parent
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class Poller:
    """What a worker's row says of it to DescribeTaskQueue (`dbosify._engine.task_queues`)."""

    identity: str = ""
    task_types: int = 0  # `task_queues.type_bits` of the types it polls
    build_id: str = ""
    deployment: str | None = None  # a versioned worker's deployment: its version is created with its row


@dataclass(eq=False)
class Member:
    """One local worker, as liveness sees it."""

    worker_id: str
    task_queue: str
    loop: asyncio.AbstractEventLoop
    on_reaped: Callable[[], None]  # called on ``loop`` when another worker took over its work
    registered: asyncio.Future[None]  # done once its row exists: it may claim work from then on
    poller: Poller  # who it is to DescribeTaskQueue


class Liveness:
    def __init__(self, store: Store, namespace: str) -> None:
        self.store = store
        self.ns = namespace
        self._lock = threading.Lock()
        self._members: dict[str, Member] = {}
        self._unregistered: set[str] = set()
        self._wake = threading.Event()
        self._stopped = False
        self.last_beat_ok = 0.0  # monotonic time at which the last successful beat started
        self._threads = [
            threading.Thread(target=self._beat_loop, name="dbosify-beat", daemon=True),
            threading.Thread(target=self._reap_loop, name="dbosify-reap", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- members -----------------------------------------------------------------------------

    def join(
        self, worker_id: str, task_queue: str, on_reaped: Callable[[], None], poller: Poller
    ) -> Member:
        """Add a local worker; its row is written by the next beat, at once."""
        loop = asyncio.get_running_loop()
        member = Member(worker_id, task_queue, loop, on_reaped, loop.create_future(), poller)
        with self._lock:
            self._members[worker_id] = member
            self._unregistered.add(worker_id)
        self._wake.set()
        return member

    def leave(self, worker_id: str) -> bool:
        """Remove a local worker; True if none is left."""
        with self._lock:
            self._members.pop(worker_id, None)
            self._unregistered.discard(worker_id)
            return not self._members

    # -- beats ---------------------------------------------------------------------------------

    def _beat_loop(self) -> None:
        while not self._stopped and not self.store.closed:
            started = time.monotonic()
            with self._lock:
                members = list(self._members.values())
                new = set(self._unregistered)
            if members:
                try:
                    missing = self.store.transact_sync(
                        self.ns, functools.partial(self._beat, members=members, new=new), lane=BEAT
                    )
                except Exception as err:
                    logger.warning("dbosify: liveness beat failed (%s); retrying", err)
                    self._wake.wait(0.2)
                    self._wake.clear()
                    continue
                self.last_beat_ok = started
                self._after_beat(members, new, missing)
            self._wake.wait(max(0.0, started + LIVENESS_INTERVAL - time.monotonic()))
            self._wake.clear()

    def _beat(self, tx: Tx, members: list[Member], new: set[str]) -> set[str]:
        """Refresh the rows; (re)insert new ones. Returns the ids whose row had vanished."""
        tx.lease()  # a lost beat is renewed a second later
        now = time.time()
        missing: set[str] = set()
        with self._lock:
            members = [m for m in members if m.worker_id in self._members]  # none that left
        for m in members:
            tx.execute(
                "UPDATE workers SET heartbeat_at = %s WHERE worker_id = %s", (now, m.worker_id)
            )
            if tx.rowcount == 0:
                if m.worker_id not in new:
                    missing.add(m.worker_id)
                p = m.poller
                tx.execute(
                    "INSERT INTO workers (worker_id, task_queue, heartbeat_at, identity, task_types, build_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (m.worker_id, m.task_queue, now, p.identity, p.task_types, p.build_id),
                )
                deployments.register(tx, p.deployment, p.build_id, m.task_queue, now)
        return missing

    def _after_beat(self, members: list[Member], new: set[str], missing: set[str]) -> None:
        with self._lock:
            self._unregistered -= new
            members = [m for m in members if m.worker_id in self._members]
        for m in members:
            try:
                if m.worker_id in new:
                    m.loop.call_soon_threadsafe(_set_result, m.registered)
                elif m.worker_id in missing:
                    m.loop.call_soon_threadsafe(m.on_reaped)
            except RuntimeError:
                pass  # its event loop has closed; it leaves soon

    # -- reaping -------------------------------------------------------------------------------

    def _reap_loop(self) -> None:
        while not self._stopped and not self.store.closed:
            time.sleep(REAP_INTERVAL)
            if time.monotonic() - self.last_beat_ok > OWN_BEAT_MAX_AGE:
                continue  # this process's own beats are late (it was frozen, or is starting)
            with self._lock:
                if not self._members:
                    continue
                own = set(self._members)
            try:
                self.store.transact_sync(self.ns, functools.partial(reap, own=own), lane=REAP)
            except Exception as err:
                logger.warning("dbosify: checking for dead workers failed (%s); retrying", err)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    @property
    def stopped(self) -> bool:
        return self._stopped


def reap(tx: Tx, own: set[str]) -> None:
    """Take over the work of every dead worker: release its runs, reschedule its attempts."""
    wall_now = time.time()
    cutoff = wall_now - LIVENESS_EXPIRY
    dead = []
    rows = tx.all("SELECT worker_id, task_queue, heartbeat_at FROM workers ORDER BY worker_id")
    for worker_id, tq, beat in rows:
        if worker_id in own:
            continue
        if beat < cutoff:
            dead.append((worker_id, tq, "stopped heartbeating"))
        elif local_process_gone(worker_id):
            dead.append((worker_id, tq, "ran on this machine and its process is gone"))
    now = tx.store.clock.now()  # attempts' next-available time: the engine's clock
    for worker_id, tq, why in dead:
        # Its row first (unless it beat since we looked): a claim by that worker, if it still
        # runs, checks its row under lock. It stays listed as a poller for a while.
        stale = cutoff if why == "stopped heartbeating" else None
        if not task_queues.depart(tx, worker_id, wall_now, reaped=True, beat_before=stale):
            continue  # another reaper got there first, or it is alive after all
        logger.info("dbosify: worker %s %s; taking over its work", worker_id, why)
        engine_metrics.takeover()
        # Its runs with nothing due go dormant: survivors claim only the runs that have work.
        released = dormancy.release(tx, "owner = %s", (worker_id,))
        rescheduled = tx.all(
            f"UPDATE activity_tasks SET {RETRY_SET},"
            " available_at = %s WHERE owner = %s AND state = 'running' RETURNING task_queue",
            (now, worker_id),
        )
        for q in {r[0] for r in released} | {tq}:
            tx.notify(f"wf:{q}")
        for q in {r[0] for r in rescheduled}:
            tx.notify(f"act:{q}")
        _nexus_tasks.release_owner(tx, worker_id, now)


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_registry: dict[tuple[int, str], Liveness] = {}
_registry_lock = threading.Lock()


def join(
    store: Store, namespace: str, worker_id: str, task_queue: str, on_reaped: Callable[[], None],
    poller: Poller | None = None,
) -> Member:
    """Add a local worker to the process's `Liveness` for ``namespace`` of ``store``."""
    key = (id(store), namespace)
    with _registry_lock:
        lv = _registry.get(key)
        if lv is None or lv.store is not store or lv.stopped:
            lv = _registry[key] = Liveness(store, namespace)
        return lv.join(worker_id, task_queue, on_reaped, poller or Poller())


def leave(store: Store, namespace: str, worker_id: str) -> None:
    """Remove a local worker; the last one of a `Liveness` to leave ends its threads."""
    key = (id(store), namespace)
    with _registry_lock:
        lv = _registry.get(key)
        if lv is None:
            return
        if lv.leave(worker_id):
            lv.stop()
            del _registry[key]
